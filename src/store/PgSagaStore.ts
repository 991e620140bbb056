/**
 * SagaStore on PostgreSQL. Every saga change is one transaction: `SELECT … FOR UPDATE`, the step, the versioned
 * `UPDATE … WHERE lock_version = …`, and the history, timer and outbox writes.
 */
import { PgClient } from "@effect/sql-pg"
import { Array as Arr, Data, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import { SecureRandom } from "effect/crypto"
import { AppConfig, type DatabaseConfig } from "../Config.ts"
import { IdempotencyConflict, SagaNotFound, VersionConflict } from "../domain/errors.ts"
import { type OutboxMessage, type SagaContext, SagaId, type SagaInstance, type Timer } from "../domain/Saga.ts"
import * as Random from "../random.ts"
import * as Database from "./Database.ts"
import { announce, OutboxNotifications, layer as outboxNotifications } from "./OutboxNotifications.ts"
import { health } from "./PgSagaStore/health.ts"
import * as Reports from "./PgSagaStore/reports.ts"
import * as Retention from "./PgSagaStore/retention.ts"
import {
  toDueTimers,
  toIgnoredEvents,
  toPendingMessages,
  toSaga,
  toStuckSaga,
  toTransitions
} from "./PgSagaStore/rows.ts"
import { SagaStore } from "./SagaStore.ts"
import { defaultStoreSettings, type StoreSettings } from "./settings.ts"
import { refusalOrFailure, storeFailure, withTransactionRetry } from "./transactions.ts"
import {
  type Advance,
  checkAdvance,
  checkCreate,
  checkFilter,
  checkIgnored,
  checkProgress,
  encodeCursor
} from "./validate.ts"

const isSagaId = Schema.is(SagaId)

/** The idempotency key was taken by a concurrent create between our check and our insert. */
class KeyTaken extends Data.TaggedError("KeyTaken")<{}> {}

export const make = Effect.fnUntraced(function* (settings: Partial<StoreSettings> = {}) {
  const { maxContextBytes, timerLease, retryFor, pageBytes } = { ...defaultStoreSettings, ...settings }
  const sql = yield* PgClient.PgClient
  const random = yield* SecureRandom.SecureRandom
  // The relay in this process when there is one; otherwise the relays listening on the database.
  const notifications = Option.getOrElse(yield* Effect.serviceOption(OutboxNotifications), () => announce(sql))
  const inTransaction = withTransactionRetry(sql, retryFor)
  // Publishing has effects outside the database: a failed relay transaction is not retried here but by the relay.
  const runOnce = withTransactionRetry(sql, Duration.zero)

  const columns = sql`id, saga_type, current_state, status, context, progress, correlation_id, lock_version, created_at, updated_at`

  // Ids come from outside (messages, URLs): one that is not a UUID names no saga, and must not reach PostgreSQL,
  // which would refuse it with an error that looks like an outage.
  const selectSaga = (id: SagaId) =>
    isSagaId(id)
      ? sql`SELECT ${columns} FROM orchestrator.saga_instances WHERE id = ${id}`.pipe(
          Effect.flatMap((rows) => (rows[0] === undefined ? Effect.succeed(undefined) : toSaga(rows[0])))
        )
      : Effect.succeed(undefined)

  const lockSaga = (id: SagaId) =>
    isSagaId(id)
      ? sql`SELECT ${columns} FROM orchestrator.saga_instances WHERE id = ${id} FOR UPDATE`.pipe(
          Effect.flatMap((rows) =>
            rows[0] === undefined ? Effect.fail(new SagaNotFound({ sagaId: id })) : toSaga(rows[0])
          )
        )
      : Effect.fail(new SagaNotFound({ sagaId: id }))

  const record = (saga: SagaInstance, fromState: string | null, event: string, detail: unknown, transitionId: string) =>
    sql`
      INSERT INTO orchestrator.saga_transitions
        (saga_id, lock_version, from_state, to_state, status, event, detail, transition_id, at)
      VALUES (${saga.id}, ${saga.lockVersion}, ${fromState}, ${saga.currentState}, ${saga.status}, ${event},
              ${detail === undefined ? null : sql.json(detail)}, ${transitionId}, ${DateTime.toDateUtc(saga.updatedAt)})`

  /** A new saga's first timer, if it has one. */
  const arm = (saga: SagaInstance, timer: Timer | undefined) =>
    timer === undefined
      ? Effect.void
      : sql`
          INSERT INTO orchestrator.saga_timers (saga_id, due_at, awaiting, lock_version)
          VALUES (${saga.id}, ${DateTime.toDateUtc(timer.dueAt)}, ${sql.json(timer.awaiting)}, ${saga.lockVersion})`

  /** The outbox rows of `messages`, each with a message id of its own (the id consumers deduplicate by). */
  const outboxRows = (messages: ReadonlyArray<OutboxMessage>) =>
    Effect.forEach(messages, (message) =>
      Effect.map(random.uuidV7(), (messageId) => ({
        message_id: messageId,
        exchange: message.exchange,
        routing_key: message.routingKey,
        headers: message.headers ?? {},
        payload: message.payload
      }))
    )

  const enqueue = (saga: SagaInstance, messages: ReadonlyArray<OutboxMessage>) =>
    Effect.gen(function* () {
      const rows = (yield* outboxRows(messages)).map(
        (row): Record<string, unknown> => ({
          ...row,
          saga_id: saga.id,
          correlation_id: saga.correlationId,
          headers: sql.json(row.headers),
          payload: sql.json(row.payload)
        })
      )
      if (Arr.isReadonlyArrayNonEmpty(rows)) yield* sql`INSERT INTO orchestrator.saga_outbox ${sql.insert(rows)}`
    })

  /**
   * A step's writes as one statement, one round trip: the versioned update and, from the row it returns, the history
   * row, the timer (armed, or cleared when the step sets none) and the outbox messages in order. When the update
   * finds another version it returns no row, and nothing else is written.
   */
  const advance = (saga: SagaInstance, outcome: Advance, context: SagaContext, transitionId: string) =>
    Effect.gen(function* () {
      const { timer, detail } = outcome
      const messages = yield* outboxRows(outcome.messages ?? [])
      const timerWrite =
        timer === undefined
          ? sql`DELETE FROM orchestrator.saga_timers t USING updated u WHERE t.saga_id = u.id`
          : sql`
              INSERT INTO orchestrator.saga_timers (saga_id, due_at, awaiting, lock_version)
              SELECT id, ${DateTime.toDateUtc(timer.dueAt)}::timestamptz, ${sql.json(timer.awaiting)}::jsonb, lock_version
              FROM updated
              ON CONFLICT (saga_id) DO UPDATE
                SET due_at = excluded.due_at, awaiting = excluded.awaiting, lock_version = excluded.lock_version`
      const outboxWrite =
        messages.length === 0
          ? sql``
          : sql`, outbox AS (
              INSERT INTO orchestrator.saga_outbox
                (message_id, saga_id, correlation_id, exchange, routing_key, headers, payload)
              SELECT (m.message->>'message_id')::uuid, u.id, u.correlation_id, m.message->>'exchange',
                     m.message->>'routing_key', m.message->'headers', m.message->'payload'
              FROM updated u CROSS JOIN jsonb_array_elements(${sql.json(messages)}::jsonb) WITH ORDINALITY AS m(message, n)
              ORDER BY m.n
            )`
      return yield* sql`
        WITH updated AS (
          UPDATE orchestrator.saga_instances
          SET current_state = ${outcome.state}, status = ${outcome.status}, context = ${sql.json(context)},
              progress = ${outcome.progress === undefined ? sql`progress` : sql`${sql.json(outcome.progress)}`},
              lock_version = lock_version + 1
          WHERE id = ${saga.id} AND lock_version = ${saga.lockVersion}
          RETURNING ${columns}
        ), history AS (
          INSERT INTO orchestrator.saga_transitions
            (saga_id, lock_version, from_state, to_state, status, event, detail, transition_id, at)
          SELECT id, lock_version, ${saga.currentState}, current_state, status, ${outcome.event},
                 ${detail === undefined ? null : sql.json(detail)}::jsonb, ${transitionId}::uuid, updated_at
          FROM updated
        ), timer AS (${timerWrite})${outboxWrite}
        SELECT ${columns} FROM updated`
    })

  const loadExisting = (key: string, sagaType: string) =>
    Effect.gen(function* () {
      const rows = yield* sql<{ saga_id: string }>`
        SELECT saga_id FROM orchestrator.saga_idempotency_keys WHERE idempotency_key = ${key}`
      if (rows[0] === undefined) return undefined
      const existing = yield* lockSaga(rows[0].saga_id as SagaId).pipe(Effect.orDie)
      if (existing.sagaType !== sagaType) {
        return yield* new IdempotencyConflict({
          idempotencyKey: key,
          existingSagaId: existing.id,
          existingSagaType: existing.sagaType
        })
      }
      return existing
    })

  const create: SagaStore["Service"]["create"] = (input) =>
    Effect.gen(function* () {
      const context = yield* checkCreate(input, maxContextBytes)
      // Generated once, outside the retried transaction: a retry after a commit whose acknowledgement was lost
      // finds this id and does not start a second saga.
      const id = input.id ?? ((yield* random.uuidV7()) as SagaId)
      const transitionId = yield* random.uuidV7()
      const insert = Effect.gen(function* () {
        const key = input.idempotencyKey
        if (key !== undefined) {
          const existing = yield* loadExisting(key, input.sagaType)
          if (existing !== undefined) return { saga: existing, created: existing.id === id }
        }
        const already = yield* selectSaga(id)
        if (already !== undefined) return { saga: already, created: true }
        const inserted = yield* sql`
          INSERT INTO orchestrator.saga_instances
            (id, saga_type, current_state, status, context, progress, correlation_id)
          VALUES (${id}, ${input.sagaType}, ${input.state}, 'RUNNING', ${sql.json(context)},
                  ${sql.json(input.progress ?? {})}, ${input.correlationId ?? id})
          RETURNING ${columns}`
        const saga = yield* toSaga(inserted[0])
        if (key !== undefined) {
          const claimed = yield* sql`
            INSERT INTO orchestrator.saga_idempotency_keys (idempotency_key, saga_id) VALUES (${key}, ${id})
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING saga_id`
          if (claimed.length === 0) return yield* new KeyTaken()
        }
        yield* record(saga, null, "SagaStarted", input.detail, transitionId)
        yield* arm(saga, input.timer)
        yield* enqueue(saga, input.messages ?? [])
        return { saga, created: true }
      })
      // KeyTaken rolled the insert back; the next attempt finds the saga the concurrent create committed.
      const created = yield* inTransaction("create", insert).pipe(
        Effect.retry({ while: (e) => e._tag === "KeyTaken", times: 3 })
      )
      if ((input.messages?.length ?? 0) > 0) yield* notifications.committed
      return created
    }).pipe(
      Effect.catchTag("KeyTaken", () => Effect.die("idempotency key kept changing hands")),
      Effect.withSpan("SagaStore.create")
    )

  const get: SagaStore["Service"]["get"] = (id) =>
    selectSaga(id).pipe(
      Effect.mapError(storeFailure("get")),
      Effect.flatMap((saga) =>
        saga === undefined ? Effect.fail(new SagaNotFound({ sagaId: id })) : Effect.succeed(saga)
      )
    )

  const find: SagaStore["Service"]["find"] = (filter) =>
    Effect.gen(function* () {
      const { limit, after } = yield* checkFilter(filter)
      const conditions = [
        ...(filter.status === undefined ? [] : [sql`status = ${filter.status}`]),
        ...(filter.sagaType === undefined ? [] : [sql`saga_type = ${filter.sagaType}`]),
        ...(filter.state === undefined ? [] : [sql`current_state = ${filter.state}`]),
        ...(filter.correlationId === undefined ? [] : [sql`correlation_id = ${filter.correlationId}`]),
        ...(filter.context === undefined ? [] : [sql`context @> ${sql.json(filter.context)}`]),
        ...(after === undefined ? [] : [sql`id < ${after}`])
      ]
      // The page is cut in the database, so that no more than `pageBytes` of contexts ever reach this process: rows
      // are kept while the bytes before them stay under the budget (the first row always is).
      const rows = yield* sql<{ readonly id: string; readonly candidates: number }>`
        SELECT ${columns}, candidates FROM (
          SELECT page.*, sum(bytes) OVER (ORDER BY id DESC ROWS UNBOUNDED PRECEDING) - bytes AS before,
                 count(*) OVER () AS candidates
          FROM (
            SELECT ${columns}, octet_length(context::text) + octet_length(progress::text) AS bytes
            FROM orchestrator.saga_instances
            WHERE ${sql.and(conditions)}
            ORDER BY id DESC
            LIMIT ${limit + 1}
          ) page
        ) sized
        WHERE before < ${pageBytes}
        ORDER BY id DESC`.pipe(Effect.mapError(refusalOrFailure("find", "filter")))
      const items = yield* Effect.forEach(rows.slice(0, limit), toSaga)
      const last = items.at(-1)
      const more = Number(rows[0]?.candidates ?? 0) > items.length
      return { items, nextCursor: more && last !== undefined ? encodeCursor(last.id) : null }
    })

  const history: SagaStore["Service"]["history"] = (id) =>
    Effect.gen(function* () {
      yield* get(id)
      const rows = yield* sql`
        SELECT lock_version, from_state, to_state, status, event, detail, at
        FROM orchestrator.saga_transitions WHERE saga_id = ${id} ORDER BY lock_version`.pipe(
        Effect.mapError(storeFailure("history"))
      )
      return yield* toTransitions(rows)
    })

  const ignoredEvents: SagaStore["Service"]["ignoredEvents"] = (id) =>
    Effect.gen(function* () {
      yield* get(id)
      const rows = yield* sql`
        SELECT lock_version, event, detail, at FROM orchestrator.saga_ignored_events
        WHERE saga_id = ${id} ORDER BY id`.pipe(Effect.mapError(storeFailure("ignoredEvents")))
      return yield* toIgnoredEvents(rows)
    })

  const findStuck: SagaStore["Service"]["findStuck"] = (olderThan, options) =>
    Effect.gen(function* () {
      const rows = yield* sql`
        SELECT s.id, s.saga_type, s.current_state, s.status, s.context, s.progress, s.correlation_id, s.lock_version,
               s.created_at, s.updated_at, t.due_at AS timer_due_at, t.awaiting AS timer_awaiting
        FROM orchestrator.saga_instances s
        LEFT JOIN orchestrator.saga_timers t ON t.saga_id = s.id
        WHERE s.status IN ('RUNNING', 'COMPENSATING')
          AND s.updated_at <= now() - ${Duration.toMillis(olderThan)} * interval '1 millisecond'
        ORDER BY s.updated_at
        LIMIT ${options?.limit ?? 100}`.pipe(Effect.mapError(storeFailure("findStuck")))
      return yield* Effect.forEach(rows, toStuckSaga)
    })

  const claimDue: SagaStore["Service"]["claimDue"] = (now, limit) =>
    Effect.gen(function* () {
      const leasedUntil = DateTime.toDateUtc(DateTime.add(now, { milliseconds: Duration.toMillis(timerLease) }))
      const rows = yield* sql`
        WITH due AS (
          SELECT saga_id, due_at FROM orchestrator.saga_timers
          WHERE due_at <= ${DateTime.toDateUtc(now)}
          ORDER BY due_at
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED
        )
        UPDATE orchestrator.saga_timers t SET due_at = ${leasedUntil}
        FROM due WHERE t.saga_id = due.saga_id
        RETURNING t.saga_id, t.lock_version, due.due_at, t.awaiting`.pipe(Effect.mapError(storeFailure("claimDue")))
      const due = yield* toDueTimers(rows)
      return due.sort((a, b) => DateTime.toEpochMillis(a.dueAt) - DateTime.toEpochMillis(b.dueAt))
    })

  const transact: SagaStore["Service"]["transact"] = (id, step, options) =>
    Effect.gen(function* () {
      const transitionId = yield* random.uuidV7()
      let attempts = 0
      let enqueued = false
      const attempt = Effect.gen(function* () {
        attempts += 1
        const saga = yield* lockSaga(id)
        // A retry after an ambiguous failure (the connection died around COMMIT): if our history row is there,
        // the transaction committed and must not be applied again.
        if (attempts > 1 && (yield* wasApplied(id, transitionId))) return saga
        if (options?.expectedVersion !== undefined && options.expectedVersion !== saga.lockVersion) {
          return yield* new VersionConflict({ sagaId: id, expected: options.expectedVersion, actual: saga.lockVersion })
        }
        const outcome = yield* step(saga)
        if (outcome._tag === "Stay") {
          if (outcome.ignored !== undefined) {
            yield* checkIgnored(outcome.ignored)
            const detail = outcome.ignored.detail
            yield* sql`
              INSERT INTO orchestrator.saga_ignored_events (saga_id, lock_version, event, detail)
              VALUES (${id}, ${saga.lockVersion}, ${outcome.ignored.event},
                      ${detail === undefined ? null : sql.json(detail)})`
          }
          return saga
        }
        const context = yield* checkAdvance(outcome, maxContextBytes)
        const updated = yield* advance(saga, outcome, context, transitionId)
        if (updated[0] === undefined) {
          const current = yield* selectSaga(id)
          return yield* new VersionConflict({
            sagaId: id,
            expected: saga.lockVersion,
            actual: current?.lockVersion ?? -1
          })
        }
        enqueued = (outcome.messages?.length ?? 0) > 0
        return yield* toSaga(updated[0])
      })
      const saga = yield* inTransaction("transact", attempt)
      if (enqueued) yield* notifications.committed
      return saga
    }).pipe(Effect.withSpan("SagaStore.transact", { attributes: { "saga.id": id } }))

  // Locks the saga row before its timer's, in the order `transact` takes them, so the two never deadlock. The timer
  // must be the one armed at the saga's current version and await this very task.
  const recordHeartbeat: SagaStore["Service"]["recordHeartbeat"] = (id, taskId, heartbeat) =>
    Effect.gen(function* () {
      if (!isSagaId(id)) return false
      const progress = yield* checkProgress(heartbeat.progress).pipe(Effect.orDie)
      const dueAt = heartbeat.dueAt === undefined ? null : DateTime.toDateUtc(heartbeat.dueAt)
      const rows = yield* sql<{ readonly recorded: number }>`
        WITH saga AS (
          UPDATE orchestrator.saga_instances s SET progress = s.progress || ${sql.json(progress)}::jsonb
          WHERE s.id = ${id} AND EXISTS (
            SELECT 1 FROM orchestrator.saga_timers t
            WHERE t.saga_id = s.id AND t.lock_version = s.lock_version
              AND t.awaiting ->> '_tag' = 'Reply' AND t.awaiting ->> 'taskId' = ${taskId})
          RETURNING s.id
        ), timer AS (
          UPDATE orchestrator.saga_timers t SET due_at = COALESCE(${dueAt}::timestamptz, t.due_at)
          FROM saga WHERE t.saga_id = saga.id
          RETURNING t.saga_id
        )
        SELECT count(*)::int AS recorded FROM saga`.pipe(Effect.mapError(storeFailure("recordHeartbeat")))
      return (rows[0]?.recorded ?? 0) > 0
    }).pipe(Effect.withSpan("SagaStore.recordHeartbeat", { attributes: { "saga.id": id } }))

  const wasApplied = (id: SagaId, transitionId: string) =>
    sql`SELECT 1 FROM orchestrator.saga_transitions WHERE saga_id = ${id} AND transition_id = ${transitionId}`.pipe(
      Effect.map((rows) => rows.length > 0)
    )

  // Claimed by deleting them: the rows stay locked (other relays skip them) until the transaction ends, which commits
  // the deletion once the broker confirmed them, and restores them if publishing failed.
  const publishOutbox: SagaStore["Service"]["publishOutbox"] = (limit, publish) =>
    runOnce(
      "publishOutbox",
      Effect.gen(function* () {
        const rows = yield* sql`
          WITH claimed AS (
            DELETE FROM orchestrator.saga_outbox
            WHERE id IN (SELECT id FROM orchestrator.saga_outbox ORDER BY id LIMIT ${limit} FOR UPDATE SKIP LOCKED)
            RETURNING id, message_id, saga_id, correlation_id, exchange, routing_key, headers, payload, created_at
          )
          SELECT message_id, saga_id, correlation_id, exchange, routing_key, headers, payload, created_at
          FROM claimed ORDER BY id`
        if (rows.length === 0) return 0
        const messages = yield* toPendingMessages(rows)
        yield* publish(messages)
        return messages.length
      })
    ).pipe(
      // Only committed rows are read back: a refusal of their data would be a bug here, not bad input.
      Effect.catchTag("InvalidSagaData", (error) => Effect.die(error))
    )

  const reports = Reports.make(sql)
  const retention = Retention.make(sql)

  return SagaStore.of({
    create,
    get,
    find,
    history,
    ignoredEvents,
    findStuck,
    claimDue,
    transact,
    recordHeartbeat,
    purge: retention.purge,
    summary: reports.summary,
    countActive: reports.countActive,
    health: health(sql),
    publishOutbox
  })
})

/** The store on the `PgClient` in context. */
export const layerNoDeps = (settings: Partial<StoreSettings> = {}) =>
  Layer.effect(SagaStore, make(settings)).pipe(Layer.provide(Random.layer))

/** The store with a pool of its own on the given database, also provided (tests, tools, the operator CLI). */
export const layerDatabase = (
  db: DatabaseConfig,
  options: Partial<StoreSettings> & { readonly maxConnections?: number | undefined } = {}
) => layerNoDeps(options).pipe(Layer.provideMerge(Database.runtimeClient(db, options.maxConnections ?? 10)))

/**
 * The service's store: on the configured database or the embedded one, migrated and checked (Database.layer), with
 * outbox notifications for the relay; the pool is provided too (metrics read its connections).
 */
export const layer = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    layerNoDeps({ maxContextBytes: config.maxContextBytes, pageBytes: config.maxPageBytes })
  )
).pipe(Layer.provideMerge(outboxNotifications), Layer.provideMerge(Database.layer))
