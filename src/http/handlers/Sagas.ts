/**
 * The `/v1/sagas` routes. Everything that changes a saga goes through the engine, so a request is one locked,
 * versioned transaction or nothing: input is validated before anything is written, and a refused request (bad input,
 * wrong state, stale If-Match) leaves the database as it was.
 */
import { Duration, Effect, Schema } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiSchema } from "effect/http-api"
import { SagaNotFound } from "../../domain/errors.ts"
import { SagaId, type SagaInstance } from "../../domain/Saga.ts"
import { Engine } from "../../saga/Engine.ts"
import { SagaStore } from "../../store/SagaStore.ts"
import * as R from "../Api/Representations.ts"
import { Api } from "../Api.ts"
import * as Problems from "../Problems.ts"
import * as View from "./views.ts"

const defaultStuckAfter = Duration.minutes(15)
const defaultStuckLimit = 100

/** An id that is not even a UUID names no saga: 404, like any other unknown id. */
const sagaIdFrom = (id: string) =>
  Schema.decodeUnknownEffect(SagaId)(id).pipe(Effect.mapError(() => new SagaNotFound({ sagaId: id })))

const ifMatchIssue = (message: string) =>
  new Problems.InvalidParameter({
    detail: `If-Match: ${message}`,
    errors: [{ path: ["headers", "if-match"], message }]
  })

/**
 * The version an operator's repair was decided on: `If-Match: "<lock_version>"`, one strong entity tag. `*` and
 * lists are refused: a repair must name the state it was decided on.
 */
const expectedVersion = (header: string | undefined) => {
  if (header === undefined) {
    return Effect.fail(
      new Problems.IfMatchRequired({
        detail: 'send If-Match with the saga\'s ETag as last read (GET /v1/sagas/{id}), e.g. If-Match: "3"'
      })
    )
  }
  const match = /^\s*"(\d{1,9})"\s*$/.exec(header)
  if (match?.[1] === undefined) {
    return Effect.fail(ifMatchIssue('expected the saga\'s ETag, one strong entity tag such as "3"'))
  }
  return Effect.succeed(Number(match[1]))
}

const sagaResponse = (instance: SagaInstance) =>
  HttpApiSchema.withHeaders({ body: View.saga(instance), headers: { etag: View.etag(instance) } })

const encodeSaga = Schema.encodeSync(R.Saga)

/**
 * A repair names the version it was decided on (412 when the saga moved on) and carries no data: a context the engine
 * itself made too large or invalid is a bug, not bad input.
 */
const isBug = <E extends { readonly _tag: string }>(
  error: E
): error is Extract<E, { readonly _tag: "ContextTooLarge" | "InvalidSagaData" }> =>
  error._tag === "ContextTooLarge" || error._tag === "InvalidSagaData"

const repair = <E extends Effect.Error<ReturnType<Engine["Service"]["retry"]>>>(
  id: string,
  ifMatch: string | undefined,
  act: (sagaId: SagaId, expectedVersion: number) => Effect.Effect<SagaInstance, E>
) =>
  Effect.gen(function* () {
    const version = yield* expectedVersion(ifMatch)
    return yield* sagaIdFrom(id).pipe(
      Effect.flatMap((sagaId) => act(sagaId, version)),
      Effect.map(sagaResponse),
      Effect.catchIf(isBug, (error) => Effect.die(error)),
      Problems.refusals()
    )
  })

/** The handlers, over the Engine and SagaStore in context. */
export const layer = HttpApiBuilder.group(
  Api,
  "sagas",
  Effect.fnUntraced(function* (handlers) {
    const engine = yield* Engine
    const store = yield* SagaStore

    return handlers
      .handle("start", ({ payload }) =>
        Effect.gen(function* () {
          const { saga, created } = yield* engine
            .start(payload.type, payload.input, {
              correlationId: payload.correlationId,
              idempotencyKey: payload.idempotencyKey
            })
            .pipe(Problems.refusals({ data: ["payload", "input"] }))
          const headers = { etag: View.etag(saga), location: `/v1/sagas/${saga.id}` }
          if (created) return HttpApiSchema.withHeaders({ body: View.saga(saga), headers })
          // The key had already started this saga: the same representation, 200 instead of 201.
          return HttpServerResponse.jsonUnsafe(encodeSaga(View.saga(saga)), { status: 200, headers })
        })
      )
      .handle("list", ({ query }) =>
        store
          .find({
            status: query.status,
            sagaType: query.type,
            state: query.state,
            correlationId: query.correlationId,
            context: query.context,
            limit: query.limit,
            cursor: query.cursor
          })
          .pipe(Effect.map(View.page), Problems.refusals({ fields: "query" }))
      )
      .handle("stuck", ({ query }) => {
        const olderThan = query.olderThan ?? defaultStuckAfter
        return store
          .findStuck(olderThan, { limit: query.limit ?? defaultStuckLimit })
          .pipe(Effect.map(View.stuckSagas(olderThan)), Problems.refusals())
      })
      .handle("get", ({ params }) =>
        Effect.gen(function* () {
          const sagaId = yield* sagaIdFrom(params.id)
          const instance = yield* store.get(sagaId)
          const history = yield* store.history(sagaId)
          return HttpApiSchema.withHeaders({
            body: View.withHistory(instance, history),
            headers: { etag: View.etag(instance) }
          })
        }).pipe(Problems.refusals())
      )
      .handle("signal", ({ params, payload }) =>
        sagaIdFrom(params.id).pipe(
          Effect.flatMap((sagaId) => engine.signal(sagaId, params.name, payload.data)),
          Effect.map(sagaResponse),
          // Signals take no expected version, and the saga is locked while the signal is applied.
          Effect.catchTag("VersionConflict", Effect.die),
          Problems.refusals({ data: ["payload", "data"] })
        )
      )
      .handle("retry", ({ params, headers }) => repair(params.id, headers["if-match"], engine.retry))
      .handle("cancel", ({ params, headers }) => repair(params.id, headers["if-match"], engine.cancel))
  })
)
