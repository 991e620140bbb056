/**
 * The engine's bookkeeping for one saga, kept in the `progress` column beside (never inside) the saga's context and
 * written in the same versioned update: which definition version drives the saga, where it is, what it waits for and
 * until when, what it has completed, and what is left to compensate.
 *
 * The store keeps it as an opaque JSON object (`SagaProgress`); the engine reads and writes it through `Progress`,
 * so a row that does not decode is reported as corrupt, never driven by guesswork.
 */
import { Schema } from "effect"
import { Awaiting, type SagaProgress } from "./Saga.ts"

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

/** The last sign of life of the task the saga waits for, with the worker's progress. */
export const Heartbeat = Schema.Struct({
  at: Schema.DateTimeUtcFromString,
  percent: Schema.optionalKey(Schema.Number),
  message: Schema.optionalKey(Schema.String)
})
export type Heartbeat = typeof Heartbeat.Type

export const Progress = Schema.Struct({
  /** The definition version the saga started with, and the only one that drives it. */
  version: Schema.Int,
  /** Index of the forward step in progress; the number of steps once the saga completed. */
  step: Schema.Int,
  /** Attempts started of the current task (forward step or compensation). */
  attempt: Schema.Int,
  /** What the saga waits for: a reply to a task, a signal, or a timer (a retry back-off); null when nothing. */
  awaiting: Schema.NullOr(Awaiting),
  /** When waiting ends: the reply or signal times out, or the back-off is over. */
  deadline: Schema.NullOr(Schema.DateTimeUtcFromString),
  /** The awaited task's last heartbeat; written beside the saga's versioned steps, cleared by the next one. */
  heartbeat: Schema.optionalKey(Heartbeat),
  /** Forward steps completed, in order. */
  completed: Schema.Array(Schema.String),
  compensation: Schema.optionalKey(Compensation)
})
export type Progress = typeof Progress.Type

const encodeProgress = Schema.encodeSync(Progress)

/** The progress as the store keeps it: a JSON object. */
export const toJson = (progress: Progress): SagaProgress => encodeProgress(progress) as SagaProgress

/** A heartbeat as the store merges it into the progress it keeps (see `SagaStore.recordHeartbeat`). */
export const heartbeatJson = (heartbeat: Heartbeat): SagaProgress =>
  ({ heartbeat: Schema.encodeSync(Heartbeat)(heartbeat) }) as SagaProgress

/** The task whose reply the saga waits for, if it waits for one. */
export const awaitedTaskId = (progress: Progress): string | undefined =>
  progress.awaiting?._tag === "Reply" ? progress.awaiting.taskId : undefined
