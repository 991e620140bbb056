/**
 * The engine's bookkeeping, kept in the saga's context under `$saga` so that it is written in the same versioned
 * update as everything else: which definition version drives the saga, where it is, which task it waits for, what
 * it has completed, and what is left to compensate.
 */
import { Effect, Schema } from "effect"
import type { SagaInstance } from "../domain/Saga.ts"
import type { Context } from "./Definition.ts"
import { CorruptProgress } from "./errors.ts"

export const progressKey = "$saga"

export const Failure = Schema.Struct({
  step: Schema.String,
  code: Schema.String,
  message: Schema.String
})
export type Failure = typeof Failure.Type

export const Compensation = Schema.Struct({
  /** How the saga ends once compensation is done. */
  outcome: Schema.Literals(["FAILED", "CANCELLED"]),
  /** Steps still to undo, the next one first. */
  pending: Schema.Array(Schema.String),
  /** Why the saga is compensating. */
  reason: Failure,
  /** Set when a compensation kept failing: the saga waits for an operator. */
  stuck: Schema.optionalKey(Failure)
})
export type Compensation = typeof Compensation.Type

export const Progress = Schema.Struct({
  version: Schema.Int,
  /** Index of the forward step in progress. */
  step: Schema.Int,
  /** Attempts started of the current task (forward step or compensation). */
  attempt: Schema.Int,
  /** The task whose reply the saga waits for; null while it backs off, waits for a signal, or is stuck. */
  taskId: Schema.NullOr(Schema.String),
  /** Forward steps completed, in order. */
  completed: Schema.Array(Schema.String),
  compensation: Schema.optionalKey(Compensation)
})
export type Progress = typeof Progress.Type

const decodeProgress = Schema.decodeUnknownEffect(Progress)

/** Splits a stored context into the saga's own variables and the engine's progress. */
export const read = (saga: SagaInstance) => {
  const { [progressKey]: stored, ...context } = saga.context
  return decodeProgress(stored).pipe(
    Effect.map((progress) => ({ context: context as Context, progress })),
    Effect.mapError((error) => new CorruptProgress({ sagaId: saga.id, reason: error.message }))
  )
}

export const write = (context: Context, progress: Progress) => ({ ...context, [progressKey]: progress })
