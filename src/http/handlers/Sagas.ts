/**
 * The `/v1/sagas` routes. Everything that changes a saga goes through the engine, so a request is one locked,
 * versioned transaction or nothing: input is validated before anything is written, and a refused request (bad input,
 * wrong state, stale If-Match) leaves the database as it was.
 */
import { Duration, Effect, Option, Schema } from "effect"
import { HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiSchema } from "effect/http-api"
import { type ContextTooLarge, type InvalidSagaData, SagaNotFound, type VersionConflict } from "../../domain/errors.ts"
import { SagaId, type SagaInstance } from "../../domain/Saga.ts"
import { readProgress } from "../../saga/Engine/moves.ts"
import { Engine } from "../../saga/Engine.ts"
import { SagaRegistry } from "../../saga/Registry.ts"
import { SagaStore } from "../../store/SagaStore.ts"
import * as Problems from "../Api/Problems.ts"
import * as R from "../Api/Representations.ts"
import { Api } from "../Api.ts"
import * as P from "./problems.ts"
import * as View from "./views.ts"

const defaultStuckAfter = Duration.minutes(15)
const defaultStuckLimit = 100

/** An id that is not even a UUID names no saga: 404, like any other unknown id. */
const sagaIdFrom = (id: string) =>
  Schema.decodeUnknownEffect(SagaId)(id).pipe(Effect.mapError(() => P.sagaNotFound(new SagaNotFound({ sagaId: id }))))

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
const repairFailures = {
  VersionConflict: (e: VersionConflict) => Effect.fail(P.versionMismatch(e)),
  ContextTooLarge: (e: ContextTooLarge) => Effect.die(e),
  InvalidSagaData: (e: InvalidSagaData) => Effect.die(e)
}

/** What driving an existing saga may fail with, whatever the event. */
const drivingFailures = {
  SagaNotFound: (e: SagaNotFound) => Effect.fail(P.sagaNotFound(e)),
  StoreUnavailable: P.storeUnavailable,
  UnknownDefinitionVersion: P.cannotDrive,
  CorruptProgress: P.cannotDrive
}

/** The handlers, over the Engine, SagaStore and SagaRegistry in context. */
export const layer = HttpApiBuilder.group(
  Api,
  "sagas",
  Effect.fnUntraced(function* (handlers) {
    const engine = yield* Engine
    const store = yield* SagaStore
    const registry = yield* SagaRegistry

    /** Validates the input first, so that a bad one is reported field by field. */
    const checkInput = Effect.fnUntraced(function* (sagaType: string, input: unknown) {
      const definition = yield* registry.latest(sagaType).pipe(Effect.mapError(P.unknownSagaType))
      yield* Schema.decodeUnknownEffect(definition.input)(input, { errors: "all" }).pipe(
        Effect.mapError(
          (error) =>
            new Problems.InvalidSagaInput({
              detail: `the input does not match the schema of ${sagaType}`,
              errors: P.issuesOf(error, ["payload", "input"])
            })
        )
      )
    })

    /** Field by field reasons for data a signal refused, from the signal's schema in the saga's own definition. */
    const signalIssues = (sagaId: SagaId, name: string, data: unknown, reason: string) =>
      Effect.gen(function* () {
        const instance = yield* store.get(sagaId)
        const progress = yield* readProgress(instance)
        const definition = yield* registry.get(instance.sagaType, progress.version, sagaId)
        const step = definition.steps.find((s) => s._tag === "Signal" && s.signal === name)
        if (step?._tag !== "Signal") return undefined
        const result = yield* Schema.decodeUnknownEffect(step.data)(data, { errors: "all" }).pipe(
          Effect.flip,
          Effect.option
        )
        return Option.map(result, (error) => P.issuesOf(error, ["payload", "data"])).pipe(Option.getOrUndefined)
      }).pipe(
        Effect.orElseSucceed(() => undefined),
        Effect.map((issues) => issues ?? [{ path: ["payload", "data"], message: reason }])
      )

    return handlers
      .handle("start", ({ payload }) =>
        Effect.gen(function* () {
          yield* checkInput(payload.type, payload.input)
          const { saga, created } = yield* engine
            .start(payload.type, payload.input, {
              correlationId: payload.correlationId,
              idempotencyKey: payload.idempotencyKey
            })
            .pipe(
              Effect.catchTags({
                UnknownSagaType: (e) => Effect.fail(P.unknownSagaType(e)),
                InvalidSagaInput: (e) =>
                  Effect.fail(
                    new Problems.InvalidSagaInput({
                      detail: e.message,
                      errors: [{ path: ["payload", "input"], message: e.reason }]
                    })
                  ),
                ContextTooLarge: (e) => Effect.fail(P.contextTooLarge(e, ["payload", "input"])),
                InvalidSagaData: (e) => Effect.fail(P.invalidData(e, "payload")),
                IdempotencyConflict: (e) => Effect.fail(P.idempotencyConflict(e)),
                StoreUnavailable: P.storeUnavailable
              })
            )
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
          .pipe(
            Effect.map((page) => ({ items: page.items.map(View.saga), nextCursor: page.nextCursor })),
            Effect.catchTags({
              InvalidSagaData: (e) => Effect.fail(P.invalidData(e, "query")),
              StoreUnavailable: P.storeUnavailable
            })
          )
      )
      .handle("stuck", ({ query }) => {
        const olderThan = Option.getOrElse(
          Option.flatMap(Option.fromUndefinedOr(query.olderThan), Duration.fromIso),
          () => defaultStuckAfter
        )
        return store.findStuck(olderThan, { limit: query.limit ?? defaultStuckLimit }).pipe(
          Effect.map((found) => ({
            olderThan: Option.getOrElse(Duration.formatIso(olderThan), () => "PT15M"),
            items: found.map(View.stuck)
          })),
          Effect.catchTag("StoreUnavailable", P.storeUnavailable)
        )
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
        }).pipe(
          Effect.catchTags({
            SagaNotFound: (e) => Effect.fail(P.sagaNotFound(e)),
            StoreUnavailable: P.storeUnavailable
          })
        )
      )
      .handle("signal", ({ params, payload }) =>
        Effect.gen(function* () {
          const sagaId = yield* sagaIdFrom(params.id)
          return yield* engine.signal(sagaId, params.name, payload.data).pipe(
            Effect.map(sagaResponse),
            Effect.catchTags({
              SignalNotExpected: (e) => Effect.fail(P.signalNotExpected(e)),
              InvalidSignalData: (e) =>
                signalIssues(sagaId, params.name, payload.data, e.reason).pipe(
                  Effect.flatMap((errors) => Effect.fail(new Problems.InvalidSignalData({ detail: e.message, errors })))
                ),
              ContextTooLarge: (e) => Effect.fail(P.contextTooLarge(e, ["payload", "data"])),
              InvalidSagaData: (e) => Effect.fail(P.invalidData(e, "payload")),
              // Signals take no expected version, and the saga is locked while the signal is applied.
              VersionConflict: (e) => Effect.die(e)
            })
          )
        }).pipe(Effect.catchTags(drivingFailures))
      )
      .handle("retry", ({ params, headers }) =>
        Effect.gen(function* () {
          const version = yield* expectedVersion(headers["if-match"])
          const sagaId = yield* sagaIdFrom(params.id)
          return yield* engine.retry(sagaId, version).pipe(
            Effect.map(sagaResponse),
            Effect.catchTags({
              SagaFinished: (e) => Effect.fail(P.sagaFinished(e)),
              NothingToRetry: (e) => Effect.fail(P.nothingToRetry(e)),
              ...repairFailures
            })
          )
        }).pipe(Effect.catchTags(drivingFailures))
      )
      .handle("cancel", ({ params, headers }) =>
        Effect.gen(function* () {
          const version = yield* expectedVersion(headers["if-match"])
          const sagaId = yield* sagaIdFrom(params.id)
          return yield* engine.cancel(sagaId, version).pipe(
            Effect.map(sagaResponse),
            Effect.catchTags({
              SagaFinished: (e) => Effect.fail(P.sagaFinished(e)),
              ...repairFailures
            })
          )
        }).pipe(Effect.catchTags(drivingFailures))
      )
  })
)
