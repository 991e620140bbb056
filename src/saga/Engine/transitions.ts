/**
 * What the engine decides for each event, given the saga as it is locked in the store. Each function returns the
 * `StepOutcome` the store writes in the same transaction; a typed error instead leaves the saga untouched.
 *
 * Invariants worth keeping:
 * - a reply counts only when its task id is the one in `progress.taskId`; every (re)sent task gets a new id, so a
 *   duplicate, late or earlier-attempt reply can never move the saga twice;
 * - every waiting point has a timer (reply timeout, back-off, signal deadline) except a stuck compensation, which
 *   waits for an operator;
 * - compensation undoes the completed steps in reverse order, starting with the step that was running when the saga
 *   failed (its task may have done part of its work); compensations must therefore be idempotent.
 */
import { Cause, DateTime, Duration, Effect, Option, Schedule, Schema } from "effect"
import { SecureRandom } from "effect/crypto"
import { Exchanges, Queues, type ReplyMessage, type TaskMessage } from "../../domain/Messages.ts"
import { type DueTimer, isActive, type OutboxMessage, type SagaInstance, type Timer } from "../../domain/Saga.ts"
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
import { InvalidSignalData, NothingToRetry, SagaFinished, SignalNotExpected } from "../errors.ts"
import { type Failure, type Progress, read, write } from "../Progress.ts"

export interface Loaded {
  readonly saga: SagaInstance
  readonly definition: AnySagaDefinition
  readonly context: Context
  readonly progress: Progress
}

export type Decide<E> = (loaded: Loaded) => Effect.Effect<StepOutcome, E, SecureRandom.SecureRandom>

export const load = read

const after = (timeout: Duration.Duration) =>
  Effect.map(DateTime.now, (now) => DateTime.add(now, { milliseconds: Duration.toMillis(timeout) }))

/** A task message for the outbox, with a fresh task id, and the timer that waits for its reply. */
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
  const message: OutboxMessage = { exchange: Exchanges.tasks, routingKey: taskType, payload: body }
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

type Position = Pick<Loaded, "saga" | "definition">

/** Enters forward step `index` (or completes the saga after the last one). */
const enterStep = Effect.fnUntraced(function* (
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

const taskStep = (definition: AnySagaDefinition, name: string): TaskStep<Context> | undefined => {
  const step = definition.steps.find((s) => s.name === name)
  return step?._tag === "Task" ? step : undefined
}

const finish = (context: Context, progress: Progress, outcome: "FAILED" | "CANCELLED", detail: unknown) =>
  StepOutcome.Advance({
    state: finalStates[outcome],
    status: outcome,
    context: write(context, { ...progress, attempt: 0, taskId: null }),
    event: outcome === "FAILED" ? "SagaFailed" : "SagaCancelled",
    detail
  })

/** Sends the compensation task of the next step to undo. */
const enterCompensation = Effect.fnUntraced(function* (
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
const startCompensation = (
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

interface TaskFailure {
  readonly code: string
  readonly message: string
  readonly retryable: boolean
}

/** A forward step failed: back off and retry while the policy allows and the failure is retryable, else compensate. */
const stepFailed = Effect.fnUntraced(function* (
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
const compensationFailed = Effect.fnUntraced(function* (
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

const ignore = (event: string, detail: unknown) => Effect.succeed(StepOutcome.Stay({ ignored: { event, detail } }))

/** Moves on after the current forward step succeeded with `next` as the context. */
const stepSucceeded = (
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

export const onReply =
  (reply: ReplyMessage): Decide<never> =>
  ({ saga, definition, context, progress }) =>
    Effect.gen(function* () {
      const at = { saga, definition }
      const received = { taskId: reply.taskId, outcome: reply.outcome }
      if (!isActive(saga.status))
        return yield* ignore("ReplyIgnored", { ...received, reason: `saga is ${saga.status}` })
      if (progress.taskId !== reply.taskId) {
        return yield* ignore("ReplyIgnored", {
          ...received,
          reason: "not awaited: a duplicate, a late reply or one for an earlier attempt"
        })
      }
      const failure: TaskFailure = {
        code: reply.error?.code ?? "failed",
        message: reply.error?.message ?? "the worker reported a failure without details",
        retryable: reply.error?.retryable ?? false
      }
      if (progress.compensation !== undefined) {
        if (reply.outcome === "failed") return yield* compensationFailed(at, context, progress, failure)
        const [done, ...pending] = progress.compensation.pending
        const next: Progress = { ...progress, compensation: { ...progress.compensation, pending } }
        return yield* enterCompensation(at, context, next, 1, "CompensationSucceeded", { compensated: done })
      }
      const step = definition.steps[progress.step]
      if (step?._tag !== "Task") return yield* ignore("ReplyIgnored", { ...received, reason: "no task step running" })
      if (reply.outcome === "failed") return yield* stepFailed(at, context, progress, step, failure)
      const result = yield* Schema.decodeUnknownEffect(step.result)(reply.result ?? {}).pipe(Effect.result)
      if (result._tag === "Failure") {
        const invalid = { code: "invalid_result", message: result.failure.message, retryable: false }
        return yield* stepFailed(at, context, progress, step, invalid)
      }
      return yield* stepSucceeded(
        at,
        progress,
        step.name,
        lift(step.onSuccess(context, result.success)),
        "StepSucceeded",
        {
          completed: step.name,
          taskId: reply.taskId
        }
      ).pipe(
        Effect.catchTag("StepFailed", (e) =>
          stepFailed(at, context, progress, step, { code: e.code, message: e.message, retryable: e.retryable })
        )
      )
    })

export const onSignal =
  (name: string, data: unknown): Decide<SignalNotExpected | InvalidSignalData> =>
  ({ saga, definition, context, progress }) =>
    Effect.gen(function* () {
      const step = definition.steps[progress.step]
      if (
        saga.status !== "RUNNING" ||
        progress.compensation !== undefined ||
        step?._tag !== "Signal" ||
        step.signal !== name
      ) {
        return yield* new SignalNotExpected({
          sagaId: saga.id,
          signal: name,
          state: saga.currentState,
          status: saga.status
        })
      }
      const decoded = yield* Schema.decodeUnknownEffect(step.data)(data).pipe(
        Effect.mapError((error) => new InvalidSignalData({ sagaId: saga.id, signal: name, reason: error.message }))
      )
      const at = { saga, definition }
      return yield* stepSucceeded(at, progress, step.name, lift(step.onSignal(context, decoded)), "SignalReceived", {
        signal: name
      }).pipe(
        Effect.catchTag("StepFailed", (e) =>
          startCompensation(
            at,
            context,
            progress,
            "FAILED",
            { step: step.name, code: e.code, message: e.message },
            "StepFailed"
          )
        )
      )
    })

export const onTimer =
  (due: DueTimer): Decide<never> =>
  ({ saga, definition, context, progress }) =>
    Effect.gen(function* () {
      if (!isActive(saga.status)) return StepOutcome.Stay({})
      const at = { saga, definition }
      const step = definition.steps[progress.step]
      switch (due.awaiting._tag) {
        case "Reply": {
          if (progress.taskId !== due.awaiting.taskId) return StepOutcome.Stay({})
          const failure = { code: "timeout", message: `no reply to ${due.awaiting.taskType} in time`, retryable: true }
          if (progress.compensation !== undefined) return yield* compensationFailed(at, context, progress, failure)
          if (step?._tag !== "Task") return StepOutcome.Stay({})
          return yield* stepFailed(at, context, progress, step, failure)
        }
        case "Timer": {
          if (progress.compensation !== undefined) {
            return yield* enterCompensation(at, context, progress, progress.attempt + 1, "CompensationRetried", {})
          }
          return yield* enterStep(at, context, progress, progress.step, progress.attempt + 1, "StepRetried", {}).pipe(
            Effect.catchTag("StepFailed", (e) =>
              startCompensation(
                at,
                context,
                progress,
                "FAILED",
                { step: step?.name ?? "", code: e.code, message: e.message },
                "StepFailed"
              )
            )
          )
        }
        case "Signal": {
          const reason = {
            step: step?.name ?? "",
            code: "signal_timeout",
            message: `no ${due.awaiting.name} signal in time`
          }
          return yield* startCompensation(at, context, progress, "FAILED", reason, "SignalTimedOut")
        }
      }
    })

export const onRetry: Decide<SagaFinished | NothingToRetry> = ({ saga, definition, context, progress }) =>
  Effect.gen(function* () {
    if (!isActive(saga.status)) return yield* new SagaFinished({ sagaId: saga.id, status: saga.status })
    const at = { saga, definition }
    if (progress.compensation !== undefined) {
      return yield* enterCompensation(at, context, progress, 1, "CompensationRetried", { by: "operator" })
    }
    const step = definition.steps[progress.step]
    if (step?._tag !== "Task") return yield* new NothingToRetry({ sagaId: saga.id, state: saga.currentState })
    return yield* enterStep(at, context, progress, progress.step, progress.attempt + 1, "StepRetried", {
      by: "operator"
    }).pipe(
      Effect.catchTag("StepFailed", (e) =>
        startCompensation(
          at,
          context,
          progress,
          "FAILED",
          { step: step.name, code: e.code, message: e.message },
          "StepFailed"
        )
      )
    )
  })

export const onCancel: Decide<SagaFinished> = ({ saga, definition, context, progress }) =>
  Effect.gen(function* () {
    if (!isActive(saga.status)) return yield* new SagaFinished({ sagaId: saga.id, status: saga.status })
    const at = { saga, definition }
    if (progress.compensation !== undefined) {
      // Already undoing: it now ends CANCELLED; the current compensation is sent again (compensations are idempotent).
      const next: Progress = { ...progress, compensation: { ...progress.compensation, outcome: "CANCELLED" } }
      return yield* enterCompensation(at, context, next, 1, "CancelRequested", { by: "operator" })
    }
    const step = definition.steps[progress.step]
    const reason = { step: step?.name ?? "", code: "cancelled", message: "cancelled by an operator" }
    return yield* startCompensation(at, context, progress, "CANCELLED", reason, "CancelRequested")
  })
