/**
 * The service's logs: one JSON object per line on stdout, for log collectors. Every line has `timestamp`, `level`
 * and `message`, then the log annotations as top-level fields (`sagaId`, `sagaType`, `correlationId`, `component`,
 * …), then `traceId` / `spanId` of the span it was logged in, `data` for non-text parts of the message, and `cause`.
 * Values pass through `Formatter.formatJson`, which writes `Redacted` values as `<redacted>`.
 */
import { Cause, Context, Formatter, Logger, References, Tracer } from "effect"

/** Fields every line has; an annotation of the same name is written as `annotation.<name>` instead. */
const ownFields = new Set(["timestamp", "level", "message", "data", "traceId", "spanId", "cause"])

export const formatJson: Logger.Logger<unknown, string> = Logger.make(({ message, logLevel, cause, fiber, date }) => {
  const parts = Array.isArray(message) ? message : [message]
  const text = parts.filter((part): part is string => typeof part === "string")
  const data = parts.filter((part) => typeof part !== "string")
  const entry: Record<string, unknown> = {
    timestamp: date.toISOString(),
    level: logLevel.toUpperCase(),
    message: text.join(" ")
  }
  for (const [key, value] of Object.entries(fiber.getRef(References.CurrentLogAnnotations))) {
    entry[ownFields.has(key) ? `annotation.${key}` : key] = value
  }
  if (data.length > 0) entry.data = data.length === 1 ? data[0] : data
  const span = Context.getOption(fiber.context, Tracer.ParentSpan)
  if (span._tag === "Some") {
    entry.traceId = span.value.traceId
    entry.spanId = span.value.spanId
  }
  if (cause.reasons.length > 0) entry.cause = Cause.pretty(cause)
  return Formatter.formatJson(entry)
})

/**
 * JSON lines on the console, and every log also as an event on the current span (what Effect does by default), so
 * exported traces show them.
 */
export const layer = Logger.layer([Logger.withConsoleLog(formatJson), Logger.tracerLogger])
