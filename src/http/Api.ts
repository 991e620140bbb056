/**
 * The HTTP API v1 as an `HttpApi` definition: routes, parameters, representations and problems. It imports no
 * server code, so clients and the OpenAPI document are derived from exactly what the server serves.
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, OpenApi } from "effect/http-api"
import { SagaStatus } from "../domain/Saga.ts"
import { Authorization } from "./Api/Authorization.ts"
import * as R from "./Api/Representations.ts"
import * as Problems from "./Problems.ts"

const etag = Schema.String.annotate({ description: 'The saga\'s lock version as a strong entity tag, e.g. `"3"`' })

/** `ETag: "<lock_version>"` on responses that carry a saga. */
const withETag = <S extends Schema.Top>(schema: S) => HttpApiSchema.WithHeaders(schema, { etag })

/** A started saga: where it lives, and its ETag. */
const started = <S extends Schema.Top>(schema: S) =>
  HttpApiSchema.WithHeaders(schema, {
    etag,
    location: Schema.String.annotate({ description: "`/v1/sagas/{id}`" })
  })

const sagaIdParam = {
  id: Schema.String.annotate({ description: "The saga id (a UUID)" })
}

const ifMatch = {
  "if-match": Schema.optionalKey(
    Schema.String.annotate({ description: 'The saga\'s ETag as last read, e.g. `"3"`. Required: 428 without it' })
  )
}

/** The errors every operation on one saga may give. */
const sagaErrors = [Problems.SagaNotFound, Problems.ServiceUnavailable] as const

const start = HttpApiEndpoint.post("start", "/", {
  payload: R.StartSagaRequest,
  success: [started(R.Saga.pipe(HttpApiSchema.status(201))), started(R.Saga)],
  error: [
    Problems.UnknownSagaType,
    Problems.InvalidSagaInput,
    Problems.ContextTooLarge,
    Problems.InvalidParameter,
    Problems.IdempotencyConflict,
    Problems.ServiceUnavailable
  ]
}).annotateMerge(
  OpenApi.annotations({
    summary: "Start a saga",
    description:
      "201 with the new saga. With an `idempotencyKey` already used for this saga type, 200 with the saga it started " +
      "(nothing new is started); used for another type, 409."
  })
)

const list = HttpApiEndpoint.get("list", "/", {
  query: {
    status: Schema.optionalKey(SagaStatus),
    type: Schema.optionalKey(R.Name.annotate({ description: "Saga type" })),
    state: Schema.optionalKey(R.Name.annotate({ description: "Current state" })),
    correlationId: Schema.optionalKey(R.Name),
    context: Schema.optionalKey(
      Schema.fromJsonString(R.JsonObject).annotate({
        description: 'JSON object the context must contain (`@>`), e.g. `{"inputRef":"inputs/case-17.json"}`'
      })
    ),
    limit: Schema.optionalKey(R.PageSize.annotate({ description: "Page size, 1 to 500 (default 50)" })),
    cursor: Schema.optionalKey(Schema.String.annotate({ description: "`nextCursor` of the previous page" }))
  },
  success: R.SagaPage,
  error: [Problems.InvalidParameter, Problems.ServiceUnavailable]
}).annotateMerge(OpenApi.annotations({ summary: "Find sagas, newest first, keyset-paginated" }))

const stuck = HttpApiEndpoint.get("stuck", "/stuck", {
  query: {
    olderThan: Schema.optionalKey(
      R.IsoDuration.pipe(Schema.annotateEncoded({ description: "No change for at least this long (PT15M)" }))
    ),
    limit: Schema.optionalKey(R.PageSize.annotate({ description: "At most this many (default 100)" }))
  },
  success: R.StuckSagas,
  error: Problems.ServiceUnavailable
}).annotateMerge(
  OpenApi.annotations({ summary: "Active sagas without progress, with what each waits for (reply, timer, signal)" })
)

const get = HttpApiEndpoint.get("get", "/:id", {
  params: sagaIdParam,
  success: withETag(R.SagaWithHistory),
  error: sagaErrors
}).annotateMerge(OpenApi.annotations({ summary: "A saga with its transition history" }))

const signal = HttpApiEndpoint.post("signal", "/:id/signals/:name", {
  params: { ...sagaIdParam, name: Schema.String.annotate({ description: "Signal name, e.g. `condenser_input`" }) },
  payload: R.SignalRequest,
  success: withETag(R.Saga),
  error: [
    ...sagaErrors,
    Problems.SignalNotExpected,
    Problems.InvalidSignalData,
    Problems.ContextTooLarge,
    Problems.InvalidParameter
  ]
}).annotateMerge(
  OpenApi.annotations({
    summary: "Deliver a signal (external or human input)",
    description: "409 when the saga does not wait for this signal in its current state; 400 when the data is invalid."
  })
)

const repairErrors = [
  ...sagaErrors,
  Problems.SagaFinished,
  Problems.VersionMismatch,
  Problems.IfMatchRequired,
  Problems.InvalidParameter
] as const

const retry = HttpApiEndpoint.post("retry", "/:id/retry", {
  params: sagaIdParam,
  headers: ifMatch,
  success: withETag(R.Saga),
  error: [...repairErrors, Problems.NothingToRetry]
}).annotateMerge(
  OpenApi.annotations({
    summary: "Operator repair: send the current task again (a stuck compensation too)",
    description: 'Requires `If-Match: "<lockVersion>"`: 428 without it, 412 when the saga has changed since.'
  })
)

const cancel = HttpApiEndpoint.post("cancel", "/:id/cancel", {
  params: sagaIdParam,
  headers: ifMatch,
  success: withETag(R.Saga),
  error: repairErrors
}).annotateMerge(
  OpenApi.annotations({
    summary: "Operator repair: compensate what was done and end CANCELLED",
    description: 'Requires `If-Match: "<lockVersion>"`: 428 without it, 412 when the saga has changed since.'
  })
)

export class SagasApi extends HttpApiGroup.make("sagas")
  .add(start, list, stuck, get, signal, retry, cancel)
  .middleware(Authorization)
  .prefix("/v1/sagas")
  .annotateMerge(
    OpenApi.annotations({ title: "Sagas", description: "Start, find, inspect, signal and repair sagas" })
  ) {}

const metricsText = Schema.String.pipe(
  HttpApiSchema.asText({ contentType: "text/plain; version=0.0.4; charset=utf-8" })
)

export class OperationsApi extends HttpApiGroup.make("operations", { topLevel: true })
  .add(
    HttpApiEndpoint.get("healthz", "/healthz", { success: R.Liveness }).annotateMerge(
      OpenApi.annotations({ summary: "Liveness: the process serves requests" })
    ),
    HttpApiEndpoint.get("readyz", "/readyz", { success: R.Readiness, error: Problems.NotReady }).annotateMerge(
      OpenApi.annotations({ summary: "Readiness: database reachable, schema current, broker connected" })
    ),
    HttpApiEndpoint.get("metrics", "/metrics", { success: metricsText }).annotateMerge(
      OpenApi.annotations({ summary: "Prometheus metrics (text exposition format)" })
    )
  )
  .annotateMerge(OpenApi.annotations({ title: "Operations", description: "Probes and metrics; no token needed" })) {}

export class Api extends HttpApi.make("saga-orchestrator")
  .add(SagasApi, OperationsApi)
  // Request decoding failures (bad JSON, a missing field, a bad query parameter) as 400 problem details.
  .middleware(HttpApiMiddleware.ProblemDetails)
  // Every issue at once; an unknown body field or query parameter (a typo in `idempotencyKey`, `statu=`) is refused
  // rather than silently ignored. Headers stay lenient: requests carry many the API does not declare.
  .annotate(HttpApi.ParseOptions, { errors: "all" })
  .annotate(HttpApi.PayloadParseOptions, { errors: "all", onExcessProperty: "error" })
  .annotate(HttpApi.QueryParseOptions, { errors: "all", onExcessProperty: "error" })
  .annotateMerge(
    OpenApi.annotations({
      title: "Saga orchestrator",
      version: "1",
      description:
        "Task orchestration of the Balance+ platform: long calculation processes as durable sagas. All `/v1` routes " +
        "need `Authorization: Bearer <token>`. Errors are RFC 9457 problem details (`application/problem+json`)."
    })
  ) {}
