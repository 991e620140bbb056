/**
 * The moves the engine's decisions are made of: entering a step (sending its task or waiting for its signal),
 * backing off after a failure, starting and continuing compensation, finishing. Each builds the `StepOutcome` the
 * store writes in the deciding transaction, from the saga as it was loaded (`Loaded`) and named options.
 */
import { Cause, DateTime, Duration, Effect, Option, Schedule, Schema } from "effect"
import { SecureRandom } from "effect/crypto"
import {
  type CancellationNotice,
  type CancellationReason,
  cancellationRoutingKey,
  Exchanges,
  Queues,
  type TaskMessage
} from "../../domain/Messages.ts"
import * as Progress from "../../domain/Progress.ts"
import type { OutboxMessage, SagaContext, SagaInstance, SagaStatus, Timer } from "../../domain/Saga.ts"
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
import { CorruptProgress } from "../errors.ts"

/** A saga as a decision sees it: the locked instance, the definition driving it, its context and its progress. */
export interface Loaded {
  readonly saga: SagaInstance
  readonly definition: AnySagaDefinition
  readonly context: Context
  readonly progress: Progress.Progress
}

const decodeProgress = Schema.decodeUnknownEffect(Progress.Progress)

/** The saga's progress, or `CorruptProgress` when what is stored is not the engine's. */
export const readProgress = (saga: SagaInstance) =>
  decodeProgress(saga.progress).pipe(
    Effect.mapError((error) => new CorruptProgress({ sagaId: saga.id, reason: error.message }))
  )

const after = (timeout: Duration.Duration) =>
  Effect.map(DateTime.now, (now) => DateTime.add(now, { milliseconds: Duration.toMillis(timeout) }))

/**
 * The one place a move becomes an outcome: what the progress says the saga waits for, and until when, is the timer
 * the store arms (none: nothing is awaited). `deadline` is when waiting ends for good, when that is later than the
 * timer (a heartbeat due before the step's timeout). A heartbeat belongs to the attempt it came for: every move
 * clears it.
 */
const advance = (move: {
  readonly state: string
  readonly status: SagaStatus
  readonly context: Context
  readonly progress: Progress.Progress
  readonly event: string
  readonly detail: unknown
  readonly messages?: ReadonlyArray<OutboxMessage> | undefined
  readonly timer?: Timer | undefined
  readonly deadline?: DateTime.Utc | undefined
}) => {
  const { heartbeat: _, ...progress } = move.progress
  return StepOutcome.Advance({
    state: move.state,
    status: move.status,
    context: move.context as SagaContext,
    progress: Progress.toJson({
      ...progress,
      awaiting: move.timer?.awaiting ?? null,
      deadline: move.deadline ?? move.timer?.dueAt ?? null
    }),
    event: move.event,
    detail: move.detail,
    messages: move.messages,
    timer: move.timer
  })
}

/** The same for every attempt of one step (or compensation) of one saga: what workers make side effects idempotent by. */
const stepKeyOf = (saga: SagaInstance, stepName: string) => `${saga.id}/${stepName}`

/**
 * A task message for the outbox, with a fresh task id, and the timer that waits for its reply: due at the step's
 * timeout, or sooner, at the first heartbeat's, when the step expects heartbeats. Its `traceparent` header names the
 * current span — the engine operation that decided the step — so the worker's spans join its trace.
 */
const sendTask = Effect.fnUntraced(function* (
  saga: SagaInstance,
  task: {
    readonly stepName: string
    readonly taskType: string
    readonly attempt: number
    readonly payload: JsonObject
    readonly timeout: Duration.Duration
    readonly heartbeatTimeout?: Duration.Duration | undefined
  }
) {
  const taskId = yield* (yield* SecureRandom.SecureRandom).uuidV7()
  const heartbeat =
    task.heartbeatTimeout === undefined ? {} : { heartbeatTimeoutMs: heartbeatMillis(task.heartbeatTimeout) }
  const body: TaskMessage = {
    sagaId: saga.id,
    sagaType: saga.sagaType,
    taskId,
    taskType: task.taskType,
    stepKey: stepKeyOf(saga, task.stepName),
    attempt: task.attempt,
    replyTo: Queues.replies,
    ...heartbeat,
    payload: task.payload as TaskMessage["payload"]
  }
  const headers = yield* TraceContext.currentHeaders
  const message: OutboxMessage = { exchange: Exchanges.tasks, routingKey: task.taskType, payload: body, headers }
  const deadline = yield* after(task.timeout)
  const timer: Timer = {
    dueAt: task.heartbeatTimeout === undefined ? deadline : yield* heartbeatDue(deadline, task.heartbeatTimeout),
    awaiting: { _tag: "Reply", taskId, taskType: task.taskType }
  }
  return { taskId, messages: [message], timer, deadline }
})

const heartbeatMillis = (timeout: Duration.Duration) => Math.max(1, Math.round(Duration.toMillis(timeout)))

/** When the next heartbeat is due: a heartbeat timeout from now, but never after the step's deadline. */
export const heartbeatDue = (deadline: DateTime.Utc, heartbeatTimeout: Duration.Duration) =>
  Effect.map(after(heartbeatTimeout), (due) => DateTime.min(due, deadline))

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

/** Enters forward step `index` (or completes the saga after the last one) at `attempt`. */
export const enterStep = Effect.fnUntraced(function* (
  loaded: Loaded,
  move: { readonly index: number; readonly attempt: number; readonly event: string; readonly detail: object }
) {
  const { saga, definition, context } = loaded
  const { index, attempt, event, detail } = move
  const step = definition.steps[index]
  const progress = { ...loaded.progress, step: index }
  if (step === undefined) {
    return advance({
      state: finalStates.COMPLETED,
      status: "COMPLETED",
      context,
      progress: { ...progress, attempt: 0 },
      event: "SagaCompleted",
      detail
    })
  }
  if (step._tag === "Signal") {
    return advance({
      state: step.state,
      status: "RUNNING",
      context,
      progress: { ...progress, attempt: 0 },
      event,
      detail,
      timer: { dueAt: yield* after(step.timeout), awaiting: { _tag: "Signal", name: step.signal } }
    })
  }
  const payload = yield* lift(step.payload(context))
  const sent = yield* sendTask(saga, {
    stepName: step.name,
    taskType: step.taskType,
    attempt,
    payload,
    timeout: step.timeout,
    heartbeatTimeout: step.heartbeatTimeout
  })
  return advance({
    state: step.state,
    status: "RUNNING",
    context,
    progress: { ...progress, attempt },
    event,
    detail: { ...detail, step: step.name, taskType: step.taskType, taskId: sent.taskId, attempt },
    messages: sent.messages,
    timer: sent.timer,
    deadline: sent.deadline
  })
})

/** The first position of a new saga: its first step entered, ready to be created. */
export const begin = (definition: AnySagaDefinition, id: string, context: Context) =>
  Effect.gen(function* () {
    const progress: Progress.Progress = {
      version: definition.version,
      step: 0,
      attempt: 0,
      awaiting: null,
      deadline: null,
      completed: []
    }
    const saga = { id, sagaType: definition.type } as SagaInstance
    const first = yield* enterStep(
      { saga, definition, context, progress },
      { index: 0, attempt: 1, event: "SagaStarted", detail: {} }
    )
    if (first._tag !== "Advance") return yield* Effect.die("a saga's first step always moves")
    return first
  })

export const taskStep = (definition: AnySagaDefinition, name: string): TaskStep<Context> | undefined => {
  const step = definition.steps.find((s) => s.name === name)
  return step?._tag === "Task" ? step : undefined
}

const finish = (loaded: Loaded, outcome: "FAILED" | "CANCELLED", detail: unknown) =>
  advance({
    state: finalStates[outcome],
    status: outcome,
    context: loaded.context,
    progress: { ...loaded.progress, attempt: 0 },
    event: outcome === "FAILED" ? "SagaFailed" : "SagaCancelled",
    detail
  })

/** Sends the compensation task of the next step to undo (the saga's progress has its compensation) at `attempt`. */
export const enterCompensation = Effect.fnUntraced(function* (
  loaded: Loaded,
  move: { readonly attempt: number; readonly event: string; readonly detail: object }
) {
  const { saga, definition, context } = loaded
  const { stuck: _, ...compensation } = loaded.progress.compensation!
  const name = compensation.pending[0]
  const undo = name === undefined ? undefined : taskStep(definition, name)?.compensation
  if (undo === undefined) return finish(loaded, compensation.outcome, move.detail)
  const payload = yield* lift(undo.payload(context)).pipe(
    Effect.catchTag("StepFailed", (e) => Effect.die(`compensation ${undo.name} cannot build its task: ${e.message}`))
  )
  const { attempt } = move
  const sent = yield* sendTask(saga, {
    stepName: undo.name,
    taskType: undo.taskType,
    attempt,
    payload,
    timeout: undo.timeout
  })
  return advance({
    state: undo.state,
    status: "COMPENSATING",
    context,
    progress: { ...loaded.progress, attempt, compensation },
    event: move.event,
    detail: { ...move.detail, compensation: undo.name, taskId: sent.taskId, attempt },
    messages: sent.messages,
    timer: sent.timer
  })
})

/** Starts undoing the saga: the running step (if it has a compensation) and then the completed ones, in reverse. */
export const startCompensation = (
  loaded: Loaded,
  move: { readonly outcome: "FAILED" | "CANCELLED"; readonly reason: Progress.Failure; readonly event: string }
) => {
  const { definition, progress } = loaded
  const running = definition.steps[progress.step]
  const inFlight =
    running?._tag === "Task" && running.compensation !== undefined && progress.attempt > 0 ? [running.name] : []
  const completed = progress.completed.filter((name) => taskStep(definition, name)?.compensation !== undefined)
  const pending = [...inFlight, ...completed.reverse()]
  const next: Loaded = {
    ...loaded,
    progress: { ...progress, compensation: { outcome: move.outcome, pending, reason: move.reason } }
  }
  return pending.length === 0
    ? Effect.succeed(finish(next, move.outcome, move.reason))
    : enterCompensation(next, { attempt: 1, event: move.event, detail: move.reason })
}

/** A step that cannot even be taken (its task cannot be built) fails the saga: compensate what was done. */
export const compensateFor = (loaded: Loaded, stepName: string) => (error: StepFailed) =>
  startCompensation(loaded, {
    outcome: "FAILED",
    reason: { step: stepName, code: error.code, message: error.message },
    event: "StepFailed"
  })

export interface TaskFailure {
  readonly code: string
  readonly message: string
  readonly retryable: boolean
}

/** A forward step failed: back off and retry while the policy allows and the failure is retryable, else compensate. */
export const stepFailed = Effect.fnUntraced(function* (loaded: Loaded, step: TaskStep<Context>, failure: TaskFailure) {
  const { progress } = loaded
  const reason: Progress.Failure = { step: step.name, code: failure.code, message: failure.message }
  const delay = failure.retryable ? yield* retryDelay(step.retry, progress.attempt) : Option.none()
  if (Option.isSome(delay)) {
    return advance({
      state: step.state,
      status: "RUNNING",
      context: loaded.context,
      progress,
      event: "StepRetryScheduled",
      detail: { ...reason, attempt: progress.attempt, retryInMillis: Duration.toMillis(delay.value) },
      timer: { dueAt: yield* after(delay.value), awaiting: { _tag: "Timer", reason: `retry ${step.name}` } }
    })
  }
  return yield* startCompensation(loaded, { outcome: "FAILED", reason, event: "StepFailed" })
})

/** A compensation failed: retried per its policy; when exhausted the saga stays COMPENSATING, stuck, for an operator. */
export const compensationFailed = Effect.fnUntraced(function* (loaded: Loaded, failure: TaskFailure) {
  const { progress } = loaded
  const compensation = progress.compensation!
  const name = compensation.pending[0] ?? ""
  const undo = taskStep(loaded.definition, name)?.compensation
  const reason: Progress.Failure = { step: undo?.name ?? name, code: failure.code, message: failure.message }
  const delay = undo === undefined ? Option.none() : yield* retryDelay(undo.retry, progress.attempt)
  const state = undo?.state ?? "COMPENSATING"
  if (Option.isSome(delay)) {
    return advance({
      state,
      status: "COMPENSATING",
      context: loaded.context,
      progress,
      event: "CompensationRetryScheduled",
      detail: { ...reason, attempt: progress.attempt, retryInMillis: Duration.toMillis(delay.value) },
      timer: { dueAt: yield* after(delay.value), awaiting: { _tag: "Timer", reason: `retry ${reason.step}` } }
    })
  }
  return advance({
    state,
    status: "COMPENSATING",
    context: loaded.context,
    progress: { ...progress, compensation: { ...compensation, stuck: reason } },
    event: "CompensationStuck",
    detail: reason
  })
})

/**
 * The task the saga waits for, given up: a cancellation notice for it joins the outcome's messages, so a worker still
 * working on it may stop. Nothing is added when no task is awaited or the outcome changes nothing.
 */
export const abandoning =
  (loaded: Loaded, reason: CancellationReason) =>
  <E, R>(decided: Effect.Effect<StepOutcome, E, R>) =>
    Effect.gen(function* () {
      const outcome = yield* decided
      const { saga, definition, progress } = loaded
      const awaiting = progress.awaiting
      if (outcome._tag !== "Advance" || awaiting?._tag !== "Reply") return outcome
      const undoing = progress.compensation?.pending[0]
      const stepName =
        undoing === undefined
          ? (definition.steps[progress.step]?.name ?? "")
          : (taskStep(definition, undoing)?.compensation?.name ?? undoing)
      const notice: CancellationNotice = {
        sagaId: saga.id,
        sagaType: saga.sagaType,
        taskId: awaiting.taskId,
        taskType: awaiting.taskType,
        stepKey: stepKeyOf(saga, stepName),
        attempt: progress.attempt,
        reason
      }
      const message: OutboxMessage = {
        exchange: Exchanges.tasks,
        routingKey: cancellationRoutingKey(awaiting.taskType),
        payload: notice,
        headers: yield* TraceContext.currentHeaders
      }
      return StepOutcome.Advance({ ...outcome, messages: [message, ...(outcome.messages ?? [])] })
    })

export const ignore = (event: string, detail: unknown) =>
  Effect.succeed(StepOutcome.Stay({ ignored: { event, detail } }))

/** Moves on after the current forward step succeeded with `next` as the context. */
export const stepSucceeded = (
  loaded: Loaded,
  move: {
    readonly stepName: string
    readonly next: Effect.Effect<Context, StepFailed>
    readonly event: string
    readonly detail: object
  }
) =>
  Effect.gen(function* () {
    const context = yield* move.next
    const progress = { ...loaded.progress, completed: [...loaded.progress.completed, move.stepName] }
    return yield* enterStep(
      { ...loaded, context, progress },
      { index: loaded.progress.step + 1, attempt: 1, event: move.event, detail: move.detail }
    )
  })
