/**
 * Publishing with confirms on one ConfirmChannel per connection. Every message has its own confirm callback, so
 * concurrent batches on the shared channel wait only for their own messages. A channel error (publishing to a missing
 * exchange closes the channel with 404) fails the batches in flight on it; the next publish opens a new channel.
 */
import type * as Amqp from "amqplib"
import { Duration, Effect, ScopedRef, Semaphore } from "effect"
import { BrokerUnavailable } from "../Broker.ts"
import { closeQuietly, describe, type WireMessage } from "./wire.ts"

export interface Publisher {
  /** Succeeds once RabbitMQ confirmed every message of the batch; any nack or a closed channel fails it. */
  readonly publish: (messages: ReadonlyArray<WireMessage>) => Effect.Effect<void, BrokerUnavailable>
}

export interface PublisherSettings {
  readonly confirmTimeout: Duration.Duration
  readonly redact: (text: string) => string
  /** Why the connection is gone, once it is: a closed channel reports that rather than just "channel closed". */
  readonly connectionLost: () => string | undefined
}

interface Returned {
  readonly exchange: string
  readonly routingKey: string
  readonly replyText: string
}

/** One confirm channel and what it has told us: its error, and the messages RabbitMQ returned as unroutable. */
interface ChannelState {
  readonly channel: Amqp.ConfirmChannel
  closed: boolean
  /** Why RabbitMQ closed the channel (e.g. 404 for a missing exchange); unset when the connection went. */
  error: string | undefined
  /** By message id; a return always arrives before the confirm of the same message. */
  readonly returned: Map<string, Returned>
}

export const make = Effect.fnUntraced(function* (connection: Amqp.ChannelModel, settings: PublisherSettings) {
  const { redact } = settings

  const open = Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        connection.createConfirmChannel().then((channel) => {
          // Listeners go on before anything else can happen: an 'error' without a listener would crash the process.
          const state: ChannelState = { channel, closed: false, error: undefined, returned: new Map() }
          channel.on("error", (error: unknown) => {
            state.error = describe(error, redact)
            state.closed = true
          })
          channel.on("close", () => {
            state.closed = true
          })
          channel.on("return", (message: Amqp.Message) => {
            const fields = message.fields as Amqp.MessageFields & { readonly replyText?: unknown }
            state.returned.set(String(message.properties.messageId ?? ""), {
              exchange: fields.exchange,
              routingKey: fields.routingKey,
              replyText: typeof fields.replyText === "string" ? fields.replyText : "NO_ROUTE"
            })
          })
          return state
        }),
      catch: (error) => new BrokerUnavailable({ reason: `cannot open a confirm channel: ${describe(error, redact)}` })
    }),
    (state) => closeQuietly(state.channel)
  )

  /** Read once amqplib has finished closing: by then the channel, or else the connection, has said why. */
  const closedReason = (state: ChannelState, error: unknown) =>
    state.error ?? settings.connectionLost() ?? describe(error, redact)

  const current = yield* ScopedRef.fromAcquire(open)
  const reopening = yield* Semaphore.make(1)

  /** The open channel, opening a new one when the last one was closed. */
  const channel = reopening.withPermit(
    Effect.gen(function* () {
      const state = yield* ScopedRef.get(current)
      if (!state.closed) return state
      yield* Effect.logInfo(`confirm channel closed (${closedReason(state, "closed")}); opening a new one`)
      yield* ScopedRef.set(current, open)
      return yield* ScopedRef.get(current)
    })
  )

  const failure = (state: ChannelState, error: unknown) =>
    Effect.suspend(() =>
      Effect.fail(new BrokerUnavailable({ reason: `publish not confirmed: ${closedReason(state, error)}` }))
    )

  const confirmed = (state: ChannelState, messages: ReadonlyArray<WireMessage>) =>
    Effect.callback<void, BrokerUnavailable>((resume) => {
      let waiting = messages.length
      let settled = false
      // `resume` runs the waiting fiber on the spot, which here would be inside amqplib's event dispatch, before it
      // has emitted the rest of a closing ('close', the connection's reason). A microtask runs after all of that.
      const settle = (effect: Effect.Effect<void, BrokerUnavailable>) => {
        settled = true
        queueMicrotask(() => resume(effect))
      }
      const onConfirm = (error: unknown) => {
        if (settled) return
        if (error === null || error === undefined) {
          if (--waiting === 0) settle(Effect.void)
          return
        }
        // A nack leaves the channel open; any other error is amqplib failing the confirms of a closed channel.
        if (!(error instanceof Error && error.message === "message nacked")) state.closed = true
        settle(failure(state, error))
      }
      for (const message of messages) {
        try {
          // The return value (false when the socket buffer is full) is not awaited: amqplib buffers the rest, and a
          // batch is bounded by its caller.
          state.channel.publish(message.exchange, message.routingKey, message.content, message.options, onConfirm)
        } catch (error) {
          // The channel closed under us, or amqplib refused to encode the message (e.g. headers over 64 KiB).
          state.closed = true
          return settle(failure(state, error))
        }
      }
    })

  /** RabbitMQ confirms an unroutable message after returning it: report it, the publish itself succeeded. */
  const reportReturned = (state: ChannelState, messages: ReadonlyArray<WireMessage>) =>
    Effect.forEach(messages, (message) => {
      const id = String(message.options.messageId ?? "")
      const returned = state.returned.get(id)
      if (returned === undefined) return Effect.void
      state.returned.delete(id)
      return Effect.logWarning(
        `unroutable message dropped by RabbitMQ (${returned.replyText}): no queue is bound to exchange ` +
          `'${returned.exchange}' for routing key '${returned.routingKey}'`
      ).pipe(Effect.annotateLogs({ messageId: id, exchange: returned.exchange, routingKey: returned.routingKey }))
    })

  const publish = (messages: ReadonlyArray<WireMessage>): Effect.Effect<void, BrokerUnavailable> =>
    messages.length === 0
      ? Effect.void
      : Effect.gen(function* () {
          const state = yield* channel
          yield* confirmed(state, messages).pipe(
            Effect.timeoutOrElse({
              duration: settings.confirmTimeout,
              orElse: () =>
                Effect.fail(
                  new BrokerUnavailable({
                    reason: `no publisher confirm within ${Duration.format(settings.confirmTimeout)}`
                  })
                )
            })
          )
          yield* reportReturned(state, messages)
        })

  return { publish } satisfies Publisher
})
