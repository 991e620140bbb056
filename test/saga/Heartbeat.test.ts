/**
 * Heartbeats: a step that expects them gives up an attempt whose worker went silent long before its overall timeout,
 * keeps one whose worker heartbeats, and shows the worker's progress — all without a step of its own.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import type { TaskMessage } from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { crunching, crunchingType } from "../utils/crunching.ts"
import { fireDueTimers, history, layer, reply, succeeded, takeOutbox, takeTask } from "./harness.ts"

const start = Effect.flatMap(Engine, (engine) => engine.start(crunchingType, { ref: "inputs/x" }))
const get = (id: SagaId) => Effect.flatMap(SagaStore, (store) => store.get(id))
const beat = (task: TaskMessage, percent: number) =>
  Effect.flatMap(Engine, (engine) =>
    engine.heartbeat({ sagaId: task.sagaId, taskId: task.taskId, progress: { percent, message: `${percent}% done` } })
  )

describe("Engine: heartbeats", () => {
  it.effect("retries a silent worker's attempt 2 s after it went quiet, long before the step's 1 h timeout", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      const first = yield* takeTask
      assert.strictEqual(first.heartbeatTimeoutMs, 2_000)
      yield* TestClock.adjust(Duration.millis(1_999))
      assert.strictEqual(yield* fireDueTimers, 0)
      yield* TestClock.adjust(Duration.millis(1))
      assert.strictEqual(yield* fireDueTimers, 1)
      const abandoned = yield* takeOutbox
      assert.deepInclude(abandoned.cancellations[0], { taskId: first.taskId, reason: "heartbeat_missed" })
      const waiting = yield* readProgress(yield* get(saga.id))
      assert.deepStrictEqual(waiting.awaiting, { _tag: "Timer", reason: "retry crunch" })
      yield* TestClock.adjust(Duration.seconds(1))
      yield* fireDueTimers
      const second = yield* takeTask
      assert.deepInclude(second, { attempt: 2, stepKey: first.stepKey })
      assert.deepStrictEqual((yield* history(saga.id)).slice(1), [
        ["CRUNCHING", "RUNNING", "StepRetryScheduled"],
        ["CRUNCHING", "RUNNING", "StepRetried"]
      ])
      const [, scheduled] = yield* SagaStore.use((store) => store.history(saga.id))
      assert.deepInclude(scheduled?.detail, { code: "heartbeat_timeout" })
    }).pipe(Effect.provide(layer([crunching({ timeout: "1 hour", retryAfter: "1 second" })])))
  )

  it.effect("keeps the attempt of a worker that heartbeats for 10 s, shows its progress, and completes it", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      const work = yield* takeTask
      for (let second = 1; second <= 10; second++) {
        yield* TestClock.adjust(Duration.seconds(1))
        assert.isTrue(yield* beat(work, second * 10))
        assert.strictEqual(yield* fireDueTimers, 0, `no timeout after ${second} s`)
      }
      const running = yield* get(saga.id)
      assert.strictEqual(running.lockVersion, 0, "heartbeats are not steps")
      const progress = yield* readProgress(running)
      assert.deepInclude(progress.heartbeat, { percent: 100, message: "100% done" })
      yield* reply(succeeded(work))
      const done = yield* get(saga.id)
      assert.strictEqual(done.status, "COMPLETED")
      assert.isUndefined((yield* readProgress(done)).heartbeat, "a heartbeat belongs to the attempt it came for")
      assert.isFalse(yield* beat(work, 100), "a heartbeat for a task no longer awaited is ignored")
      assert.strictEqual((yield* get(saga.id)).lockVersion, done.lockVersion)
    }).pipe(Effect.provide(layer([crunching({ timeout: "1 hour", retryAfter: "1 second" })])))
  )

  it.effect("still ends the attempt at the step's timeout, however long the worker heartbeats", () =>
    Effect.gen(function* () {
      yield* start
      const work = yield* takeTask
      for (let second = 1; second <= 4; second++) {
        yield* TestClock.adjust(Duration.seconds(1))
        yield* beat(work, second)
      }
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* fireDueTimers, 1)
      const { cancellations } = yield* takeOutbox
      assert.deepInclude(cancellations[0], { taskId: work.taskId, reason: "timed_out" })
    }).pipe(Effect.provide(layer([crunching({ timeout: "5 seconds", retryAfter: "1 second" })])))
  )

  it.effect("ignores heartbeats that name no awaited task", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      const work = yield* takeTask
      assert.isFalse(yield* engine.heartbeat({ sagaId: saga.id, taskId: "not-the-task" }))
      assert.isFalse(yield* engine.heartbeat({ sagaId: "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192", taskId: work.taskId }))
      assert.isFalse(yield* engine.heartbeat({ sagaId: "not a saga id", taskId: work.taskId }))
      assert.isUndefined((yield* readProgress(yield* get(saga.id))).heartbeat)
    }).pipe(Effect.provide(layer([crunching({ timeout: "1 hour", retryAfter: "1 second" })])))
  )
})
