/**
 * W3C trace context on messages: every task message carries the `traceparent` of the span that decided
 * to send it, and a reply's `traceparent` makes the span that handles it part of the worker's trace.
 */
import { Context, Effect, Option, Tracer } from "effect"
import * as Headers from "effect/http/Headers"
import * as HttpTraceContext from "effect/http/HttpTraceContext"

export const traceparentHeader = "traceparent"

/** `00-<trace id>-<span id>-<flags>` of a span. */
export const traceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId.padStart(32, "0")}-${span.spanId}-${span.sampled ? "01" : "00"}`

const isPropagated = (span: Tracer.Span) =>
  !Context.get(span.annotations, Tracer.DisablePropagation) && /^[0-9a-f]{16}$/.test(span.spanId)

/** `{ traceparent }` of the current span; empty when there is none or tracing is switched off. */
export const currentHeaders: Effect.Effect<Readonly<Record<string, string>>> = Effect.currentSpan.pipe(
  Effect.map(
    (span): Readonly<Record<string, string>> => (isPropagated(span) ? { [traceparentHeader]: traceparent(span) } : {})
  ),
  Effect.orElseSucceed(() => ({}))
)

/** The remote span a message's `traceparent` names, to parent the span that handles the message; none if invalid. */
export const parentFromHeaders = (headers: Readonly<Record<string, string>>): Tracer.ExternalSpan | undefined =>
  Option.getOrUndefined(HttpTraceContext.w3c(Headers.fromInput(headers)))
