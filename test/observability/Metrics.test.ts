/**
 * `/metrics` as Prometheus reads it: `prometheusText` parsed strictly, while sagas run through the whole runtime in
 * memory (relay, simulated workers, reply consumer, timer scanner) on the TestClock, each test on a metric registry
 * of its own.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Layer, Metric } from "effect"
import { TestClock } from "effect/testing"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import { StoreUnavailable } from "../../src/domain/errors.ts"
import { Exchanges, Queues } from "../../src/domain/Messages.ts"
import { prometheusText, StuckThreshold } from "../../src/observability/Metrics.ts"
import * as EngineModule from "../../src/saga/Engine.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import * as TimerScanner from "../../src/saga/TimerScanner.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import * as Workers from "../../src/simulation/Workers.ts"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { type Fleet, fleet, scenarios, settled, startAll, supplyCondenserInput } from "../saga/fleet.ts"
import { completeTask, layer as engineLayer, failed, input, reply, takeTask } from "../saga/harness.ts"
import { eventually } from "../utils/eventually.ts"
import { parsePrometheus, sampleValue } from "./prometheus.ts"
import { layerMetricRegistry } from "./support.ts"

const type = { saga_type: "BALANCE_CALCULATION" }

const scrape = Effect.map(prometheusText, parsePrometheus)

const value = (name: string, labels: Record<string, string> = {}) =>
  Effect.map(scrape, (families) => sampleValue(families, name, labels))

const runtime = (fleet: Fleet) =>
  Layer.mergeAll(
    engineLayer(),
    Workers.layer({ latency: "200 millis", seed: "metrics", script: fleet.script }).pipe(
      Layer.provideMerge(MemoryBroker.layerMemory)
    )
  ).pipe(Layer.provideMerge(layerMetricRegistry))

const loops = Effect.all(
  [Effect.forkScoped(OutboxRelay.run()), Effect.forkScoped(ReplyConsumer.run()), Effect.forkScoped(TimerScanner.run())],
  { discard: true }
)

const runUntil = (done: Effect.Effect<boolean, unknown, SagaStore | Engine>, limitMillis: number) =>
  Effect.gen(function* () {
    for (let elapsed = 0; elapsed <= limitMillis; elapsed += 100) {
      yield* supplyCondenserInput
      if (yield* done) return
      yield* TestClock.adjust("100 millis")
    }
    assert.fail(`not done within ${limitMillis} ms`)
  })

describe("Metrics", () => {
  const sagas = fleet([
    [scenarios.happy, 2],
    [scenarios.solverFatal, 1]
  ])

  it.effect("renders strict Prometheus text whose saga counters, gauges and latencies move as sagas run", () =>
    Effect.gen(function* () {
      const before = yield* scrape
      for (const name of ["started", "completed", "failed", "cancelled"]) {
        assert.strictEqual(sampleValue(before, `orchestrator_sagas_${name}_total`, type), 0, name)
      }
      assert.strictEqual(before.get("orchestrator_sagas_started_total")?.type, "counter")
      assert.strictEqual(before.get("orchestrator_sagas_active")?.type, "gauge")
      assert.isString(before.get("orchestrator_sagas_stuck")?.help)

      const engine = yield* Engine
      const started = yield* startAll(sagas)
      const { saga: cancelled } = yield* engine.start("BALANCE_CALCULATION", { ...input, repo: "balance/cancelled" })
      yield* engine.cancel(cancelled.id)
      const waiting = yield* scrape
      assert.strictEqual(sampleValue(waiting, "orchestrator_sagas_started_total", type), 4)
      assert.strictEqual(
        sampleValue(waiting, "orchestrator_sagas_active", { ...type, status: "RUNNING", state: "PREPARING_BRANCH" }),
        3
      )
      assert.strictEqual(
        sampleValue(waiting, "orchestrator_sagas_active", {
          ...type,
          status: "COMPENSATING",
          state: "DELETING_BRANCH"
        }),
        1
      )
      // Four first tasks; for the cancelled saga, the notice for its abandoned task and its compensation task.
      assert.strictEqual(sampleValue(waiting, "orchestrator_outbox_pending_messages"), 6)
      assert.strictEqual(sampleValue(waiting, "orchestrator_store_up"), 1)

      yield* loops
      const store = yield* SagaStore
      yield* runUntil(
        Effect.gen(function* () {
          return (yield* settled(started)) && (yield* store.get(cancelled.id)).status === "CANCELLED"
        }),
        5 * 60_000
      )
      const after = yield* scrape
      assert.strictEqual(sampleValue(after, "orchestrator_sagas_started_total", type), 4)
      assert.strictEqual(sampleValue(after, "orchestrator_sagas_completed_total", type), 2)
      assert.strictEqual(sampleValue(after, "orchestrator_sagas_failed_total", type), 1)
      assert.strictEqual(sampleValue(after, "orchestrator_sagas_cancelled_total", type), 1)
      assert.strictEqual(sampleValue(after, "orchestrator_sagas", { status: "COMPLETED" }), 2)
      assert.strictEqual(sampleValue(after, "orchestrator_sagas", { status: "RUNNING" }), 0)
      assert.deepStrictEqual(after.get("orchestrator_sagas_active")?.samples, [])
      assert.strictEqual(sampleValue(after, "orchestrator_outbox_pending_messages"), 0)
      assert.strictEqual(sampleValue(after, "orchestrator_outbox_lag_seconds"), 0)
      assert.strictEqual(after.get("orchestrator_step_latency_seconds")?.type, "histogram")
      // One sample per reply applied: the cancelled saga's prepare_branch reply came after the cancel and was ignored.
      const latency = (step: string) => sampleValue(after, "orchestrator_step_latency_seconds_count", { ...type, step })
      assert.strictEqual(latency("prepareBranch"), 3)
      assert.strictEqual(latency("runSolver"), 3)
      assert.strictEqual(latency("publishResults"), 2)
      assert.strictEqual(latency("deleteBranch"), 2)
      assert.strictEqual(latency("discardSolverRun"), 1)
      assert.strictEqual(sampleValue(after, "orchestrator_replies_dead_lettered_total", { reason: "malformed" }), 0)

      // Nothing that identifies a saga, or any of its data, is a label.
      const text = yield* prometheusText
      for (const { saga } of started) assert.notInclude(text, saga.id)
      assert.notInclude(text, input.inputRef)
      assert.notInclude(text, "balance/")
    }).pipe(Effect.provide(runtime(sagas)))
  )

  it.effect("counts dead-lettered replies by reason", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* Effect.forkScoped(ReplyConsumer.run())
      yield* memory.inject(Exchanges.replies, "geometry.mesh", '{"sagaId": "', { messageId: "m-1" })
      yield* memory.inject(Exchanges.replies, "geometry.mesh", "[]", { messageId: "m-2" })
      const unknown = { sagaId: "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192", taskId: "t", outcome: "succeeded" }
      yield* memory.inject(Exchanges.replies, "geometry.mesh", JSON.stringify(unknown), { messageId: "m-3" })
      yield* eventually(
        "three replies dead-lettered",
        Effect.map(memory.messages(Queues.deadLetters), (dead) => dead.length >= 3)
      )
      assert.strictEqual((yield* memory.messages(Queues.deadLetters)).length, 3)
      const families = yield* scrape
      const deadLettered = (reason: string) =>
        sampleValue(families, "orchestrator_replies_dead_lettered_total", { reason })
      assert.strictEqual(deadLettered("malformed"), 2)
      assert.strictEqual(deadLettered("unknown_saga"), 1)
      assert.strictEqual(deadLettered("corrupt_progress"), 0)
    }).pipe(Effect.provide(runtime(fleet([]))))
  )

  it.effect("counts a saga waiting without change for longer than the threshold as stuck", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      yield* engine.start("BALANCE_CALCULATION", input)
      yield* completeTask
      yield* completeTask
      const stuck = { ...type, status: "RUNNING", state: "AWAITING_CONDENSER_INPUT" }
      assert.strictEqual(yield* value("orchestrator_sagas_stuck", stuck), 0)
      yield* TestClock.adjust(Duration.minutes(16))
      assert.strictEqual(yield* value("orchestrator_sagas_stuck", stuck), 1)
      assert.strictEqual(yield* value("orchestrator_sagas_active", stuck), 1)
      const help = (yield* scrape).get("orchestrator_sagas_stuck")?.help
      assert.include(help, "15m")
      const laxer = yield* value("orchestrator_sagas_stuck", stuck).pipe(
        Effect.provideService(StuckThreshold, Duration.hours(1))
      )
      assert.strictEqual(laxer, 0)
    }).pipe(Effect.provide(engineLayer().pipe(Layer.provideMerge(layerMetricRegistry))))
  )

  it.effect("escapes label values, and renders every family with HELP and TYPE", () =>
    Effect.gen(function* () {
      const odd = 'quote " backslash \\ newline \n end'
      yield* Metric.update(Metric.withAttributes(Metric.counter("test_odd_total"), { value: odd }), 2)
      const families = yield* scrape
      assert.strictEqual(sampleValue(families, "test_odd_total", { value: odd }), 2)
      assert.strictEqual(families.get("test_odd_total")?.help, "test_odd_total")
      for (const family of families.values()) {
        assert.isString(family.help, family.name)
        assert.notStrictEqual(family.type, "untyped", family.name)
      }
    }).pipe(Effect.provide(engineLayer().pipe(Layer.provideMerge(layerMetricRegistry))))
  )

  it.effect("reports the store down, and still renders, when the store does not answer", () =>
    Effect.gen(function* () {
      const families = yield* scrape
      assert.strictEqual(sampleValue(families, "orchestrator_store_up"), 0)
      assert.isUndefined(families.get("orchestrator_sagas_active"))
      assert.strictEqual(sampleValue(families, "orchestrator_sagas_started_total", type), 0)
    }).pipe(Effect.provide(engineOn(storeDown)))
  )
})

/** The engine over a store made from the in-memory one. */
const engineOn = (store: Layer.Layer<SagaStore, never, SagaStore>) =>
  EngineModule.layer.pipe(
    Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
    Layer.provideMerge(store.pipe(Layer.provide(MemorySagaStore.layerMemory()))),
    Layer.provideMerge(layerMetricRegistry)
  )

/** The in-memory store whose reports fail as a database outage would. */
const storeDown = Layer.effect(
  SagaStore,
  Effect.map(SagaStore, (inner) =>
    SagaStore.of({
      ...inner,
      summary: Effect.fail(new StoreUnavailable({ operation: "summary", reason: "connection refused (simulated)" })),
      countActive: () =>
        Effect.fail(new StoreUnavailable({ operation: "countActive", reason: "connection refused (simulated)" }))
    })
  )
)

describe("Metrics: counted once per committed transition", () => {
  /** The in-memory store, except that every transaction runs its step once more first and rolls that back. */
  const retrying = Layer.effect(
    SagaStore,
    Effect.map(SagaStore, (inner) =>
      SagaStore.of({
        ...inner,
        transact: (id, step, options) =>
          Effect.gen(function* () {
            yield* Effect.ignore(Effect.flatMap(inner.get(id), step))
            return yield* inner.transact(id, step, options)
          })
      })
    )
  )

  it.effect("counts a saga's end and a reply's latency once when the store retried the transaction", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      yield* engine.start("BALANCE_CALCULATION", input)
      const prepare = yield* takeTask
      yield* reply(failed(prepare, "REPO_ARCHIVED", false))
      yield* completeTask
      const families = yield* scrape
      assert.strictEqual(sampleValue(families, "orchestrator_sagas_started_total", type), 1)
      assert.strictEqual(sampleValue(families, "orchestrator_sagas_failed_total", type), 1)
      assert.strictEqual(
        sampleValue(families, "orchestrator_step_latency_seconds_count", { ...type, step: "prepareBranch" }),
        1
      )
      assert.strictEqual(
        sampleValue(families, "orchestrator_step_latency_seconds_count", { ...type, step: "deleteBranch" }),
        1
      )
    }).pipe(Effect.provide(engineOn(retrying)))
  )
})

describe("the strict exposition parser these tests use", () => {
  it.each([
    ["a sample before its TYPE", "x_total 1\n"],
    ["an unescaped quote", '# TYPE x gauge\nx{a="b"c"} 1\n'],
    ["a bad escape", '# TYPE x gauge\nx{a="b\\t"} 1\n'],
    ["a duplicate series", '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n'],
    ["a family split in two", "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n"],
    ["a missing final newline", "# TYPE x gauge\nx 1"],
    ["buckets that are not cumulative", '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n'],
    ["a +Inf bucket that is not the count", '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n']
  ])("refuses %s", (_, text) => {
    assert.throws(() => parsePrometheus(text))
  })
})
