/**
 * Observability test layers: a tracer that keeps every span it starts (an in-memory exporter), a metric registry of
 * the test's own, and a logger that keeps the service's JSON lines.
 */
import { Context, Effect, Layer, Logger, Metric, Option, Tracer } from "effect"
import * as Logging from "../../src/observability/Logging.ts"

export class RecordedSpans extends Context.Service<
  RecordedSpans,
  {
    /** Every span started so far, in start order; ended ones have `status._tag === "Ended"`. */
    readonly all: Effect.Effect<ReadonlyArray<Tracer.NativeSpan>>
  }
>()("test/RecordedSpans") {}

/** Effect's native spans, also kept in a list the test reads. */
export const layerRecordingTracer = Layer.effectContext(
  Effect.sync(() => {
    const spans: Array<Tracer.NativeSpan> = []
    const tracer = Tracer.make({
      span: (options) => {
        const span = new Tracer.NativeSpan(options)
        spans.push(span)
        return span
      }
    })
    return Context.make(Tracer.Tracer, tracer).pipe(
      Context.add(RecordedSpans, RecordedSpans.of({ all: Effect.sync(() => [...spans]) }))
    )
  })
)

export const spansNamed = (name: string) =>
  Effect.map(
    Effect.flatMap(RecordedSpans, (recorded) => recorded.all),
    (spans) => spans.filter((span) => span.name === name)
  )

export const parentOf = (span: Tracer.Span) => Option.getOrUndefined(span.parent)

/** A registry of the test's own, so counters start at zero. */
export const layerMetricRegistry = Layer.sync(Metric.MetricRegistry, () => new Map())

export class LogLines extends Context.Service<LogLines, { readonly lines: Effect.Effect<ReadonlyArray<string>> }>()(
  "test/LogLines"
) {}

/** The service's JSON formatter as the only logger, its lines kept for the test. */
export const layerLogCapture = Layer.unwrap(
  Effect.sync(() => {
    const lines: Array<string> = []
    const capture = Logger.map(Logging.formatJson, (line) => {
      lines.push(line)
    })
    return Layer.merge(
      Logger.layer([capture]),
      Layer.succeed(LogLines, LogLines.of({ lines: Effect.sync(() => [...lines]) }))
    )
  })
)

export const jsonLogs = Effect.map(
  Effect.flatMap(LogLines, (captured) => captured.lines),
  (lines) => lines.map((line) => JSON.parse(line) as Record<string, unknown>)
)
