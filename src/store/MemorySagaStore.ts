/**
 * In-memory SagaStore with the same contract as the PostgreSQL one, for saga logic tests and demos. One permit
 * serialises every write, which gives the same guarantees the row lock gives on PostgreSQL.
 */
import { Clock, DateTime, Duration, Effect, Layer, Semaphore } from "effect"
import { SecureRandom } from "effect/crypto"
import { IdempotencyConflict, SagaNotFound, VersionConflict } from "../domain/errors.ts"
import {
  DueTimer,
  IgnoredEvent,
  isActive,
  type OutboxMessage,
  PendingMessage,
  type SagaId,
  SagaInstance,
  StuckSaga,
  type Timer,
  Transition
} from "../domain/Saga.ts"
import * as Random from "../random.ts"
import { type ActiveSagas, SagaStore } from "./SagaStore.ts"
import { defaultStoreSettings, type StoreSettings } from "./settings.ts"
import { checkAdvance, checkCreate, checkFilter, checkIgnored, checkProgress, encodeCursor } from "./validate.ts"

interface ArmedTimer extends Timer {
  readonly lockVersion: number
}

export const make = Effect.fnUntraced(function* (settings: Partial<StoreSettings> = {}) {
  const { maxContextBytes, timerLease, pageBytes } = { ...defaultStoreSettings, ...settings }
  const random = yield* SecureRandom.SecureRandom
  const lock = yield* Semaphore.make(1)
  const sagas = new Map<SagaId, SagaInstance>()
  const histories = new Map<SagaId, Array<Transition>>()
  const timers = new Map<SagaId, ArmedTimer>()
  const idempotencyKeys = new Map<string, { readonly sagaId: SagaId; readonly createdAt: DateTime.Utc }>()
  const ignored = new Map<SagaId, Array<IgnoredEvent>>()
  let outbox: Array<PendingMessage> = []

  const enqueue = (saga: SagaInstance, messages: ReadonlyArray<OutboxMessage>) =>
    Effect.forEach(messages, (message) =>
      random.uuidV7().pipe(
        Effect.map((messageId) =>
          outbox.push(
            new PendingMessage({
              messageId,
              sagaId: saga.id,
              correlationId: saga.correlationId,
              exchange: message.exchange,
              routingKey: message.routingKey,
              payload: message.payload,
              headers: message.headers ?? {},
              createdAt: saga.updatedAt
            })
          )
        )
      )
    )

  const arm = (saga: SagaInstance, timer: Timer | undefined) => {
    if (timer === undefined) timers.delete(saga.id)
    else timers.set(saga.id, { ...timer, lockVersion: saga.lockVersion })
  }

  const record = (saga: SagaInstance, fromState: string | null, event: string, detail: unknown) => {
    const history = histories.get(saga.id) ?? []
    history.push(
      new Transition({
        lockVersion: saga.lockVersion,
        fromState,
        toState: saga.currentState,
        status: saga.status,
        event,
        detail: (detail ?? null) as Transition["detail"],
        at: saga.updatedAt
      })
    )
    histories.set(saga.id, history)
  }

  const find = (id: SagaId): Effect.Effect<SagaInstance, SagaNotFound> => {
    const saga = sagas.get(id)
    return saga === undefined ? Effect.fail(new SagaNotFound({ sagaId: id })) : Effect.succeed(saga)
  }

  const store = SagaStore.of({
    create: (input) =>
      Effect.gen(function* () {
        const context = yield* checkCreate(input, maxContextBytes)
        const existingId =
          input.idempotencyKey === undefined ? undefined : idempotencyKeys.get(input.idempotencyKey)?.sagaId
        if (existingId !== undefined) {
          const existing = yield* Effect.orDie(find(existingId))
          if (existing.sagaType !== input.sagaType) {
            return yield* new IdempotencyConflict({
              idempotencyKey: input.idempotencyKey ?? "",
              existingSagaId: existing.id,
              existingSagaType: existing.sagaType
            })
          }
          return { saga: existing, created: false }
        }
        const id = input.id ?? ((yield* random.uuidV7()) as SagaId)
        const now = yield* DateTime.now
        const saga = new SagaInstance({
          id,
          sagaType: input.sagaType,
          currentState: input.state,
          status: "RUNNING",
          context,
          progress: input.progress ?? {},
          correlationId: input.correlationId ?? id,
          lockVersion: 0,
          createdAt: now,
          updatedAt: now
        })
        sagas.set(id, saga)
        if (input.idempotencyKey !== undefined)
          idempotencyKeys.set(input.idempotencyKey, { sagaId: id, createdAt: now })
        record(saga, null, "SagaStarted", input.detail)
        arm(saga, input.timer)
        yield* enqueue(saga, input.messages ?? [])
        return { saga, created: true }
      }).pipe(lock.withPermits(1)),

    get: find,

    find: (filter) =>
      Effect.gen(function* () {
        const { limit, after } = yield* checkFilter(filter)
        const matches = [...sagas.values()]
          .filter(
            (saga) =>
              (filter.status === undefined || saga.status === filter.status) &&
              (filter.sagaType === undefined || saga.sagaType === filter.sagaType) &&
              (filter.state === undefined || saga.currentState === filter.state) &&
              (filter.correlationId === undefined || saga.correlationId === filter.correlationId) &&
              (filter.context === undefined || contains(saga.context, filter.context)) &&
              (after === undefined || saga.id < after)
          )
          .sort((a, b) => (a.id < b.id ? 1 : -1))
        const items: Array<SagaInstance> = []
        let bytes = 0
        for (const saga of matches.slice(0, limit)) {
          if (items.length > 0 && bytes >= pageBytes) break
          items.push(saga)
          bytes += Buffer.byteLength(JSON.stringify(saga.context)) + Buffer.byteLength(JSON.stringify(saga.progress))
        }
        const last = items.at(-1)
        return { items, nextCursor: matches.length > items.length && last ? encodeCursor(last.id) : null }
      }),

    history: (id) => find(id).pipe(Effect.map(() => histories.get(id) ?? [])),

    ignoredEvents: (id) => find(id).pipe(Effect.map(() => ignored.get(id) ?? [])),

    findStuck: (olderThan, options) =>
      Effect.gen(function* () {
        const cutoff = (yield* Clock.currentTimeMillis) - Duration.toMillis(olderThan)
        return [...sagas.values()]
          .filter((saga) => isActive(saga.status) && DateTime.toEpochMillis(saga.updatedAt) <= cutoff)
          .sort((a, b) => DateTime.toEpochMillis(a.updatedAt) - DateTime.toEpochMillis(b.updatedAt))
          .slice(0, options?.limit ?? 100)
          .map((saga) => {
            const armed = timers.get(saga.id)
            return new StuckSaga({
              saga,
              timer: armed === undefined ? null : { dueAt: armed.dueAt, awaiting: armed.awaiting }
            })
          })
      }),

    claimDue: (now, limit) =>
      Effect.sync(() => {
        const due = [...timers.entries()]
          .filter(([, timer]) => DateTime.isLessThanOrEqualTo(timer.dueAt, now))
          .sort(([, a], [, b]) => DateTime.toEpochMillis(a.dueAt) - DateTime.toEpochMillis(b.dueAt))
          .slice(0, limit)
        const leasedUntil = DateTime.add(now, { milliseconds: Duration.toMillis(timerLease) })
        return due.map(([sagaId, timer]) => {
          timers.set(sagaId, { ...timer, dueAt: leasedUntil })
          return new DueTimer({ sagaId, lockVersion: timer.lockVersion, dueAt: timer.dueAt, awaiting: timer.awaiting })
        })
      }).pipe(lock.withPermits(1)),

    recordHeartbeat: (id, taskId, heartbeat) =>
      Effect.gen(function* () {
        const saga = sagas.get(id)
        const timer = timers.get(id)
        if (
          saga === undefined ||
          timer === undefined ||
          timer.lockVersion !== saga.lockVersion ||
          timer.awaiting._tag !== "Reply" ||
          timer.awaiting.taskId !== taskId
        ) {
          return false
        }
        const progress = yield* checkProgress(heartbeat.progress)
        sagas.set(
          id,
          new SagaInstance({ ...saga, progress: { ...saga.progress, ...progress }, updatedAt: yield* DateTime.now })
        )
        if (heartbeat.dueAt !== undefined) timers.set(id, { ...timer, dueAt: heartbeat.dueAt })
        return true
      }).pipe(Effect.orDie, lock.withPermits(1)),

    transact: (id, step, options) =>
      Effect.gen(function* () {
        const saga = yield* find(id)
        if (options?.expectedVersion !== undefined && options.expectedVersion !== saga.lockVersion) {
          return yield* new VersionConflict({ sagaId: id, expected: options.expectedVersion, actual: saga.lockVersion })
        }
        const outcome = yield* step(saga)
        if (outcome._tag === "Stay") {
          if (outcome.ignored !== undefined) {
            yield* checkIgnored(outcome.ignored)
            const list = ignored.get(id) ?? []
            list.push(
              new IgnoredEvent({
                lockVersion: saga.lockVersion,
                event: outcome.ignored.event,
                detail: (outcome.ignored.detail ?? null) as IgnoredEvent["detail"],
                at: yield* DateTime.now
              })
            )
            ignored.set(id, list)
          }
          return saga
        }
        const context = yield* checkAdvance(outcome, maxContextBytes)
        const next = new SagaInstance({
          ...saga,
          currentState: outcome.state,
          status: outcome.status,
          context,
          progress: outcome.progress ?? saga.progress,
          lockVersion: saga.lockVersion + 1,
          updatedAt: yield* DateTime.now
        })
        sagas.set(id, next)
        record(next, saga.currentState, outcome.event, outcome.detail)
        arm(next, outcome.timer)
        yield* enqueue(next, outcome.messages ?? [])
        return next
      }).pipe(lock.withPermits(1)),

    purge: ({ finishedBefore, limit, dryRun }) =>
      Effect.sync(() => {
        const before = (at: DateTime.Utc) => DateTime.isLessThan(at, finishedBefore)
        const doomed = [...sagas.values()]
          .filter((saga) => !isActive(saga.status) && before(saga.updatedAt))
          .sort((a, b) => DateTime.toEpochMillis(a.updatedAt) - DateTime.toEpochMillis(b.updatedAt))
        const expired = [...idempotencyKeys].filter(([, key]) => before(key.createdAt))
        if (dryRun === true) return { sagas: doomed.length, idempotencyKeys: expired.length, busy: false }
        const sagasGone = doomed.slice(0, limit)
        for (const saga of sagasGone) {
          sagas.delete(saga.id)
          histories.delete(saga.id)
          timers.delete(saga.id)
          ignored.delete(saga.id)
          for (const [key, { sagaId }] of idempotencyKeys) if (sagaId === saga.id) idempotencyKeys.delete(key)
        }
        const keysGone = expired.filter(([key]) => idempotencyKeys.has(key)).slice(0, limit)
        for (const [key] of keysGone) idempotencyKeys.delete(key)
        return { sagas: sagasGone.length, idempotencyKeys: keysGone.length, busy: false }
      }).pipe(lock.withPermits(1)),

    summary: Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const byStatus = { RUNNING: 0, COMPENSATING: 0, COMPLETED: 0, FAILED: 0, CANCELLED: 0 }
      for (const saga of sagas.values()) byStatus[saga.status] += 1
      const oldest = outbox[0]
      const outboxLagMillis = oldest === undefined ? 0 : Math.max(0, now - DateTime.toEpochMillis(oldest.createdAt))
      return { byStatus, outboxPending: outbox.length, outboxLagMillis }
    }),

    countActive: (stuckAfter) =>
      Effect.gen(function* () {
        const cutoff = (yield* Clock.currentTimeMillis) - Duration.toMillis(stuckAfter)
        const groups = new Map<string, ActiveSagas>()
        for (const saga of sagas.values()) {
          if (!isActive(saga.status)) continue
          const key = JSON.stringify([saga.sagaType, saga.status, saga.currentState])
          const group = groups.get(key) ?? {
            sagaType: saga.sagaType,
            status: saga.status,
            state: saga.currentState,
            count: 0,
            stuck: 0
          }
          const stuck = DateTime.toEpochMillis(saga.updatedAt) <= cutoff ? 1 : 0
          groups.set(key, { ...group, count: group.count + 1, stuck: group.stuck + stuck })
        }
        return [...groups.values()]
      }),

    // Nothing to reach and no schema: always healthy.
    health: Effect.succeed({ database: { ok: true }, schema: { ok: true } }),

    publishOutbox: (limit, publish) =>
      Effect.gen(function* () {
        const batch = outbox.slice(0, limit)
        if (batch.length === 0) return 0
        yield* publish(batch)
        const published = new Set(batch.map((message) => message.messageId))
        outbox = outbox.filter((message) => !published.has(message.messageId))
        return batch.length
      }).pipe(lock.withPermits(1))
  })
  return store
})

/** `jsonb @>` semantics for objects, arrays and scalars. */
const contains = (value: unknown, pattern: unknown): boolean => {
  if (Array.isArray(pattern)) {
    return Array.isArray(value) && pattern.every((item) => value.some((candidate) => contains(candidate, item)))
  }
  if (pattern !== null && typeof pattern === "object") {
    if (value === null || typeof value !== "object" || Array.isArray(value)) return false
    const record = value as Readonly<Record<string, unknown>>
    return Object.entries(pattern).every(([key, item]) => key in record && contains(record[key], item))
  }
  return value === pattern
}

export const layerMemory = (settings: Partial<StoreSettings> = {}): Layer.Layer<SagaStore> =>
  Layer.effect(SagaStore, make(settings)).pipe(Layer.provide(Random.layer))
