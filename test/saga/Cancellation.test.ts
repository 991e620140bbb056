/**
 * What a worker can rely on to recognise and stop work: the step key, the same for every attempt of one step, and the
 * cancellation notice the engine sends (in the same transaction as the decision) for a task it stops waiting for.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import type { CancellationReason, TaskMessage } from "../../src/domain/Messages.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { completeTask, failed, fireDueTimers, input, layer, reply, takeOutbox, takeTask } from "./harness.ts"

const start = Effect.flatMap(Engine, (engine) => engine.start("BALANCE_CALCULATION", input))

/** The notice a worker gets for `task`. */
const noticeFor = (task: TaskMessage, reason: CancellationReason) => ({
  sagaId: task.sagaId,
  sagaType: task.sagaType,
  taskId: task.taskId,
  taskType: task.taskType,
  stepKey: task.stepKey,
  attempt: task.attempt,
  reason
})

describe("Engine: step keys and cancellation notices", () => {
  it.effect("gives every attempt of a step the same step key and its compensation another", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      const first = yield* takeTask
      assert.strictEqual(first.stepKey, `${saga.id}/prepareBranch`)
      yield* reply(failed(first, "gitlab_unavailable", true))
      yield* TestClock.adjust(Duration.seconds(5))
      yield* fireDueTimers
      const second = yield* takeTask
      assert.notStrictEqual(second.taskId, first.taskId)
      assert.deepInclude(second, { stepKey: first.stepKey, attempt: 2 })
      yield* reply(failed(second, "no_such_repo", false))
      const undo = yield* takeTask
      assert.deepInclude(undo, { taskType: "gitlab.delete_branch", stepKey: `${saga.id}/deleteBranch` })
    }).pipe(Effect.provide(layer()))
  )

  it.effect("tells the worker when the saga is cancelled while its task runs", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      yield* completeTask // prepare_branch
      yield* completeTask // mesh
      yield* engine.signal(saga.id, "condenser_input", { condenserDataRef: "condenser/c-7.json" })
      const solver = yield* takeTask
      yield* engine.cancel(saga.id)
      const { tasks, cancellations } = yield* takeOutbox
      assert.deepStrictEqual(cancellations, [noticeFor(solver, "saga_cancelled")])
      assert.deepStrictEqual(
        tasks.map((task) => task.taskType),
        ["solver.discard_run"]
      )
    }).pipe(Effect.provide(layer()))
  )

  it.effect("tells the worker when its attempt timed out, and when an operator's retry replaced it", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      const first = yield* takeTask
      yield* TestClock.adjust(Duration.minutes(2))
      assert.strictEqual(yield* fireDueTimers, 1)
      const timedOut = yield* takeOutbox
      assert.deepStrictEqual(timedOut, { tasks: [], cancellations: [noticeFor(first, "timed_out")] })

      yield* TestClock.adjust(Duration.seconds(5))
      yield* fireDueTimers
      const second = yield* takeTask
      yield* engine.retry(saga.id)
      const retried = yield* takeOutbox
      assert.deepStrictEqual(retried.cancellations, [noticeFor(second, "superseded")])
      assert.deepInclude(retried.tasks[0], { taskType: "gitlab.prepare_branch", attempt: 3, stepKey: second.stepKey })
    }).pipe(Effect.provide(layer()))
  )

  it.effect("sends no notice when no task is awaited: a saga waiting for a signal is cancelled", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      yield* completeTask // prepare_branch
      yield* completeTask // mesh
      yield* engine.cancel(saga.id)
      const { tasks, cancellations } = yield* takeOutbox
      assert.deepStrictEqual(cancellations, [])
      assert.deepStrictEqual(
        tasks.map((task) => task.taskType),
        ["gitlab.delete_branch"]
      )
    }).pipe(Effect.provide(layer()))
  )
})
