/**
 * Tracing and logging: the service's outermost layer, so that everything inside logs as JSON and traces into the
 * same tracer. Spans go out with OTLP/HTTP (JSON) when `ORCH_OTLP_ENDPOINT` is set and nowhere otherwise — Effect's
 * own `OtlpTracer` on the global `fetch`, no OpenTelemetry SDK needed. Also sets the metrics' stuck threshold
 * (`ORCH_STUCK_THRESHOLD`) and the least severe log level written (`ORCH_LOG_LEVEL`), both read in src/Config.ts.
 */
import { Effect, Layer, Option, References } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { AppConfig, InvalidConfig } from "../Config.ts"
import * as Logging from "./Logging.ts"
import { StuckThreshold } from "./Metrics.ts"

export const serviceName = "saga-orchestrator"

/**
 * The traces URL for an endpoint: like `OTEL_EXPORTER_OTLP_ENDPOINT`, a base URL (`http://collector:4318`) gets
 * `/v1/traces` appended; a URL that already ends in `/v1/traces` is used as it is.
 */
export const tracesUrl = (endpoint: string): Effect.Effect<URL, InvalidConfig> => {
  const url = URL.parse(endpoint)
  if (url === null || (url.protocol !== "http:" && url.protocol !== "https:")) {
    return Effect.fail(new InvalidConfig({ reason: "ORCH_OTLP_ENDPOINT is not an http(s) URL" }))
  }
  if (!url.pathname.endsWith("/v1/traces")) url.pathname = `${url.pathname.replace(/\/+$/, "")}/v1/traces`
  return Effect.succeed(url)
}

/** Exports every span to the OTLP/HTTP traces URL, in batches (and what is left when the layer closes). */
export const layerTracing = (url: URL) =>
  OtlpTracer.layer({ url: url.toString(), resource: { serviceName } }).pipe(
    Layer.provide(OtlpSerialization.layerJson),
    Layer.provide(FetchHttpClient.layer)
  )

export const layer = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    const tracing = Option.isNone(config.otlpEndpoint)
      ? Layer.empty
      : yield* tracesUrl(config.otlpEndpoint.value).pipe(
          // Without user info or query: neither belongs in a log line.
          Effect.tap((url) => Effect.logInfo(`exporting traces to ${url.origin}${url.pathname}`)),
          Effect.map(layerTracing)
        )
    return Layer.mergeAll(
      Logging.layer,
      Layer.succeed(References.MinimumLogLevel, config.logLevel),
      tracing,
      Layer.succeed(StuckThreshold, config.stuckThreshold)
    )
  })
)
