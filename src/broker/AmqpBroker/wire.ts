/**
 * Mapping between the port's messages and amqplib's, and error texts that are safe to log: an amqplib error message
 * never carries the password, but every text that leaves this adapter goes through `redact` all the same.
 */
import type * as Amqp from "amqplib"
import { Effect } from "effect"
import { deadLetterReasonHeader, isCancellationRoutingKey } from "../../domain/Messages.ts"
import type { Delivery, OutgoingMessage } from "../Broker.ts"

/** A message ready for `ConfirmChannel.publish`. */
export interface WireMessage {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: Amqp.Options.Publish
}

/**
 * Persistent, JSON, with message and correlation ids. `mandatory`: a message no queue is bound for comes back in a
 * `basic.return` instead of vanishing, so it can at least be reported — except cancellation notices, which workers
 * subscribe to by choice: one nobody listens for is simply dropped.
 */
export const toWire = (message: OutgoingMessage): WireMessage => ({
  exchange: message.exchange,
  routingKey: message.routingKey,
  content: Buffer.from(message.body, "utf8"),
  options: {
    persistent: true,
    mandatory: !isCancellationRoutingKey(message.routingKey),
    contentType: "application/json",
    messageId: message.messageId,
    correlationId: message.correlationId,
    headers: { ...message.headers }
  }
})

/**
 * A header value as the port's string. AMQP tables carry typed values: text stays as it is, numbers and booleans are
 * printed, byte arrays are read as UTF-8, anything else (arrays such as `x-death`, tables, timestamps) becomes JSON.
 */
export const headerText = (value: unknown): string => {
  if (typeof value === "string") return value
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") return String(value)
  if (Buffer.isBuffer(value)) return value.toString("utf8")
  if (value === null || value === undefined) return ""
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v))
}

const optionalText = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined)

/** The body is handed over as text, whatever it contains: decoding it is the consumer's job. */
export const toDelivery = (message: Amqp.ConsumeMessage): Delivery => {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(message.properties.headers ?? {})) headers[name] = headerText(value)
  return {
    exchange: message.fields.exchange,
    routingKey: message.fields.routingKey,
    messageId: optionalText(message.properties.messageId),
    correlationId: optionalText(message.properties.correlationId),
    headers,
    body: message.content.toString("utf8"),
    redelivered: message.fields.redelivered
  }
}

/**
 * The copy of a received message for the dead-letter exchange: the same routing key, body bytes and properties, the
 * original headers (with their AMQP types) plus the reason. Left out: `userId`, which RabbitMQ checks against the
 * publishing connection's user and would refuse, and `expiration`, so the copy does not expire in the DLQ (RabbitMQ's
 * own dead-lettering drops it too). The copy is always persistent.
 */
export const deadLetterCopy = (message: Amqp.Message, exchange: string, reason: string): WireMessage => {
  const p = message.properties
  const options: Amqp.Options.Publish = {
    persistent: true,
    mandatory: true,
    headers: { ...p.headers, [deadLetterReasonHeader]: reason }
  }
  if (p.contentType !== undefined) options.contentType = p.contentType
  if (p.contentEncoding !== undefined) options.contentEncoding = p.contentEncoding
  if (p.priority !== undefined) options.priority = p.priority
  if (p.correlationId !== undefined) options.correlationId = p.correlationId
  if (p.replyTo !== undefined) options.replyTo = p.replyTo
  if (p.messageId !== undefined) options.messageId = p.messageId
  if (p.timestamp !== undefined) options.timestamp = p.timestamp
  if (p.type !== undefined) options.type = p.type
  if (p.appId !== undefined) options.appId = p.appId
  return { exchange, routingKey: message.fields.routingKey, content: message.content, options }
}

/** The AMQP reply code of a channel or connection error (404 NOT_FOUND, 403 ACCESS_REFUSED, …), when it has one. */
export const replyCode = (error: unknown): number | undefined => {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined
  return typeof error.code === "number" ? error.code : undefined
}

/** An error's message with every occurrence of the secrets replaced. */
export const describe = (error: unknown, redact: (text: string) => string): string =>
  redact(error instanceof Error ? error.message : String(error))

export const redactor =
  (secrets: ReadonlyArray<string>) =>
  (text: string): string =>
    secrets.reduce((redacted, secret) => (secret === "" ? redacted : redacted.split(secret).join("***")), text)

/** Closes quietly: closing what RabbitMQ already closed throws, and a dead socket may never answer. */
export const closeQuietly = (closable: { close(): Promise<void> }) =>
  Effect.promise(() => closable.close().catch(() => undefined)).pipe(Effect.timeout("5 seconds"), Effect.ignore)
