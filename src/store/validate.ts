/**
 * Checks shared by every SagaStore layer, so bad input is refused the same way in memory and on PostgreSQL, and
 * before anything is written.
 */
import { Effect, Schema } from "effect"
import { ContextTooLarge, InvalidSagaData } from "../domain/errors.ts"
import { OutboxMessage, SagaContext, SagaId, SagaStatus, Timer } from "../domain/Saga.ts"
import type { CreateSaga, SagaFilter, StepOutcome } from "./SagaStore.ts"

export const defaultPageSize = 50
export const maxPageSize = 500

const invalid = (field: string) => (error: { readonly message: string }) =>
  new InvalidSagaData({ field, reason: error.message })

const decode =
  <S extends Schema.Decoder<unknown>>(schema: S, field: string) =>
  (input: unknown): Effect.Effect<S["Type"], InvalidSagaData> =>
    Schema.decodeUnknownEffect(schema)(input).pipe(Effect.mapError(invalid(field)))

const nonEmpty = (field: string) => decode(Schema.NonEmptyString, field)

/** A context must be a JSON object whose serialized form fits the limit. */
export const checkContext = Effect.fnUntraced(function* (context: unknown, limit: number) {
  const json = yield* Effect.try({
    try: () => JSON.stringify(context),
    catch: (cause) => new InvalidSagaData({ field: "context", reason: `not serializable as JSON: ${String(cause)}` })
  })
  const valid = yield* decode(SagaContext, "context")(context)
  const bytes = Buffer.byteLength(json, "utf8")
  if (bytes > limit) return yield* new ContextTooLarge({ bytes, limit })
  return valid
})

const checkMessages = decode(Schema.Array(OutboxMessage), "messages")
const checkTimer = decode(Schema.UndefinedOr(Timer), "timer")

export const checkCreate = Effect.fnUntraced(function* (input: CreateSaga, contextLimit: number) {
  if (input.id !== undefined) yield* decode(SagaId, "id")(input.id)
  yield* nonEmpty("sagaType")(input.sagaType)
  yield* nonEmpty("state")(input.state)
  if (input.correlationId !== undefined) yield* nonEmpty("correlationId")(input.correlationId)
  if (input.idempotencyKey !== undefined) yield* nonEmpty("idempotencyKey")(input.idempotencyKey)
  yield* checkMessages(input.messages ?? [])
  yield* checkTimer(input.timer)
  if (input.detail !== undefined) yield* decode(Schema.Json, "detail")(input.detail)
  return yield* checkContext(input.context, contextLimit)
})

export type Advance = Extract<StepOutcome, { readonly _tag: "Advance" }>

export const checkAdvance = Effect.fnUntraced(function* (outcome: Advance, contextLimit: number) {
  yield* nonEmpty("state")(outcome.state)
  yield* decode(SagaStatus, "status")(outcome.status)
  yield* nonEmpty("event")(outcome.event)
  if (outcome.detail !== undefined) yield* decode(Schema.Json, "detail")(outcome.detail)
  yield* checkMessages(outcome.messages ?? [])
  yield* checkTimer(outcome.timer)
  return yield* checkContext(outcome.context, contextLimit)
})

export const checkIgnored = Effect.fnUntraced(function* (ignored: {
  readonly event: string
  readonly detail?: unknown
}) {
  yield* nonEmpty("event")(ignored.event)
  if (ignored.detail !== undefined) yield* decode(Schema.Json, "detail")(ignored.detail)
})

/** Cursors are opaque to clients: the id of the last saga on the previous page. */
export const encodeCursor = (id: SagaId): string => Buffer.from(id, "utf8").toString("base64url")

export const checkFilter = Effect.fnUntraced(function* (filter: SagaFilter) {
  const limit = filter.limit ?? defaultPageSize
  if (!Number.isInteger(limit) || limit < 1 || limit > maxPageSize) {
    return yield* new InvalidSagaData({ field: "limit", reason: `must be an integer from 1 to ${maxPageSize}` })
  }
  if (filter.status !== undefined) yield* decode(SagaStatus, "status")(filter.status)
  if (filter.context !== undefined) yield* decode(SagaContext, "context")(filter.context)
  const after =
    filter.cursor === undefined
      ? undefined
      : yield* decode(
          SagaId,
          "cursor"
        )(Buffer.from(filter.cursor, "base64url").toString("utf8")).pipe(
          Effect.mapError(() => new InvalidSagaData({ field: "cursor", reason: "not a cursor returned by this API" }))
        )
  return { limit, after }
})
