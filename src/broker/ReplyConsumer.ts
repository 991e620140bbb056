/**
 * Consumes workers' replies and hands them to the engine. A reply is acknowledged only after the transaction that
 * applied it committed; one that cannot be processed (malformed JSON, wrong shape, unknown saga, parked saga) is
 * dead-lettered with the reason; a database outage leaves it unacknowledged, to be delivered again.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { decodeReply, Queues } from "../domain/Messages.ts"
import { Engine } from "../saga/Engine.ts"
import { Broker, type Delivery, Disposition } from "./Broker.ts"

export const handle = (delivery: Delivery) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    const decoded = yield* Effect.result(decodeReply(delivery.body))
    if (decoded._tag === "Failure") {
      return Disposition.deadLetter(`malformed reply: ${decoded.failure.message}`)
    }
    const reply = decoded.success
    return yield* engine.reply(reply).pipe(
      Effect.as(Disposition.ack),
      Effect.catchTags({
        SagaNotFound: () => Effect.succeed(Disposition.deadLetter(`unknown saga ${reply.sagaId}`)),
        UnknownDefinitionVersion: (e) => Effect.succeed(Disposition.deadLetter(e.message)),
        CorruptProgress: (e) => Effect.succeed(Disposition.deadLetter(e.message)),
        ContextTooLarge: (e) => Effect.succeed(Disposition.deadLetter(`reply rejected: ${e.message}`)),
        InvalidSagaData: (e) => Effect.succeed(Disposition.deadLetter(`reply rejected: ${e.message}`)),
        // Cannot happen without an expected version; taken again from the queue, it is decided afresh.
        VersionConflict: () => Effect.succeed(Disposition.requeue),
        StoreUnavailable: (e) =>
          Effect.logWarning("reply not applied, database unavailable; it will be delivered again", e.message).pipe(
            Effect.andThen(Effect.sleep(Duration.seconds(1))),
            Effect.as(Disposition.requeue)
          )
      })
    )
  }).pipe(Effect.annotateLogs({ component: "reply-consumer", messageId: delivery.messageId ?? "none" }))

export const run = (prefetch = 50) =>
  Effect.flatMap(Broker, (broker) => broker.consume(Queues.replies, handle, { prefetch }))

/** Keeps consuming: when the broker goes away the consumer starts again once it is back. */
export const layer = (prefetch = 50) =>
  Layer.effectDiscard(
    Effect.forkScoped(
      run(prefetch).pipe(
        Effect.tapError((error) => Effect.logWarning("reply consumer interrupted; resuming", error.message)),
        Effect.retry(Schedule.spaced("1 second"))
      )
    )
  )
