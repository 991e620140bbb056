/**
 * The whole runtime on the PostgreSQL store, on the live clock: the same loops as in production (outbox relay,
 * reply consumer, timer scanner) with quick simulated workers on the in-memory broker. What the database holds at
 * the end — history, outbox, timers — is checked as well as what the sagas did.
 */
import { assert, layer } from "@effect/vitest"
import { type Duration, Effect, Layer } from "effect"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import { deadLetterReasonHeader, Exchanges, Queues } from "../../src/domain/Messages.ts"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import * as TimerScanner from "../../src/saga/TimerScanner.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import * as Workers from "../../src/simulation/Workers.ts"
import { eventually } from "../utils/eventually.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"
import { fleet, type Started, scenarios, settled, startAll, supplyCondenserInput, verify } from "./fleet.ts"

const fleetOfSagas = fleet([
  [scenarios.happy, 10],
  [scenarios.prepareRetried, 1],
  [scenarios.solverFatal, 2],
  [scenarios.prepareFatal, 1],
  [scenarios.publishFatal, 1],
  [scenarios.duplicated, 3],
  [scenarios.late("300 millis"), 2]
])

const runtime = Engine.layer.pipe(
  Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
  Layer.provideMerge(
    Workers.layer({ latency: "20 millis", script: fleetOfSagas.script }).pipe(
      Layer.provideMerge(MemoryBroker.layerMemory)
    )
  ),
  Layer.provideMerge(TestDatabase.layerStore())
)

/** The service's loops, polling briskly so that the test does not wait on idle delays. */
const loops = Effect.all(
  [
    Effect.forkScoped(OutboxRelay.run({ batchSize: 200, idleDelay: "20 millis" })),
    Effect.forkScoped(ReplyConsumer.run()),
    Effect.forkScoped(TimerScanner.run({ batchSize: 100, idleDelay: "50 millis" }))
  ],
  { discard: true }
)

/** Supplies condenser input as sagas come to wait for it, until everything has settled. */
const runToTheEnd = (started: ReadonlyArray<Started>, within: Duration.Input) =>
  eventually("every saga settled", Effect.andThen(supplyCondenserInput, settled(started)), {
    within,
    every: "20 millis"
  })

/** One value, read as the superuser straight from the test database. */
const selectValue = (query: string) =>
  Effect.flatMap(TestDatabase.TestDatabase, (db) => db.superuser(query)).pipe(Effect.map((output) => output.trim()))

layer(runtime, { excludeTestServices: true, timeout: "90 seconds" })("Runtime on PostgreSQL", (it) => {
  it.effect("runs 20 sagas to their planned ends through the real store, leaving no outbox rows or timers", () =>
    Effect.gen(function* () {
      yield* loops
      const started = yield* startAll(fleetOfSagas)
      assert.strictEqual(started.length, 20)
      yield* runToTheEnd(started, "45 seconds")
      yield* verify(started)
      assert.strictEqual(yield* selectValue("SELECT count(*) FROM orchestrator.saga_outbox"), "0")
      assert.strictEqual(
        yield* selectValue(`
          SELECT count(*) FROM orchestrator.saga_timers t JOIN orchestrator.saga_instances s ON s.id = t.saga_id
          WHERE s.status IN ('COMPLETED', 'FAILED', 'CANCELLED')`),
        "0"
      )
      assert.strictEqual(
        yield* selectValue(`
          SELECT string_agg(status || ':' || n, ',' ORDER BY status)
          FROM (SELECT status, count(*) AS n FROM orchestrator.saga_instances GROUP BY status) s`),
        "COMPLETED:16,FAILED:4"
      )
      // Every version of every saga has exactly one history row, in the database itself.
      assert.strictEqual(
        yield* selectValue(`
          SELECT count(*) FROM orchestrator.saga_instances s
          WHERE (SELECT count(*) FROM orchestrator.saga_transitions t WHERE t.saga_id = s.id) <> s.lock_version + 1
             OR (SELECT count(DISTINCT lock_version) FROM orchestrator.saga_transitions t WHERE t.saga_id = s.id)
                <> s.lock_version + 1`),
        "0"
      )
    })
  )

  it.effect("dead-letters a reply whose saga id is not a saga's, well-formed or not, and keeps consuming", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* Effect.forkScoped(ReplyConsumer.run())
      const reply = (sagaId: string) => JSON.stringify({ sagaId, taskId: "t-1", outcome: "succeeded", result: {} })
      yield* memory.inject(Exchanges.replies, "geometry.mesh", reply("0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192"), {
        messageId: "unknown-uuid"
      })
      yield* memory.inject(Exchanges.replies, "geometry.mesh", reply("not-a-uuid"), { messageId: "not-a-uuid" })
      yield* eventually(
        "both replies dead-lettered",
        Effect.map(memory.messages(Queues.deadLetters), (dead) => dead.length >= 2),
        { within: "10 seconds" }
      )
      const dead = yield* memory.messages(Queues.deadLetters)
      // Handled side by side (prefetch), so in either order.
      assert.deepStrictEqual(dead.map((d) => [d.messageId, d.headers[deadLetterReasonHeader]]).sort(), [
        ["not-a-uuid", "unknown saga not-a-uuid"],
        ["unknown-uuid", "unknown saga 0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192"]
      ])
      assert.deepStrictEqual(yield* memory.messages(Queues.replies), [])
      assert.deepStrictEqual(yield* memory.unacknowledged(Queues.replies), [])
    })
  )
})
