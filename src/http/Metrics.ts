/**
 * HOOK for the metrics module: the body of `GET /metrics`. The observability code provides it, e.g.
 * `Layer.succeed(MetricsText, Metrics.prometheusText)` where `prometheusText: Effect<string>` renders the Prometheus
 * text exposition format; until then the route serves a valid, empty exposition saying so.
 */
import { Context, Effect } from "effect"

export const MetricsText = Context.Reference<Effect.Effect<string>>("saga-orchestrator/http/MetricsText", {
  defaultValue: () => Effect.succeed("# saga-orchestrator: no metrics are wired into the HTTP server yet\n")
})
