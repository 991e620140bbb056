/**
 * The HTTP server of the service: the API of src/http/Api.ts with its handlers, the OpenAPI document at
 * `/openapi.json`, a docs page at `/docs`, and problem details for every 4xx, on NodeHttpServer at ORCH_HTTP_PORT.
 */
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { HttpApiBuilder, HttpApiMiddleware, HttpApiScalar } from "effect/http-api"
import { AppConfig } from "../Config.ts"
import { Api } from "./Api.ts"
import { ApiTokens, layerAuthorization } from "./ApiTokens.ts"
import * as Operations from "./handlers/Operations.ts"
import * as Sagas from "./handlers/Sagas.ts"
import * as ProblemResponses from "./Problems/responses.ts"

/** The endpoints' middleware: bearer tokens, and request decoding failures as 400 problems naming the field. */
const middleware = Layer.mergeAll(layerAuthorization, HttpApiMiddleware.layerProblemDetails({ includeDetails: true }))

/**
 * Every route, over the Engine, SagaStore, SagaRegistry, Broker and ApiTokens in context (and the MetricsText
 * hook, when provided).
 */
export const routes = Layer.mergeAll(
  HttpApiBuilder.layer(Api, { openapiPath: "/openapi.json" }).pipe(
    Layer.provide(Layer.mergeAll(Sagas.layer, Operations.layer).pipe(Layer.provide(middleware)))
  ),
  HttpApiScalar.layer(Api, { path: "/docs" }),
  ProblemResponses.layer
)

/** Node's HTTP server, answering what its own parser refuses as a problem too. */
const server = () => createServer().on("clientError", ProblemResponses.onClientError)

/** Serves the routes on a port (0: any free one; `HttpServer.address` says which). */
export const layerPort = (port: number) =>
  HttpRouter.serve(routes).pipe(Layer.provideMerge(NodeHttpServer.layer(server, { port })))

/** The service's server: ORCH_HTTP_PORT, and the tokens of the `api_tokens` secret file. */
export const layer = Layer.unwrap(Effect.map(AppConfig, (config) => layerPort(config.httpPort))).pipe(
  Layer.provide(ApiTokens.layer)
)
