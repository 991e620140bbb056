/**
 * PostgreSQL rows decoded into the domain's models. A row that does not decode means the schema and the code
 * disagree: a defect, not an error a caller could handle.
 */
import { Effect, Schema } from "effect"
import {
  Awaiting,
  DueTimer,
  IgnoredEvent,
  PendingMessage,
  SagaContext,
  type SagaId,
  SagaInstance,
  SagaProgress,
  SagaStatus,
  StuckSaga,
  Transition
} from "../../domain/Saga.ts"

const SagaRow = Schema.Struct({
  id: Schema.String,
  saga_type: Schema.String,
  current_state: Schema.String,
  status: SagaStatus,
  context: SagaContext,
  progress: SagaProgress,
  correlation_id: Schema.String,
  lock_version: Schema.Int,
  created_at: Schema.DateTimeUtcFromDate,
  updated_at: Schema.DateTimeUtcFromDate
})
const decodeSagaRow = Schema.decodeUnknownEffect(SagaRow)

export const toSaga = (row: unknown) =>
  decodeSagaRow(row).pipe(
    Effect.map(
      (r) =>
        new SagaInstance({
          id: r.id as SagaId,
          sagaType: r.saga_type,
          currentState: r.current_state,
          status: r.status,
          context: r.context,
          progress: r.progress,
          correlationId: r.correlation_id,
          lockVersion: r.lock_version,
          createdAt: r.created_at,
          updatedAt: r.updated_at
        })
    ),
    Effect.orDie
  )

const TimerColumns = Schema.Struct({
  timer_due_at: Schema.NullOr(Schema.DateTimeUtcFromDate),
  timer_awaiting: Schema.NullOr(Awaiting)
})
const decodeTimerColumns = Schema.decodeUnknownEffect(TimerColumns)

const TransitionRow = Schema.Struct({
  lock_version: Schema.Int,
  from_state: Schema.NullOr(Schema.String),
  to_state: Schema.String,
  status: SagaStatus,
  event: Schema.String,
  detail: Schema.NullOr(Schema.Json),
  at: Schema.DateTimeUtcFromDate
})
const decodeTransitionRows = Schema.decodeUnknownEffect(Schema.Array(TransitionRow))

const IgnoredRow = Schema.Struct({
  lock_version: Schema.Int,
  event: Schema.String,
  detail: Schema.NullOr(Schema.Json),
  at: Schema.DateTimeUtcFromDate
})
const decodeIgnoredRows = Schema.decodeUnknownEffect(Schema.Array(IgnoredRow))

const DueRow = Schema.Struct({
  saga_id: Schema.String,
  lock_version: Schema.Int,
  due_at: Schema.DateTimeUtcFromDate,
  awaiting: Awaiting
})
const decodeDueRows = Schema.decodeUnknownEffect(Schema.Array(DueRow))

const OutboxRow = Schema.Struct({
  message_id: Schema.String,
  saga_id: Schema.String,
  correlation_id: Schema.String,
  exchange: Schema.String,
  routing_key: Schema.String,
  headers: Schema.Record(Schema.String, Schema.String),
  payload: Schema.Json,
  created_at: Schema.DateTimeUtcFromDate
})
const decodeOutboxRows = Schema.decodeUnknownEffect(Schema.Array(OutboxRow))

export const toStuckSaga = (row: unknown) =>
  Effect.gen(function* () {
    const saga = yield* toSaga(row)
    const timer = yield* decodeTimerColumns(row).pipe(Effect.orDie)
    return new StuckSaga({
      saga,
      timer:
        timer.timer_due_at === null || timer.timer_awaiting === null
          ? null
          : { dueAt: timer.timer_due_at, awaiting: timer.timer_awaiting }
    })
  })

export const toTransitions = (rows: ReadonlyArray<unknown>) =>
  decodeTransitionRows(rows).pipe(
    Effect.orDie,
    Effect.map((decoded) =>
      decoded.map(
        (row) =>
          new Transition({
            lockVersion: row.lock_version,
            fromState: row.from_state,
            toState: row.to_state,
            status: row.status,
            event: row.event,
            detail: row.detail,
            at: row.at
          })
      )
    )
  )

export const toIgnoredEvents = (rows: ReadonlyArray<unknown>) =>
  decodeIgnoredRows(rows).pipe(
    Effect.orDie,
    Effect.map((decoded) =>
      decoded.map(
        (row) => new IgnoredEvent({ lockVersion: row.lock_version, event: row.event, detail: row.detail, at: row.at })
      )
    )
  )

export const toDueTimers = (rows: ReadonlyArray<unknown>) =>
  decodeDueRows(rows).pipe(
    Effect.orDie,
    Effect.map((decoded) =>
      decoded.map(
        (row) =>
          new DueTimer({
            sagaId: row.saga_id as SagaId,
            lockVersion: row.lock_version,
            dueAt: row.due_at,
            awaiting: row.awaiting
          })
      )
    )
  )

/** Outbox rows as messages to publish. */
export const toPendingMessages = (rows: ReadonlyArray<unknown>) =>
  decodeOutboxRows(rows).pipe(
    Effect.orDie,
    Effect.map((decoded) =>
      decoded.map(
        (row) =>
          new PendingMessage({
            messageId: row.message_id,
            sagaId: row.saga_id as SagaId,
            correlationId: row.correlation_id,
            exchange: row.exchange,
            routingKey: row.routing_key,
            payload: row.payload,
            headers: row.headers,
            createdAt: row.created_at
          })
      )
    )
  )
