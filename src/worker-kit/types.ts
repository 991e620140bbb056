/**
 * The worker kit's public types. The API is Promise-based with `AbortSignal`, on purpose: a team writing a worker in
 * TypeScript need not know Effect to use it, and an Effect program wraps a Promise API in one line
 * (`Effect.tryPromise((signal) => …)`), while the reverse would force Effect on everyone.
 */
import type { CancellationReason, TaskProgress } from "../domain/Messages.ts"

export type { CancellationReason, TaskProgress }

/** What a handler learns about the task besides its payload. */
export interface TaskInfo {
  readonly sagaId: string
  readonly sagaType: string
  readonly taskId: string
  readonly taskType: string
  /** The same for every attempt of one step: make side effects idempotent by it. */
  readonly stepKey: string
  readonly attempt: number
  readonly heartbeatTimeoutMs: number | undefined
  /** The AMQP `correlation-id` of the task (the saga's correlation id); replies and heartbeats carry it. */
  readonly correlationId: string | undefined
  /** The W3C `traceparent` header of the task, copied onto the reply and heartbeats. */
  readonly traceparent: string | undefined
}

export interface TaskContext extends TaskInfo {
  /**
   * Aborted when the orchestrator sends a cancellation notice for this task (its reason is the notice's reason), when
   * the worker stops and the grace period is over (`"shutdown"`), or when the connection is lost (`"connection_lost"`:
   * the task will be delivered again). Pass it on to fetch, child processes, database drivers.
   */
  readonly signal: AbortSignal
  /** Sends a heartbeat now with this progress; later automatic heartbeats repeat the latest progress. */
  readonly reportProgress: (progress: TaskProgress) => Promise<void>
}

export type AbortReason = CancellationReason | "shutdown" | "connection_lost"

/** Checks an unknown value: `undefined` when it is valid, else why not. */
export type Validator = (value: unknown) => string | undefined

export interface TaskHandler<P = unknown, R = unknown> {
  /** Checked before the handler runs; an invalid payload is replied as a fatal `invalid_payload` failure. */
  readonly payload?: Validator | undefined
  /**
   * Checked before the reply goes out; an invalid result is replied as a fatal `invalid_result` failure (the
   * orchestrator would fail the step the same way on receiving it).
   */
  readonly result?: Validator | undefined
  /** Resolve with the result, or throw: `TaskFailed` for a chosen outcome, any other error counts as retryable. */
  readonly handle: (payload: P, context: TaskContext) => Promise<R>
}

/**
 * A handler per task type, each with the payload and result types the caller gives. The types are not checked at
 * run time unless validators are given (see `jsonSchemaValidator` in the docs, or `schemaValidator`).
 */
export const handler = <P, R extends Readonly<Record<string, unknown>> | undefined>(
  definition: TaskHandler<P, R>
): TaskHandler<P, R> => definition

/** A failure the handler chooses: `retryable` lets the orchestrator retry the step; otherwise it compensates. */
export class TaskFailed extends Error {
  readonly code: string
  readonly retryable: boolean
  constructor(options: { readonly code: string; readonly message: string; readonly retryable: boolean }) {
    super(options.message)
    this.name = "TaskFailed"
    this.code = options.code
    this.retryable = options.retryable
  }
}

export type LogLevel = "debug" | "info" | "warn" | "error"
export type Logger = (level: LogLevel, message: string, fields?: Readonly<Record<string, unknown>>) => void

export interface WorkerOptions {
  /** `amqp://user:password@host:5672/vhost`. */
  readonly url: string
  /** The worker's task queue (durable, quorum), bound to each task type of `handlers`. */
  readonly queue: string
  // biome-ignore lint/suspicious/noExplicitAny: each task type has its own payload and result types.
  readonly handlers: Readonly<Record<string, TaskHandler<any, any>>>
  /** Tasks handled at once (AMQP prefetch). Default 10. */
  readonly prefetch?: number | undefined
  /** Reconnect back-off: from `initial` ms, doubling, at most `max` ms. Default 200 ms … 10 s. */
  readonly reconnect?: { readonly initialDelayMs: number; readonly maxDelayMs: number } | undefined
  /** How long `stop()` lets running handlers finish before aborting them. Default 30 s. */
  readonly shutdownGraceMs?: number | undefined
  /** How long to wait before a task whose reply could not be published is delivered again. Default 1 s. */
  readonly replyRetryDelayMs?: number | undefined
  /** Shown in RabbitMQ's management UI. */
  readonly connectionName?: string | undefined
  /** Default: one line per event on stderr. */
  readonly log?: Logger | undefined
}

export interface Worker {
  /** Resolves once the first connection is consuming. */
  readonly ready: Promise<void>
  /** Stops consuming, lets running handlers finish (within the grace period), then closes the connection. */
  readonly stop: () => Promise<void>
  /** Tasks being handled now. */
  readonly running: () => number
}
