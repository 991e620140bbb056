/**
 * The body of `GET /metrics`. Without `layerPrometheus` the route serves a valid, empty exposition saying so (tests
 * of the API that do not look at metrics).
 */
import { Context, Effect, Layer } from "effect"
import { prometheusText } from "../observability/Metrics.ts"
import type { SagaStore } from "../store/SagaStore.ts"

export const MetricsText = Context.Reference<Effect.Effect<string>>("saga-orchestrator/http/MetricsText", {
  defaultValue: () => Effect.succeed("# saga-orchestrator: no metrics are wired into the HTTP server yet\n")
})

/**
 * The Prometheus page of src/observability/Metrics.ts, on the services where this layer is built: the store, the
 * SQL client when there is one, the stuck threshold and the metric registry.
 */
export const layerPrometheus = Layer.effect(
  MetricsText,
  Effect.map(Effect.context<SagaStore>(), (context) => Effect.provideContext(prometheusText, context))
)
