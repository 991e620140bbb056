/**
 * The moves the engine's decisions are made of: entering a step (sending its task or waiting for its signal),
 * backing off after a failure, starting and continuing compensation, finishing. Each builds the `StepOutcome` the
 * store writes in the deciding transaction.
 */
import { Cause, DateTime, Duration, Effect, Option, Schedule } from "effect"
import { SecureRandom } from "effect/crypto"
import { Exchanges, Queues, type TaskMessage } from "../../domain/Messages.ts"
import type { OutboxMessage, SagaInstance, Timer } from "../../domain/Saga.ts"
import * as TraceContext from "../../observability/TraceContext.ts"
import { StepOutcome } from "../../store/SagaStore.ts"
import {
  type AnySagaDefinition,
  type Context,
  finalStates,
  type JsonObject,
  lift,
  type RetryPolicy,
  type StepFailed,
  type TaskStep
} from "../Definition.ts"
import type { Failure, Progress } from "../Progress.ts"
import { write } from "../Progress.ts"

const after = (timeout: Duration.Duration) =>
  Effect.map(DateTime.now, (now) => DateTime.add(now, { milliseconds: Duration.toMillis(timeout) }))

/**
 * A task message for the outbox, with a fresh task id, and the timer that waits for its reply. Its `traceparent`
 * header names the current span — the engine operation that decided the step — so the worker's spans join its trace.
 */
const sendTask = Effect.fnUntraced(function* (
  saga: { readonly id: string; readonly sagaType: string },
  taskType: string,
  attempt: number,
  payload: JsonObject,
  timeout: Duration.Duration
) {
  const taskId = yield* (yield* SecureRandom.SecureRandom).uuidV7()
  const body: TaskMessage = {
    sagaId: saga.id,
    sagaType: saga.sagaType,
    taskId,
    taskType,
    attempt,
    replyTo: Queues.replies,
    payload: payload as TaskMessage["payload"]
  }
  const headers = yield* TraceContext.currentHeaders
  const message: OutboxMessage = { exchange: Exchanges.tasks, routingKey: taskType, payload: body, headers }
  const timer: Timer = { dueAt: yield* after(timeout), awaiting: { _tag: "Reply", taskId, taskType } }
  return { taskId, messages: [message], timer }
})

/** The delay before the next attempt after `attempts` attempts, or none when the policy is exhausted. */
export const retryDelay = (policy: RetryPolicy, attempts: number) =>
  Effect.gen(function* () {
    const step = yield* Schedule.toStep(policy)
    let now = 0
    let delay = Option.none<Duration.Duration>()
    for (let i = 0; i < attempts; i++) {
      const next = yield* step(now, undefined).pipe(
        Effect.map(([, d]) => Option.some(d)),
        Effect.catchIf(Cause.isDone, () => Effect.succeed(Option.none<Duration.Duration>()))
      )
      if (Option.isNone(next)) return next
      delay = next
      now += Duration.toMillis(next.value)
    }
    return delay
  })

/** Where a decision is made: the saga and the definition driving it. */
export interface Position {
  readonly saga: SagaInstance
  readonly definition: AnySagaDefinition
}

/** Enters forward step `index` (or completes the saga after the last one). */
export const enterStep = Effect.fnUntraced(function* (
  at: Position,
  context: Context,
  progress: Progress,
  index: number,
  attempt: number,
  event: string,
  detail: unknown
) {
  const step = at.definition.steps[index]
  if (step === undefined) {
    return StepOutcome.Advance({
      state: finalStates.COMPLETED,
      status: "COMPLETED",
      context: write(context, { ...progress, step: index, attempt: 0, taskId: null }),
      event: "SagaCompleted",
      detail
    })
  }
  if (step._tag === "Signal") {
    return StepOutcome.Advance({
      state: step.state,
      status: "RUNNING",
      context: write(context, { ...progress, step: index, attempt: 0, taskId: null }),
      event,
      detail,
      timer: { dueAt: yield* after(step.timeout), awaiting: { _tag: "Signal", name: step.signal } }
    })
  }
  const payload = yield* lift(step.payload(context))
  const sent = yield* sendTask(at.saga, step.taskType, attempt, payload, step.timeout)
  return StepOutcome.Advance({
    state: step.state,
    status: "RUNNING",
    context: write(context, { ...progress, step: index, attempt, taskId: sent.taskId }),
    event,
    detail: { ...(detail as object), step: step.name, taskType: step.taskType, taskId: sent.taskId, attempt },
    messages: sent.messages,
    timer: sent.timer
  })
})

/** The first position of a new saga: its first step entered, ready to be created. */
export const begin = (definition: AnySagaDefinition, id: string, context: Context) =>
  Effect.gen(function* () {
    const progress: Progress = { version: definition.version, step: 0, attempt: 0, taskId: null, completed: [] }
    const saga = { id, sagaType: definition.type } as SagaInstance
    const first = yield* enterStep({ saga, definition }, context, progress, 0, 1, "SagaStarted", {})
    if (first._tag !== "Advance") return yield* Effect.die("a saga's first step always moves")
    return first
  })

export const taskStep = (definition: AnySagaDefinition, name: string): TaskStep<Context> | undefined => {
  const step = definition.steps.find((s) => s.name === name)
  return step?._tag === "Task" ? step : undefined
}

export const finish = (context: Context, progress: Progress, outcome: "FAILED" | "CANCELLED", detail: unknown) =>
  StepOutcome.Advance({
    state: finalStates[outcome],
    status: outcome,
    context: write(context, { ...progress, attempt: 0, taskId: null }),
    event: outcome === "FAILED" ? "SagaFailed" : "SagaCancelled",
    detail
  })

/** Sends the compensation task of the next step to undo. */
export const enterCompensation = Effect.fnUntraced(function* (
  at: Position,
  context: Context,
  progress: Progress,
  attempt: number,
  event: string,
  detail: unknown
) {
  const { stuck: _, ...compensation } = progress.compensation!
  const name = compensation.pending[0]
  const undo = name === undefined ? undefined : taskStep(at.definition, name)?.compensation
  if (undo === undefined) return finish(context, progress, compensation.outcome, detail)
  const payload = yield* lift(undo.payload(context)).pipe(
    Effect.catchTag("StepFailed", (e) => Effect.die(`compensation ${undo.name} cannot build its task: ${e.message}`))
  )
  const sent = yield* sendTask(at.saga, undo.taskType, attempt, payload, undo.timeout)
  return StepOutcome.Advance({
    state: undo.state,
    status: "COMPENSATING",
    context: write(context, { ...progress, attempt, taskId: sent.taskId, compensation }),
    event,
    detail: { ...(detail as object), compensation: undo.name, taskId: sent.taskId, attempt },
    messages: sent.messages,
    timer: sent.timer
  })
})

/** Starts undoing the saga: the running step (if it has a compensation) and then the completed ones, in reverse. */
export const startCompensation = (
  at: Position,
  context: Context,
  progress: Progress,
  outcome: "FAILED" | "CANCELLED",
  reason: Failure,
  event: string
) => {
  const steps = at.definition.steps
  const running = steps[progress.step]
  const inFlight =
    running?._tag === "Task" && running.compensation !== undefined && progress.attempt > 0 ? [running.name] : []
  const completed = progress.completed.filter((name) => taskStep(at.definition, name)?.compensation !== undefined)
  const pending = [...inFlight, ...completed.reverse()]
  const next: Progress = { ...progress, taskId: null, compensation: { outcome, pending, reason } }
  return pending.length === 0
    ? Effect.succeed(finish(context, next, outcome, reason))
    : enterCompensation(at, context, next, 1, event, reason)
}

export interface TaskFailure {
  readonly code: string
  readonly message: string
  readonly retryable: boolean
}

/** A forward step failed: back off and retry while the policy allows and the failure is retryable, else compensate. */
export const stepFailed = Effect.fnUntraced(function* (
  at: Position,
  context: Context,
  progress: Progress,
  step: TaskStep<Context>,
  failure: TaskFailure
) {
  const reason: Failure = { step: step.name, code: failure.code, message: failure.message }
  const delay = failure.retryable ? yield* retryDelay(step.retry, progress.attempt) : Option.none()
  if (Option.isSome(delay)) {
    return StepOutcome.Advance({
      state: step.state,
      status: "RUNNING",
      context: write(context, { ...progress, taskId: null }),
      event: "StepRetryScheduled",
      detail: { ...reason, attempt: progress.attempt, retryInMillis: Duration.toMillis(delay.value) },
      timer: { dueAt: yield* after(delay.value), awaiting: { _tag: "Timer", reason: `retry ${step.name}` } }
    })
  }
  return yield* startCompensation(at, context, progress, "FAILED", reason, "StepFailed")
})

/** A compensation failed: retried per its policy; when exhausted the saga stays COMPENSATING, stuck, for an operator. */
export const compensationFailed = Effect.fnUntraced(function* (
  at: Position,
  context: Context,
  progress: Progress,
  failure: TaskFailure
) {
  const compensation = progress.compensation!
  const name = compensation.pending[0] ?? ""
  const undo = taskStep(at.definition, name)?.compensation
  const reason: Failure = { step: undo?.name ?? name, code: failure.code, message: failure.message }
  const delay = undo === undefined ? Option.none() : yield* retryDelay(undo.retry, progress.attempt)
  if (Option.isSome(delay)) {
    return StepOutcome.Advance({
      state: undo?.state ?? "COMPENSATING",
      status: "COMPENSATING",
      context: write(context, { ...progress, taskId: null }),
      event: "CompensationRetryScheduled",
      detail: { ...reason, attempt: progress.attempt, retryInMillis: Duration.toMillis(delay.value) },
      timer: { dueAt: yield* after(delay.value), awaiting: { _tag: "Timer", reason: `retry ${reason.step}` } }
    })
  }
  return StepOutcome.Advance({
    state: undo?.state ?? "COMPENSATING",
    status: "COMPENSATING",
    context: write(context, { ...progress, taskId: null, compensation: { ...compensation, stuck: reason } }),
    event: "CompensationStuck",
    detail: reason
  })
})

export const ignore = (event: string, detail: unknown) =>
  Effect.succeed(StepOutcome.Stay({ ignored: { event, detail } }))

/** Moves on after the current forward step succeeded with `next` as the context. */
export const stepSucceeded = (
  at: Position,
  progress: Progress,
  stepName: string,
  next: Effect.Effect<Context, StepFailed>,
  event: string,
  detail: unknown
) =>
  Effect.gen(function* () {
    const context = yield* next
    const done: Progress = { ...progress, completed: [...progress.completed, stepName] }
    return yield* enterStep(at, context, done, progress.step + 1, 1, event, detail)
  })
