/**
 * What the engine decides for each event, given the saga as it is locked in the store. Each function returns the
 * `StepOutcome` the store writes in the same transaction; a typed error instead leaves the saga untouched.
 *
 * Invariants worth keeping:
 * - a reply counts only when its task id is the one the progress awaits; every (re)sent task gets a new id, so a
 *   duplicate, late or earlier-attempt reply can never move the saga twice;
 * - every waiting point has a timer (reply timeout, back-off, signal deadline) except a stuck compensation, which
 *   waits for an operator;
 * - compensation undoes the completed steps in reverse order, starting with the step that was running when the saga
 *   failed (its task may have done part of its work); compensations must therefore be idempotent.
 */
import { DateTime, Effect, Schema } from "effect"
import type { SecureRandom } from "effect/crypto"
import type { ReplyMessage } from "../../domain/Messages.ts"
import { awaitedTaskId } from "../../domain/Progress.ts"
import { type DueTimer, isActive } from "../../domain/Saga.ts"
import { StepOutcome } from "../../store/SagaStore.ts"
import { lift } from "../Definition.ts"
import { InvalidSignalData, NothingToRetry, SagaFinished, SignalNotExpected } from "../errors.ts"
import {
  abandoning,
  compensateFor,
  compensationFailed,
  enterCompensation,
  enterStep,
  ignore,
  type Loaded,
  startCompensation,
  stepFailed,
  stepSucceeded,
  type TaskFailure
} from "./moves.ts"

export type Decide<E> = (loaded: Loaded) => Effect.Effect<StepOutcome, E, SecureRandom.SecureRandom>

export const onReply =
  (reply: ReplyMessage): Decide<never> =>
  (loaded) =>
    Effect.gen(function* () {
      const { saga, definition, context, progress } = loaded
      const received = { taskId: reply.taskId, outcome: reply.outcome }
      if (!isActive(saga.status))
        return yield* ignore("ReplyIgnored", { ...received, reason: `saga is ${saga.status}` })
      if (awaitedTaskId(progress) !== reply.taskId) {
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
        if (reply.outcome === "failed") return yield* compensationFailed(loaded, failure)
        const [done, ...pending] = progress.compensation.pending
        const next = { ...progress, compensation: { ...progress.compensation, pending } }
        return yield* enterCompensation(
          { ...loaded, progress: next },
          { attempt: 1, event: "CompensationSucceeded", detail: { compensated: done } }
        )
      }
      const step = definition.steps[progress.step]
      if (step?._tag !== "Task") return yield* ignore("ReplyIgnored", { ...received, reason: "no task step running" })
      if (reply.outcome === "failed") return yield* stepFailed(loaded, step, failure)
      const result = yield* Schema.decodeUnknownEffect(step.result)(reply.result ?? {}).pipe(Effect.result)
      if (result._tag === "Failure") {
        const invalid = { code: "invalid_result", message: result.failure.message, retryable: false }
        return yield* stepFailed(loaded, step, invalid)
      }
      return yield* stepSucceeded(loaded, {
        stepName: step.name,
        next: lift(step.onSuccess(context, result.success)),
        event: "StepSucceeded",
        detail: { completed: step.name, taskId: reply.taskId }
      }).pipe(
        Effect.catchTag("StepFailed", (e) =>
          stepFailed(loaded, step, { code: e.code, message: e.message, retryable: e.retryable })
        )
      )
    })

export const onSignal =
  (name: string, data: unknown): Decide<SignalNotExpected | InvalidSignalData> =>
  (loaded) =>
    Effect.gen(function* () {
      const { saga, definition, context, progress } = loaded
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
      return yield* stepSucceeded(loaded, {
        stepName: step.name,
        next: lift(step.onSignal(context, decoded)),
        event: "SignalReceived",
        detail: { signal: name }
      }).pipe(Effect.catchTag("StepFailed", compensateFor(loaded, step.name)))
    })

export const onTimer =
  (due: DueTimer): Decide<never> =>
  (loaded) =>
    Effect.gen(function* () {
      const { saga, definition, progress } = loaded
      if (!isActive(saga.status)) return StepOutcome.Stay({})
      const step = definition.steps[progress.step]
      switch (due.awaiting._tag) {
        case "Reply": {
          if (awaitedTaskId(progress) !== due.awaiting.taskId) return StepOutcome.Stay({})
          // Due before the attempt's deadline: it was the heartbeat that did not come.
          const missedHeartbeat = progress.deadline !== null && DateTime.isLessThan(due.dueAt, progress.deadline)
          const failure = missedHeartbeat
            ? {
                code: "heartbeat_timeout",
                message: `no heartbeat from ${due.awaiting.taskType} in time`,
                retryable: true
              }
            : { code: "timeout", message: `no reply to ${due.awaiting.taskType} in time`, retryable: true }
          const abandoned = abandoning(loaded, missedHeartbeat ? "heartbeat_missed" : "timed_out")
          if (progress.compensation !== undefined) return yield* compensationFailed(loaded, failure).pipe(abandoned)
          if (step?._tag !== "Task") return StepOutcome.Stay({})
          return yield* stepFailed(loaded, step, failure).pipe(abandoned)
        }
        case "Timer": {
          const attempt = progress.attempt + 1
          if (progress.compensation !== undefined) {
            return yield* enterCompensation(loaded, { attempt, event: "CompensationRetried", detail: {} })
          }
          return yield* enterStep(loaded, { index: progress.step, attempt, event: "StepRetried", detail: {} }).pipe(
            Effect.catchTag("StepFailed", compensateFor(loaded, step?.name ?? ""))
          )
        }
        case "Signal": {
          const reason = {
            step: step?.name ?? "",
            code: "signal_timeout",
            message: `no ${due.awaiting.name} signal in time`
          }
          return yield* startCompensation(loaded, { outcome: "FAILED", reason, event: "SignalTimedOut" })
        }
      }
    })

export const onRetry: Decide<SagaFinished | NothingToRetry> = (loaded) =>
  retry(loaded).pipe(abandoning(loaded, "superseded"))

const retry: Decide<SagaFinished | NothingToRetry> = (loaded) =>
  Effect.gen(function* () {
    const { saga, definition, progress } = loaded
    if (!isActive(saga.status)) return yield* new SagaFinished({ sagaId: saga.id, status: saga.status })
    const detail = { by: "operator" }
    if (progress.compensation !== undefined) {
      return yield* enterCompensation(loaded, { attempt: 1, event: "CompensationRetried", detail })
    }
    const step = definition.steps[progress.step]
    if (step?._tag !== "Task") return yield* new NothingToRetry({ sagaId: saga.id, state: saga.currentState })
    return yield* enterStep(loaded, {
      index: progress.step,
      attempt: progress.attempt + 1,
      event: "StepRetried",
      detail
    }).pipe(Effect.catchTag("StepFailed", compensateFor(loaded, step.name)))
  })

export const onCancel: Decide<SagaFinished> = (loaded) => cancel(loaded).pipe(abandoning(loaded, "saga_cancelled"))

const cancel: Decide<SagaFinished> = (loaded) =>
  Effect.gen(function* () {
    const { saga, definition, progress } = loaded
    if (!isActive(saga.status)) return yield* new SagaFinished({ sagaId: saga.id, status: saga.status })
    if (progress.compensation !== undefined) {
      // Already undoing: it now ends CANCELLED; the current compensation is sent again (compensations are idempotent).
      const next = { ...progress, compensation: { ...progress.compensation, outcome: "CANCELLED" as const } }
      return yield* enterCompensation(
        { ...loaded, progress: next },
        { attempt: 1, event: "CancelRequested", detail: { by: "operator" } }
      )
    }
    const step = definition.steps[progress.step]
    const reason = { step: step?.name ?? "", code: "cancelled", message: "cancelled by an operator" }
    return yield* startCompensation(loaded, { outcome: "CANCELLED", reason, event: "CancelRequested" })
  })
