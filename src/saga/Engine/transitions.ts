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
import { Effect, Schema } from "effect"
import type { SecureRandom } from "effect/crypto"
import type { ReplyMessage } from "../../domain/Messages.ts"
import { type DueTimer, isActive, type SagaInstance } from "../../domain/Saga.ts"
import { StepOutcome } from "../../store/SagaStore.ts"
import { type AnySagaDefinition, type Context, lift, type StepFailed } from "../Definition.ts"
import { InvalidSignalData, NothingToRetry, SagaFinished, SignalNotExpected } from "../errors.ts"
import { type Progress, read } from "../Progress.ts"
import {
  compensationFailed,
  enterCompensation,
  enterStep,
  ignore,
  type Position,
  startCompensation,
  stepFailed,
  stepSucceeded,
  type TaskFailure
} from "./moves.ts"

export { begin, retryDelay } from "./moves.ts"

export interface Loaded {
  readonly saga: SagaInstance
  readonly definition: AnySagaDefinition
  readonly context: Context
  readonly progress: Progress
}

export type Decide<E> = (loaded: Loaded) => Effect.Effect<StepOutcome, E, SecureRandom.SecureRandom>

export const load = read

/** A step that cannot even be taken (its task cannot be built) fails the saga: compensate what was done. */
const compensateFor = (at: Position, context: Context, progress: Progress, stepName: string) => (error: StepFailed) =>
  startCompensation(
    at,
    context,
    progress,
    "FAILED",
    { step: stepName, code: error.code, message: error.message },
    "StepFailed"
  )

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
      const decoded = yield* Schema.decodeUnknownEffect(step.data)(data, { errors: "all" }).pipe(
        Effect.mapError((error) => InvalidSignalData.fromSchemaError({ sagaId: saga.id, signal: name }, error))
      )
      const at = { saga, definition }
      return yield* stepSucceeded(at, progress, step.name, lift(step.onSignal(context, decoded)), "SignalReceived", {
        signal: name
      }).pipe(Effect.catchTag("StepFailed", compensateFor(at, context, progress, step.name)))
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
            Effect.catchTag("StepFailed", compensateFor(at, context, progress, step?.name ?? ""))
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
    }).pipe(Effect.catchTag("StepFailed", compensateFor(at, context, progress, step.name)))
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
