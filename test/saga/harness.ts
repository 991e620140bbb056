/**
 * The engine on the in-memory store, driven by hand: tests read the tasks the saga sent from the outbox, answer them
 * as a worker would, and fire due timers after moving the TestClock.
 */
import { DateTime, Effect, Layer } from "effect"
import {
  type CancellationNotice,
  decodeCancellation,
  decodeTask,
  isCancellationRoutingKey,
  type ReplyMessage,
  type TaskMessage
} from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import type { AnySagaDefinition } from "../../src/saga/Definition.ts"
import { Engine, layer as engineLayer } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"

export const layer = (definitions: ReadonlyArray<AnySagaDefinition> = [BalanceCalculation]) =>
  engineLayer.pipe(
    Layer.provideMerge(SagaRegistry.layer(definitions)),
    Layer.provideMerge(MemorySagaStore.layerMemory())
  )

export const input = {
  repo: "balance/plant-7",
  baseBranch: "main",
  inputRef: "inputs/2026-11/run-42.yaml",
  requestedBy: "e.engineer"
}

/** Takes every message out of the outbox, oldest first: tasks, and cancellation notices of abandoned ones. */
export const takeOutbox = Effect.gen(function* () {
  const store = yield* SagaStore
  const tasks: Array<TaskMessage> = []
  const cancellations: Array<CancellationNotice> = []
  yield* store.publishOutbox(1000, (messages) =>
    Effect.forEach(messages, (message) => {
      const body = JSON.stringify(message.payload)
      return isCancellationRoutingKey(message.routingKey)
        ? decodeCancellation(body).pipe(Effect.map((notice) => cancellations.push(notice)))
        : decodeTask(body).pipe(Effect.map((task) => tasks.push(task)))
    }).pipe(Effect.orDie)
  )
  return { tasks, cancellations }
})

/** Takes every task message out of the outbox, oldest first (cancellation notices are dropped). */
export const takeTasks = Effect.map(takeOutbox, ({ tasks }) => tasks)

/** The single task the saga sent since the last look. */
export const takeTask = Effect.gen(function* () {
  const tasks = yield* takeTasks
  if (tasks.length !== 1) return yield* Effect.die(`expected one task, got ${tasks.map((t) => t.taskType).join(", ")}`)
  return tasks[0]!
})

export const succeeded = (task: TaskMessage, result: Record<string, unknown> = {}): ReplyMessage => ({
  sagaId: task.sagaId,
  taskId: task.taskId,
  outcome: "succeeded",
  result: result as ReplyMessage["result"] & {}
})

export const failed = (task: TaskMessage, code: string, retryable: boolean): ReplyMessage => ({
  sagaId: task.sagaId,
  taskId: task.taskId,
  outcome: "failed",
  error: { code, message: `${task.taskType} failed: ${code}`, retryable }
})

export const reply = (message: ReplyMessage) => Effect.flatMap(Engine, (engine) => engine.reply(message))

/** Claims every timer due now and fires it, as the timer scanner does. */
export const fireDueTimers = Effect.gen(function* () {
  const store = yield* SagaStore
  const engine = yield* Engine
  const due = yield* store.claimDue(yield* DateTime.now, 1000)
  yield* Effect.forEach(due, (timer) => engine.fire(timer))
  return due.length
})

/** Worker results for the reference saga's tasks. */
export const results: Record<string, Record<string, unknown>> = {
  "gitlab.prepare_branch": { branch: "calc/run-42", commitSha: "a".repeat(40) },
  "geometry.mesh": { meshRef: "meshes/run-42.msh" },
  "solver.balance": { runId: "run-42", resultsRef: "results/run-42/" },
  "gitlab.publish_results": { commitSha: "b".repeat(40) },
  "gitlab.delete_branch": {},
  "solver.discard_run": {}
}

/** Answers the pending task successfully, with the reference result for its type. */
export const completeTask = Effect.gen(function* () {
  const task = yield* takeTask
  yield* reply(succeeded(task, results[task.taskType]))
  return task
})

export const history = (id: SagaId) =>
  Effect.flatMap(SagaStore, (store) => store.history(id)).pipe(
    Effect.map((transitions) => transitions.map((t) => [t.toState, t.status, t.event] as const))
  )
