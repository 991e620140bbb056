/**
 * The outbox relay: publishes committed outbox messages with publisher confirms and deletes them once confirmed.
 * A crash between confirm and delete publishes a message again — delivery is at least once, and every consumer
 * deduplicates by message id / task id. Several relays may run at once: batches are claimed with SKIP LOCKED.
 */
import { Clock, Duration, Effect, Layer, Option, Schedule } from "effect"
import type { PendingMessage } from "../domain/Saga.ts"
import * as TraceContext from "../observability/TraceContext.ts"
import { OutboxNotifications } from "../store/OutboxNotifications.ts"
import { SagaStore } from "../store/SagaStore.ts"
import { Broker, type OutgoingMessage } from "./Broker.ts"

export interface RelaySettings {
  readonly batchSize: number
  /** How long the relay waits before looking again when the outbox was empty and no commit woke it. */
  readonly idleDelay: Duration.Input
}

export const defaultRelaySettings: RelaySettings = { batchSize: 200, idleDelay: "100 millis" }

export const toOutgoing = (message: PendingMessage): OutgoingMessage => ({
  exchange: message.exchange,
  routingKey: message.routingKey,
  messageId: message.messageId,
  correlationId: message.correlationId,
  headers: message.headers,
  body: JSON.stringify(message.payload)
})

/**
 * A producer span per message around the batch's confirmed publish, each a child of the span that decided to send
 * the message (its `traceparent`), so a trace shows how long a task waited in the outbox. The headers go out as
 * they were committed: the worker continues from the deciding span.
 */
const withPublishSpans = <E, R>(messages: ReadonlyArray<PendingMessage>, publish: Effect.Effect<void, E, R>) =>
  Effect.gen(function* () {
    const spans = yield* Effect.forEach(messages, (message) =>
      Effect.makeSpan("OutboxRelay.publish", {
        kind: "producer",
        parent: TraceContext.parentFromHeaders(message.headers),
        attributes: {
          "messaging.system": "rabbitmq",
          "messaging.operation.type": "send",
          "messaging.destination.name": message.exchange,
          "messaging.rabbitmq.destination.routing_key": message.routingKey,
          "messaging.message.id": message.messageId,
          "messaging.message.conversation_id": message.correlationId,
          "saga.id": message.sagaId,
          "correlation.id": message.correlationId
        }
      })
    )
    return yield* publish.pipe(
      Effect.onExit((exit) =>
        Effect.flatMap(Clock.currentTimeNanos, (now) =>
          Effect.sync(() => {
            for (const span of spans) span.end(now, exit)
          })
        )
      )
    )
  })

/**
 * Publishes one batch; returns how many messages went out. The polling itself is not traced (an idle relay would
 * fill the traces with empty claims); the publishing is.
 */
export const relayOnce = (batchSize: number) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const broker = yield* Broker
    return yield* store
      .publishOutbox(batchSize, (messages) =>
        withPublishSpans(messages, broker.publish(messages.map(toOutgoing))).pipe(Effect.withTracerEnabled(true))
      )
      .pipe(Effect.withTracerEnabled(false))
  })

/** Until the next look: a commit notification when the store has them, the idle delay at the latest. */
const idle = (delay: Duration.Input) =>
  Effect.serviceOption(OutboxNotifications).pipe(
    Effect.flatMap((notifications) =>
      Option.isSome(notifications) ? notifications.value.next(delay) : Effect.sleep(delay)
    )
  )

export const run = (settings: RelaySettings = defaultRelaySettings) =>
  relayOnce(settings.batchSize).pipe(
    // A full batch means more is waiting: go again at once; otherwise wait for the next commit.
    Effect.flatMap((published) => (published < settings.batchSize ? idle(settings.idleDelay) : Effect.void)),
    Effect.catch((error) =>
      Effect.logWarning("outbox relay: publishing failed; retrying", error.message).pipe(
        Effect.andThen(Effect.sleep(Duration.seconds(1)))
      )
    ),
    Effect.repeat(Schedule.forever),
    Effect.annotateLogs("component", "outbox-relay")
  )

export const layer = (settings: RelaySettings = defaultRelaySettings) =>
  Layer.effectDiscard(Effect.forkScoped(run(settings)))
