/**
 * Checks shared by every SagaStore layer, so bad input is refused the same way in memory and on PostgreSQL, and
 * before anything is written — including what PostgreSQL itself would refuse (see `Storable.ts`), so that it is
 * reported as bad data, with its path, and never reaches the database to look like an outage there.
 */
import { Effect, Schema } from "effect"
import { ContextTooLarge, InvalidSagaData } from "../domain/errors.ts"
import { OutboxMessage, SagaContext, SagaId, SagaProgress, SagaStatus, Timer } from "../domain/Saga.ts"
import { StorableString, storable } from "../domain/Storable.ts"
import type { CreateSaga, SagaFilter, StepOutcome } from "./SagaStore.ts"

export const defaultPageSize = 50
export const maxPageSize = 500

const invalid = (field: string) => (error: { readonly message: string }) =>
  new InvalidSagaData({ field, reason: error.message })

/** A check of `field` against `schema`, its decoder built once. */
const decode = <S extends Schema.Decoder<unknown>>(schema: S, field: string) => {
  const decodeField = Schema.decodeUnknownEffect(schema)
  const fail = invalid(field)
  return (input: unknown): Effect.Effect<S["Type"], InvalidSagaData> => Effect.mapError(decodeField(input), fail)
}

/** Text PostgreSQL can store, not empty. */
const Text = StorableString.check(Schema.isNonEmpty())

const checkId = decode(SagaId, "id")
const checkSagaType = decode(Text, "sagaType")
const checkState = decode(Text, "state")
const checkStatus = decode(SagaStatus, "status")
const checkEvent = decode(Text, "event")
const checkCorrelationId = decode(Text, "correlationId")
const checkIdempotencyKey = decode(Text, "idempotencyKey")
const checkDetail = decode(Schema.Json.check(storable), "detail")
const checkContextShape = decode(SagaContext.check(storable), "context")
export const checkProgress = decode(SagaProgress.check(storable), "progress")
const checkMessages = decode(Schema.Array(OutboxMessage), "messages")
const checkTimer = decode(Schema.UndefinedOr(Timer), "timer")

/** A context must be a JSON object whose serialized form fits the limit (the engine's progress does not count). */
export const checkContext = Effect.fnUntraced(function* (context: unknown, limit: number) {
  const json = yield* Effect.try({
    try: () => JSON.stringify(context),
    catch: (cause) => new InvalidSagaData({ field: "context", reason: `not serializable as JSON: ${String(cause)}` })
  })
  const valid = yield* checkContextShape(context)
  const bytes = Buffer.byteLength(json, "utf8")
  if (bytes > limit) return yield* new ContextTooLarge({ bytes, limit })
  return valid
})

export const checkCreate = Effect.fnUntraced(function* (input: CreateSaga, contextLimit: number) {
  if (input.id !== undefined) yield* checkId(input.id)
  yield* checkSagaType(input.sagaType)
  yield* checkState(input.state)
  if (input.correlationId !== undefined) yield* checkCorrelationId(input.correlationId)
  if (input.idempotencyKey !== undefined) yield* checkIdempotencyKey(input.idempotencyKey)
  yield* checkMessages(input.messages ?? [])
  yield* checkTimer(input.timer)
  if (input.detail !== undefined) yield* checkDetail(input.detail)
  if (input.progress !== undefined) yield* checkProgress(input.progress)
  return yield* checkContext(input.context, contextLimit)
})

export type Advance = Extract<StepOutcome, { readonly _tag: "Advance" }>

export const checkAdvance = Effect.fnUntraced(function* (outcome: Advance, contextLimit: number) {
  yield* checkState(outcome.state)
  yield* checkStatus(outcome.status)
  yield* checkEvent(outcome.event)
  if (outcome.detail !== undefined) yield* checkDetail(outcome.detail)
  yield* checkMessages(outcome.messages ?? [])
  yield* checkTimer(outcome.timer)
  if (outcome.progress !== undefined) yield* checkProgress(outcome.progress)
  return yield* checkContext(outcome.context, contextLimit)
})

export const checkIgnored = Effect.fnUntraced(function* (ignored: {
  readonly event: string
  readonly detail?: unknown
}) {
  yield* checkEvent(ignored.event)
  if (ignored.detail !== undefined) yield* checkDetail(ignored.detail)
})

/** Cursors are opaque to clients: the id of the last saga on the previous page. */
export const encodeCursor = (id: SagaId): string => Buffer.from(id, "utf8").toString("base64url")

export const checkFilter = Effect.fnUntraced(function* (filter: SagaFilter) {
  const limit = filter.limit ?? defaultPageSize
  if (!Number.isInteger(limit) || limit < 1 || limit > maxPageSize) {
    return yield* new InvalidSagaData({ field: "limit", reason: `must be an integer from 1 to ${maxPageSize}` })
  }
  if (filter.status !== undefined) yield* checkStatus(filter.status)
  if (filter.context !== undefined) yield* checkContextShape(filter.context)
  const after =
    filter.cursor === undefined
      ? undefined
      : yield* checkId(Buffer.from(filter.cursor, "base64url").toString("utf8")).pipe(
          Effect.mapError(() => new InvalidSagaData({ field: "cursor", reason: "not a cursor returned by this API" }))
        )
  return { limit, after }
})
