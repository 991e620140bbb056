/**
 * The outbox relay: publishes committed outbox messages with publisher confirms and deletes them once confirmed.
 * A crash between confirm and delete publishes a message again — delivery is at least once, and every consumer
 * deduplicates by message id / task id. Several relays may run at once: batches are claimed with SKIP LOCKED.
 */
import { Duration, Effect, Layer, Option, Schedule } from "effect"
import type { PendingMessage } from "../domain/Saga.ts"
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

/** Publishes one batch; returns how many messages went out. */
export const relayOnce = (batchSize: number) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const broker = yield* Broker
    return yield* store.publishOutbox(batchSize, (messages) => broker.publish(messages.map(toOutgoing)))
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
