/**
 * The service's outer observability layer as the configuration sets it up: spans exported with OTLP/HTTP to
 * ORCH_OTLP_ENDPOINT (here to a `fetch` that records what it is sent), nothing exported without it, and the stuck
 * threshold from ORCH_STUCK_THRESHOLD.
 */
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import { AppConfig } from "../../src/Config.ts"
import { StuckThreshold } from "../../src/observability/Metrics.ts"
import * as Observability from "../../src/observability/Observability.ts"
import { secretsDirectory } from "../utils/processes.ts"

interface Sent {
  readonly url: string
  readonly body: unknown
}

/** The service's observability layer on `env`, with a `fetch` that answers 200 and keeps what it was sent. */
const observed = (env: Record<string, string>) => {
  const sent: Array<Sent> = []
  const fetch = ((input: string | URL | Request, init?: RequestInit) => {
    const body = init?.body
    const text = typeof body === "string" ? body : new TextDecoder().decode(body as Uint8Array)
    sent.push({ url: String(input), body: JSON.parse(text) })
    return Promise.resolve(new Response(null, { status: 200 }))
  }) as typeof globalThis.fetch
  const layer = Observability.layer.pipe(
    Layer.provide(AppConfig.layer),
    Layer.provide(NodeServices.layer),
    Layer.provide(
      Layer.succeed(
        ConfigProvider.ConfigProvider,
        ConfigProvider.fromEnv({ env: { ORCH_SECRETS_DIR: secretsDirectory({}), ...env } })
      )
    ),
    Layer.provide(Layer.succeed(FetchHttpClient.Fetch, fetch))
  )
  return { sent, layer }
}

const traced = Effect.void.pipe(
  Effect.withSpan("Engine.reply", { attributes: { "saga.id": "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192" } })
)

interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: { readonly stringValue?: string } }>
}

const exportedSpans = (sent: ReadonlyArray<Sent>) =>
  sent.flatMap(
    (request) =>
      (
        request.body as {
          resourceSpans: Array<{ resource: unknown; scopeSpans: Array<{ spans: Array<OtlpSpan> }> }>
        }
      ).resourceSpans.flatMap((resource) => resource.scopeSpans.flatMap((scope) => scope.spans)) ?? []
  )

describe("Observability layer", () => {
  it.effect("takes ORCH_OTLP_ENDPOINT as a base URL, or as the traces URL itself", () =>
    Effect.gen(function* () {
      const url = (endpoint: string) => Effect.map(Observability.tracesUrl(endpoint), String)
      assert.strictEqual(yield* url("http://collector:4318"), "http://collector:4318/v1/traces")
      assert.strictEqual(yield* url("http://collector:4318/otlp/"), "http://collector:4318/otlp/v1/traces")
      assert.strictEqual(yield* url("https://collector/v1/traces"), "https://collector/v1/traces")
      const refused = yield* Effect.flip(Observability.tracesUrl("collector:4318"))
      assert.match(refused.message, /ORCH_OTLP_ENDPOINT is not an http\(s\) URL/)
    })
  )

  it.live("exports spans with OTLP/HTTP to ORCH_OTLP_ENDPOINT, attributes and service name included", () =>
    Effect.gen(function* () {
      const { sent, layer } = observed({ ORCH_OTLP_ENDPOINT: "http://collector.test:4318" })
      // Closing the layer flushes what the exporter holds.
      yield* traced.pipe(Effect.provide(layer))
      assert.isAtLeast(sent.length, 1)
      assert.isTrue(sent.every((request) => request.url === "http://collector.test:4318/v1/traces"))
      const span = exportedSpans(sent).find((s) => s.name === "Engine.reply")
      assert.isDefined(span)
      assert.match(span?.traceId ?? "", /^[0-9a-f]{32}$/)
      assert.deepInclude(span?.attributes ?? [], {
        key: "saga.id",
        value: { stringValue: "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192" }
      })
      assert.include(JSON.stringify(sent[0]?.body), '"service.name"')
      assert.include(JSON.stringify(sent[0]?.body), '"saga-orchestrator"')
    })
  )

  it.live("exports nothing without ORCH_OTLP_ENDPOINT", () =>
    Effect.gen(function* () {
      const { sent, layer } = observed({})
      yield* traced.pipe(Effect.provide(layer))
      assert.deepStrictEqual(sent, [])
    })
  )

  it.effect("gives the metrics the configured stuck threshold", () =>
    Effect.gen(function* () {
      const current = Effect.gen(function* () {
        return yield* StuckThreshold
      })
      const threshold = yield* current.pipe(Effect.provide(observed({ ORCH_STUCK_THRESHOLD: "40 minutes" }).layer))
      assert.isTrue(Duration.equals(threshold, Duration.minutes(40)))
    })
  )
})
