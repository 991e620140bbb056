/**
 * The reply consumer between the in-memory broker and the engine: what it acknowledges, what it dead-letters (and
 * why), and what it keeps for later when the store is down. Every reply arrives through `orchestrator.replies`, as a
 * worker or an outside producer would send it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Ref } from "effect"
import { TestClock } from "effect/testing"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import { StoreUnavailable } from "../../src/domain/errors.ts"
import {
  deadLetterReasonHeader,
  defaultMessageLimits,
  Exchanges,
  Queues,
  type TaskMessage
} from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"
import { failed, input, results, succeeded, takeTask } from "../saga/harness.ts"
import { eventually } from "../utils/eventually.ts"

/** Switches the store's transactions off and on, and counts them. */
class StoreOutage extends Context.Service<
  StoreOutage,
  {
    readonly setDown: (down: boolean) => Effect.Effect<void>
    /** Calls to `transact`, failed ones included. */
    readonly transactCalls: Effect.Effect<number>
  }
>()("test/StoreOutage") {}

/** The in-memory store, except that `transact` fails with `StoreUnavailable` while the outage lasts. */
const outageStore = Layer.effectContext(
  Effect.gen(function* () {
    const inner = yield* SagaStore
    const down = yield* Ref.make(false)
    const calls = yield* Ref.make(0)
    const store = SagaStore.of({
      ...inner,
      transact: (id, step, options) =>
        Effect.gen(function* () {
          yield* Ref.update(calls, (n) => n + 1)
          if (yield* Ref.get(down)) {
            return yield* new StoreUnavailable({ operation: "transact", reason: "connection refused (simulated)" })
          }
          return yield* inner.transact(id, step, options)
        })
    })
    const outage = StoreOutage.of({ setDown: (value) => Ref.set(down, value), transactCalls: Ref.get(calls) })
    return Context.make(SagaStore, store).pipe(Context.add(StoreOutage, outage))
  })
).pipe(Layer.provide(MemorySagaStore.layerMemory()))

const runtime = <S>(store: Layer.Layer<SagaStore | S>) =>
  Engine.layer.pipe(
    Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
    Layer.provideMerge(store),
    Layer.provideMerge(MemoryBroker.layerMemory)
  )

const queue = (name: string) => Effect.flatMap(MemoryBroker.MemoryBroker, (memory) => memory.messages(name))
const unacknowledged = (name: string) =>
  Effect.flatMap(MemoryBroker.MemoryBroker, (memory) => memory.unacknowledged(name))
const deadLetters = queue(Queues.deadLetters)
const get = (id: SagaId) => Effect.flatMap(SagaStore, (store) => store.get(id))

/** Nothing waits in the reply queue or sits there unacknowledged. */
const repliesSettled = Effect.gen(function* () {
  return (yield* queue(Queues.replies)).length === 0 && (yield* unacknowledged(Queues.replies)).length === 0
})

/** A new saga and the first task it sent (prepare_branch). */
const started = Effect.gen(function* () {
  const engine = yield* Engine.Engine
  const { saga } = yield* engine.start("BALANCE_CALCULATION", input)
  const task = yield* takeTask
  return { saga, task }
})

const sendReply = (body: string, messageId: string, routingKey = "gitlab.prepare_branch") =>
  Effect.flatMap(MemoryBroker.MemoryBroker, (memory) =>
    memory.inject(Exchanges.replies, routingKey, body, { messageId, correlationId: "corr-1" })
  )

const prepared = (task: TaskMessage) => JSON.stringify(succeeded(task, results["gitlab.prepare_branch"]))

const consume = Effect.forkScoped(ReplyConsumer.run())

describe("ReplyConsumer", () => {
  it.effect("records a heartbeat without a step, ignores a stale one, and dead-letters a malformed one", () =>
    Effect.gen(function* () {
      const { saga, task } = yield* started
      yield* consume
      const heartbeat = { sagaId: saga.id, taskId: task.taskId, progress: { percent: 30, message: "branching" } }
      yield* sendReply(JSON.stringify(heartbeat), "beat-1", "gitlab.prepare_branch.heartbeat")
      yield* sendReply(JSON.stringify({ ...heartbeat, taskId: "stale" }), "beat-2", "gitlab.prepare_branch.heartbeat")
      yield* sendReply('{"sagaId": 1}', "beat-3", "gitlab.prepare_branch.heartbeat")
      yield* eventually("every heartbeat is settled", repliesSettled)
      const after = yield* get(saga.id)
      assert.strictEqual(after.lockVersion, saga.lockVersion)
      assert.deepInclude(after.progress.heartbeat, { percent: 30, message: "branching" })
      const dead = yield* deadLetters
      assert.deepStrictEqual(
        dead.map((message) => message.messageId),
        ["beat-3"]
      )
      assert.match(dead[0]?.headers[deadLetterReasonHeader] ?? "", /^malformed heartbeat: /)
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect.each([
    {
      problem: "malformed JSON",
      body: () => '{"sagaId": "',
      reason: /^malformed reply: .*JSON/
    },
    {
      problem: "valid JSON of the wrong shape",
      body: (task: TaskMessage) => JSON.stringify({ sagaId: task.sagaId, taskId: task.taskId, outcome: "done" }),
      reason: /^malformed reply: .*"succeeded" \| "failed"[\s\S]*outcome/
    },
    {
      problem: "a reply for an unknown saga",
      body: (task: TaskMessage) =>
        JSON.stringify({ ...succeeded(task), sagaId: "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192" }),
      reason: /^unknown saga 0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192$/
    },
    {
      problem: "a reply whose saga id is not a saga id at all",
      body: (task: TaskMessage) => JSON.stringify({ ...succeeded(task), sagaId: "plant-7/run-42" }),
      reason: /^unknown saga plant-7\/run-42$/
    },
    {
      problem: "a task id with a NUL character PostgreSQL cannot store",
      body: (task: TaskMessage) => JSON.stringify({ ...succeeded(task), taskId: `${task.taskId}\u0000` }),
      reason: /^malformed reply: .*U\+0000[\s\S]*taskId/
    },
    {
      problem: "a result value with a lone surrogate",
      body: (task: TaskMessage) => JSON.stringify(succeeded(task, { branch: "calc/\ud800", commitSha: "abc" })),
      reason: /^malformed reply: .*lone UTF-16 surrogate[\s\S]*branch/
    },
    {
      problem: "a 10 MB task id",
      body: (task: TaskMessage) => JSON.stringify({ ...succeeded(task), taskId: "t".repeat(10_000_000) }),
      reason: /^malformed reply: [\s\S]*taskId/
    },
    {
      problem: "a result nested 10,000 deep",
      body: (task: TaskMessage) =>
        `{"sagaId":"${task.sagaId}","taskId":"${task.taskId}","outcome":"succeeded","result":{"x":${"[".repeat(10_000)}${"]".repeat(10_000)}}}`,
      reason: /^malformed reply: .*nests deeper than 64 levels/
    },
    {
      problem: "a body over 16 MiB",
      body: (task: TaskMessage) => JSON.stringify(succeeded(task, { junk: "x".repeat(17 * 1024 * 1024) })),
      reason: /^message of \d+ bytes, over the limit of 16777216$/
    }
  ])("dead-letters $problem with the reason, changes nothing and keeps consuming", ({ body, reason }) =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga, task } = yield* started
      yield* consume
      const poison = body(task)
      yield* sendReply(poison, "poison-1")
      yield* eventually(
        "the reply is dead-lettered",
        Effect.map(deadLetters, (dead) => dead.length === 1)
      )
      const [dead] = yield* deadLetters
      assert.strictEqual(dead?.messageId, "poison-1")
      assert.strictEqual(dead?.body, poison)
      assert.strictEqual(dead?.exchange, Exchanges.deadLetter)
      assert.strictEqual(dead?.routingKey, "gitlab.prepare_branch")
      assert.strictEqual(dead?.correlationId, "corr-1")
      assert.match(dead?.headers[deadLetterReasonHeader] ?? "", reason)
      assert.isTrue(yield* repliesSettled)
      assert.deepStrictEqual(yield* get(saga.id), saga)
      assert.strictEqual((yield* store.history(saga.id)).length, 1)
      assert.deepStrictEqual(yield* store.ignoredEvents(saga.id), [])
      assert.strictEqual((yield* store.find({})).items.length, 1)

      yield* sendReply(prepared(task), "good-1")
      yield* eventually(
        "the valid reply after it is applied",
        Effect.map(get(saga.id), (s) => s.currentState === "MESHING_GEOMETRY")
      )
      yield* eventually("the valid reply is acknowledged", repliesSettled)
      assert.strictEqual((yield* deadLetters).length, 1)
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect("applies a fatal failure with a 5 MB message, shortened and marked, instead of dead-lettering it", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga, task } = yield* started
      yield* consume
      const failure = {
        sagaId: task.sagaId,
        taskId: task.taskId,
        outcome: "failed",
        error: { code: "no_such_repo", message: "e".repeat(5_000_000), retryable: false }
      }
      yield* sendReply(JSON.stringify(failure), "fatal-1")
      yield* eventually(
        "the saga compensates",
        Effect.map(get(saga.id), (s) => s.status === "COMPENSATING")
      )
      assert.deepStrictEqual(yield* deadLetters, [])
      const [, failed] = yield* store.history(saga.id)
      const message = String((failed?.detail as { message?: unknown } | null)?.message)
      assert.strictEqual(message, `${"e".repeat(2_000)}… [truncated from 5000000 characters]`)
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect("applies the configured limits: a shorter error message kept, a smaller body refused", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga, task } = yield* started
      yield* Effect.forkScoped(
        ReplyConsumer.run({ limits: { ...defaultMessageLimits, bodyBytes: 2_048, errorMessageLength: 10 } })
      )
      yield* sendReply(JSON.stringify(succeeded(task, { branch: "b".repeat(3_000), commitSha: "c" })), "big-1")
      yield* eventually(
        "the reply over 2 kB is dead-lettered",
        Effect.map(deadLetters, (dead) => dead.length === 1)
      )
      const failure = {
        ...failed(task, "no_such_repo", false),
        error: { code: "x", message: "m".repeat(50), retryable: false }
      }
      yield* sendReply(JSON.stringify(failure), "fatal-1")
      yield* eventually(
        "the failure is applied",
        Effect.map(get(saga.id), (s) => s.status === "COMPENSATING")
      )
      const [, failedStep] = yield* store.history(saga.id)
      assert.strictEqual(
        (failedStep?.detail as { message?: unknown } | null)?.message,
        `${"m".repeat(10)}… [truncated from 50 characters]`
      )
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect("applies a valid reply and acknowledges it", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga, task } = yield* started
      yield* consume
      yield* sendReply(prepared(task), "reply-1")
      yield* eventually(
        "the reply is applied",
        Effect.map(get(saga.id), (s) => s.lockVersion === 1)
      )
      yield* eventually("the reply is acknowledged", repliesSettled)
      const moved = yield* get(saga.id)
      assert.deepInclude(moved, { currentState: "MESHING_GEOMETRY", status: "RUNNING" })
      assert.deepStrictEqual(
        (yield* store.history(saga.id)).map((t) => [t.lockVersion, t.toState, t.event]),
        [
          [0, "PREPARING_BRANCH", "SagaStarted"],
          [1, "MESHING_GEOMETRY", "StepSucceeded"]
        ]
      )
      assert.strictEqual((yield* takeTask).taskType, "geometry.mesh")
      assert.deepStrictEqual(yield* deadLetters, [])
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect("dead-letters a reply for a parked saga and leaves the saga as it is", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga, task } = yield* started
      // As written by a build that knows version 99 of the definition: this build must not drive it.
      const parked = yield* store.transact(saga.id, (s) =>
        Effect.succeed(
          StepOutcome.Advance({
            state: s.currentState,
            status: s.status,
            context: s.context,
            progress: { ...s.progress, version: 99 },
            event: "WrittenByVersion99"
          })
        )
      )
      yield* consume
      yield* sendReply(prepared(task), "parked-1")
      yield* eventually(
        "the reply is dead-lettered",
        Effect.map(deadLetters, (dead) => dead.length === 1)
      )
      const [dead] = yield* deadLetters
      assert.strictEqual(dead?.messageId, "parked-1")
      const why = dead?.headers[deadLetterReasonHeader] ?? ""
      assert.include(why, saga.id)
      assert.include(why, "version 99")
      assert.include(why, "parked")
      assert.isTrue(yield* repliesSettled)
      assert.deepStrictEqual(yield* get(saga.id), parked)
      assert.strictEqual((yield* store.history(saga.id)).length, 2)
      assert.deepStrictEqual(yield* store.ignoredEvents(saga.id), [])
    }).pipe(Effect.provide(runtime(MemorySagaStore.layerMemory())))
  )

  it.effect("holds a reply through a store outage, retrying it in place, and applies it once the store is back", () =>
    Effect.gen(function* () {
      const outage = yield* StoreOutage
      const memory = yield* MemoryBroker.MemoryBroker
      const { saga, task } = yield* started
      yield* outage.setDown(true)
      yield* consume
      yield* sendReply(prepared(task), "during-outage")
      yield* eventually(
        "the consumer tries to apply the reply",
        Effect.map(outage.transactCalls, (n) => n === 1)
      )
      // Held: not acknowledged, not dead-lettered, and never handed back to the queue (its delivery count stays).
      for (const [wait, calls] of [
        ["200 millis", 2],
        ["400 millis", 3],
        ["800 millis", 4]
      ] as const) {
        yield* TestClock.adjust(wait)
        yield* eventually(
          `attempt ${calls}, after ${wait} more`,
          Effect.map(outage.transactCalls, (n) => n === calls)
        )
        const held = yield* unacknowledged(Queues.replies)
        assert.deepStrictEqual(
          held.map((d) => [d.messageId, d.redelivered]),
          [["during-outage", false]]
        )
        assert.deepStrictEqual(yield* queue(Queues.replies), [], "nothing went back to the queue")
      }
      assert.deepStrictEqual(yield* deadLetters, [])
      assert.deepStrictEqual(yield* get(saga.id), saga)

      yield* outage.setDown(false)
      yield* TestClock.adjust("1600 millis")
      yield* eventually("the reply is acknowledged once applied", repliesSettled)
      assert.deepInclude(yield* get(saga.id), { currentState: "MESHING_GEOMETRY", lockVersion: 1 })
      assert.strictEqual(yield* outage.transactCalls, 5)
      assert.deepStrictEqual(yield* deadLetters, [])
      // Nothing lost and nothing doubled: the one reply published moved the saga once.
      assert.strictEqual((yield* memory.published).filter((m) => m.exchange === Exchanges.replies).length, 1)
      assert.strictEqual((yield* takeTask).taskType, "geometry.mesh")
    }).pipe(Effect.provide(runtime(outageStore)))
  )
})
