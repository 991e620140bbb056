import { Context, Data, type DateTime, type Duration, type Effect } from "effect"
import type {
  ContextTooLarge,
  IdempotencyConflict,
  InvalidSagaData,
  SagaNotFound,
  StoreUnavailable,
  VersionConflict
} from "../domain/errors.ts"
import type {
  DueTimer,
  IgnoredEvent,
  OutboxMessage,
  PendingMessage,
  SagaContext,
  SagaId,
  SagaInstance,
  SagaProgress,
  SagaStatus,
  StuckSaga,
  Timer,
  Transition
} from "../domain/Saga.ts"

export interface CreateSaga {
  /** Chosen by the caller when the first messages must name the saga; generated (UUIDv7) otherwise. */
  readonly id?: SagaId | undefined
  readonly sagaType: string
  readonly state: string
  readonly context: SagaContext
  /** The engine's bookkeeping, kept beside the context; `{}` when absent. */
  readonly progress?: SagaProgress | undefined
  /** End-to-end trace id; defaults to the saga id. */
  readonly correlationId?: string | undefined
  /** Same key → same saga: a repeated create returns the saga the key first started. */
  readonly idempotencyKey?: string | undefined
  /** Written to the outbox in the creating transaction (typically the first task). */
  readonly messages?: ReadonlyArray<OutboxMessage> | undefined
  readonly timer?: Timer | undefined
  /** Recorded with the `SagaStarted` history row (the first task's id, say). */
  readonly detail?: unknown
}

export interface Created {
  readonly saga: SagaInstance
  /** false when the idempotency key had already started this saga. */
  readonly created: boolean
}

export interface SagaFilter {
  readonly status?: SagaStatus | undefined
  readonly sagaType?: string | undefined
  readonly state?: string | undefined
  readonly correlationId?: string | undefined
  /** JSON containment (`context @> filter`). */
  readonly context?: SagaContext | undefined
  /** Page size, 1..500 (default 50). */
  readonly limit?: number | undefined
  /** `nextCursor` of the previous page. */
  readonly cursor?: string | undefined
}

export interface SagaPage {
  readonly items: ReadonlyArray<SagaInstance>
  readonly nextCursor: string | null
}

/**
 * What a step decided. `Advance` is one versioned write: new state, status, context and progress, the messages to send, the
 * timer that replaces the saga's current one (none when absent), and the history event. `Stay` changes nothing; with
 * `ignored` it records the event the saga was not waiting for (a duplicate or late reply, say).
 */
export type StepOutcome = Data.TaggedEnum<{
  Advance: {
    readonly state: string
    readonly status: SagaStatus
    readonly context: SagaContext
    /** Replaces the engine's bookkeeping; unchanged when absent. */
    readonly progress?: SagaProgress | undefined
    readonly event: string
    readonly detail?: unknown
    readonly messages?: ReadonlyArray<OutboxMessage> | undefined
    readonly timer?: Timer | undefined
  }
  Stay: { readonly ignored?: { readonly event: string; readonly detail?: unknown } | undefined }
}>
export const StepOutcome = Data.taggedEnum<StepOutcome>()

export interface StoreSummary {
  readonly byStatus: Readonly<Record<SagaStatus, number>>
  /** Committed messages not yet confirmed by the broker. */
  readonly outboxPending: number
  /** The outbox relay's lag: age of the oldest unpublished message, 0 when none waits. */
  readonly outboxLagMillis: number
}

export interface PurgeResult {
  readonly sagas: number
  readonly idempotencyKeys: number
  /** Another instance holds retention's turn: nothing was deleted. */
  readonly busy: boolean
}

/** Active sagas of one type in one state, for metrics. */
export interface ActiveSagas {
  readonly sagaType: string
  readonly status: SagaStatus
  readonly state: string
  readonly count: number
  /** How many of them `findStuck(stuckAfter)` reports: no change for longer than `stuckAfter`. */
  readonly stuck: number
}

/** One readiness check: passed, or failed and why. */
export interface HealthCheck {
  readonly ok: boolean
  readonly detail?: string
}

/** Whether the store can do its work now, for readiness probes. */
export interface StoreHealth {
  /** The database answers. */
  readonly database: HealthCheck
  /** Its schema is the one this version needs. */
  readonly schema: HealthCheck
}

export type StoreError = StoreUnavailable
export type TransactError = SagaNotFound | VersionConflict | ContextTooLarge | InvalidSagaData | StoreUnavailable

export interface TransactOptions {
  /** Fail with `VersionConflict` unless the saga is at this version (an operator's `If-Match`, a claimed timer). */
  readonly expectedVersion?: number | undefined
}

/**
 * The saga state store. Every change to a saga goes through `transact`: one transaction doing the locked read,
 * the step's decision, the versioned write, and the outbox, timer and history writes, all or nothing.
 */
export class SagaStore extends Context.Service<
  SagaStore,
  {
    /** Starts a saga at lock version 0 and records it in the history. */
    readonly create: (
      input: CreateSaga
    ) => Effect.Effect<Created, ContextTooLarge | InvalidSagaData | IdempotencyConflict | StoreError>
    readonly get: (id: SagaId) => Effect.Effect<SagaInstance, SagaNotFound | StoreError>
    /** Newest first, keyset-paginated. */
    readonly find: (filter: SagaFilter) => Effect.Effect<SagaPage, InvalidSagaData | StoreError>
    /** The saga's transitions in version order. */
    readonly history: (id: SagaId) => Effect.Effect<ReadonlyArray<Transition>, SagaNotFound | StoreError>
    /** Events the saga received but ignored, oldest first. */
    readonly ignoredEvents: (id: SagaId) => Effect.Effect<ReadonlyArray<IgnoredEvent>, SagaNotFound | StoreError>
    /** Active sagas whose last change is older than `olderThan`, oldest first, with what each waits for. */
    readonly findStuck: (
      olderThan: Duration.Duration,
      options?: { readonly limit?: number | undefined }
    ) => Effect.Effect<ReadonlyArray<StuckSaga>, StoreError>
    /**
     * Claims up to `limit` timers due at `now`. A claim pushes the timer back by the lease, so other instances do
     * not see it meanwhile; if the claimer dies the timer comes due again. Fire it with
     * `transact(id, step, { expectedVersion: claim.lockVersion })`: once the saga has moved on, that is a conflict.
     */
    readonly claimDue: (now: DateTime.Utc, limit: number) => Effect.Effect<ReadonlyArray<DueTimer>, StoreError>
    /**
     * Runs `step` on the locked saga and writes its outcome in the same transaction. Retryable database failures
     * re-run the whole transaction (and so the step) from a fresh read; a transaction whose commit was in doubt
     * is detected and not applied twice.
     */
    readonly transact: <E, R>(
      id: SagaId,
      step: (saga: SagaInstance) => Effect.Effect<StepOutcome, E, R>,
      options?: TransactOptions
    ) => Effect.Effect<SagaInstance, E | TransactError, R>
    /**
     * Records a sign of life of the task the saga waits for, without a step: merges `progress` into the saga's
     * progress (top-level keys) and, with `dueAt`, moves the saga's timer there. Only while the saga's timer, armed at
     * its current version, awaits the reply to `taskId`; returns whether it was recorded. The lock version and the
     * history do not change; `updated_at` does (a saga whose worker is alive is not stuck).
     */
    readonly recordHeartbeat: (
      id: SagaId,
      taskId: string,
      heartbeat: { readonly progress: SagaProgress; readonly dueAt?: DateTime.Utc | undefined }
    ) => Effect.Effect<boolean, StoreError>
    /**
     * Retention, one batch: deletes up to `limit` finished sagas (COMPLETED, FAILED, CANCELLED) last changed before
     * `finishedBefore`, oldest first, with their history, timers, idempotency keys and ignored events; and up to
     * `limit` idempotency keys created before it, whatever their saga. `busy` when another instance is purging (it
     * deleted nothing). With `dryRun`, deletes nothing and counts everything that would go.
     */
    readonly purge: (options: {
      readonly finishedBefore: DateTime.Utc
      readonly limit: number
      readonly dryRun?: boolean | undefined
    }) => Effect.Effect<PurgeResult, StoreError>
    /** Sagas by status and the outbox backlog, for health reports and metrics. */
    readonly summary: Effect.Effect<StoreSummary, StoreError>
    /** Whether the database answers and its schema is current; failures are values, never errors. */
    readonly health: Effect.Effect<StoreHealth>
    /** Active sagas counted by type, status and state, with how many of them are stuck, for metrics. */
    readonly countActive: (stuckAfter: Duration.Duration) => Effect.Effect<ReadonlyArray<ActiveSagas>, StoreError>
    /**
     * Hands up to `limit` committed outbox messages, oldest first, to `publish`, and deletes them once it
     * succeeds. Messages are claimed with SKIP LOCKED, so several relays never publish the same batch at once.
     */
    readonly publishOutbox: <E, R>(
      limit: number,
      publish: (messages: ReadonlyArray<PendingMessage>) => Effect.Effect<void, E, R>
    ) => Effect.Effect<number, E | StoreError, R>
  }
>()("saga-orchestrator/store/SagaStore") {}
