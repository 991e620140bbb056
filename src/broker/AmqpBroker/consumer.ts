/**
 * One `consume` across reconnects. On every connection it opens a channel of its own with the prefetch and runs one
 * handler per delivery, so at most `prefetch` run at once (RabbitMQ enforces the bound). When the channel or the
 * connection goes, the handlers still running are interrupted without settling anything: RabbitMQ requeues what the
 * channel left unacknowledged and delivers it again, marked redelivered. The consumer then attaches again as soon as
 * there is a connection. It fails only when the queue does not exist or access to it is refused, which no reconnect
 * cures.
 */
import type * as Amqp from "amqplib"
import { Cause, Data, Deferred, type Duration, Effect, Exit, FiberSet } from "effect"
import { Exchanges } from "../../domain/Messages.ts"
import { BrokerUnavailable, type Delivery, type Disposition } from "../Broker.ts"
import type { Session, Supervisor } from "./connection.ts"
import { closeQuietly, deadLetterCopy, describe, replyCode, toDelivery } from "./wire.ts"

export interface ConsumerSettings {
  /** Before attaching again when only the channel closed (the connection is fine). */
  readonly reattachDelay: Duration.Duration
  /** Before requeueing a message whose copy could not be published to the dead-letter exchange. */
  readonly deadLetterRetryDelay: Duration.Duration
}

/** Why a consumer's channel ended; `fatal` when attaching again cannot help. */
class Detached extends Data.TaggedError("Detached")<{ readonly reason: string; readonly fatal: boolean }> {}

const NOT_FOUND = 404
const ACCESS_REFUSED = 403

export const consume = <R>(
  supervisor: Supervisor,
  settings: ConsumerSettings,
  queue: string,
  handle: (delivery: Delivery) => Effect.Effect<Disposition, never, R>,
  prefetch: number
): Effect.Effect<never, BrokerUnavailable, R> => {
  const { redact } = supervisor

  const rpc = <A>(what: string, call: () => Promise<A>) =>
    Effect.tryPromise({
      try: call,
      catch: (error) => {
        const code = replyCode(error)
        return new Detached({
          reason: `${what}: ${describe(error, redact)}`,
          fatal: code === NOT_FOUND || code === ACCESS_REFUSED
        })
      }
    })

  /** Consumes on one channel of `session` until that channel ends; never succeeds. */
  const attach = (session: Session) =>
    Effect.scoped(
      Effect.gen(function* () {
        const ended = Deferred.makeUnsafe<never, Detached>()
        // Acquired first, so released last: the handlers below are interrupted before the channel closes.
        const channel = yield* Effect.acquireRelease(
          rpc("cannot open a channel", async () => {
            const channel = await session.connection.createChannel()
            let error: string | undefined
            channel.on("error", (cause: unknown) => {
              error = describe(cause, redact)
            })
            // Completed in a microtask: completing it resumes this consumer at once, and amqplib closes channels
            // before it emits the connection's 'close', which the consumer looks at to tell the two apart.
            channel.on("close", () =>
              queueMicrotask(() =>
                Deferred.doneUnsafe(
                  ended,
                  Effect.fail(new Detached({ reason: error ?? "channel closed", fatal: false }))
                )
              )
            )
            return channel
          }),
          closeQuietly
        )
        yield* rpc("cannot set the prefetch", () => channel.prefetch(prefetch))

        /** Runs `f` on the channel; when the channel is gone, RabbitMQ has requeued the message already. */
        const onChannel = (what: string, message: Amqp.Message, f: () => void) =>
          Effect.suspend(() => {
            try {
              f()
              return Effect.void
            } catch (error) {
              return Effect.logDebug(`could not ${what} a delivery (${describe(error, redact)}); it is delivered again`)
            }
          }).pipe(Effect.annotateLogs({ messageId: String(message.properties.messageId ?? "none") }))
        const ack = (message: Amqp.Message) => onChannel("ack", message, () => channel.ack(message))
        const requeue = (message: Amqp.Message) =>
          onChannel("requeue", message, () => channel.nack(message, false, true))

        // Publish the copy with a confirm first, then ack: a crash in between leaves a duplicate, never a loss.
        const deadLetter = (message: Amqp.Message, reason: string) =>
          session.publisher.publish([deadLetterCopy(message, Exchanges.deadLetter, reason)]).pipe(
            Effect.andThen(ack(message)),
            Effect.andThen(Effect.logWarning(`dead-lettered a message: ${reason}`)),
            Effect.catch((error) =>
              Effect.logWarning(`could not dead-letter a message (${error.reason}); requeueing it`).pipe(
                Effect.andThen(Effect.sleep(settings.deadLetterRetryDelay)),
                Effect.andThen(requeue(message))
              )
            ),
            Effect.annotateLogs({ messageId: String(message.properties.messageId ?? "none") })
          )

        const settle = (message: Amqp.Message, disposition: Disposition) => {
          switch (disposition._tag) {
            case "Ack":
              return ack(message)
            case "Requeue":
              return requeue(message)
            case "DeadLetter":
              return deadLetter(message, disposition.reason)
          }
        }

        // At least once: a handler that dies has its message requeued; one interrupted (the channel is closing, or
        // the consumer stops) settles nothing, and RabbitMQ requeues the message when the channel closes.
        const deliver = (message: Amqp.ConsumeMessage) =>
          Effect.suspend(() => handle(toDelivery(message))).pipe(
            Effect.exit,
            Effect.flatMap((exit) => {
              if (Exit.isSuccess(exit)) return settle(message, exit.value)
              if (Cause.hasInterruptsOnly(exit.cause)) return Effect.void
              return Effect.logError("message handler died; requeueing the message", exit.cause).pipe(
                Effect.andThen(requeue(message))
              )
            })
          )

        const run = yield* FiberSet.makeRuntime<R, void, never>()
        yield* rpc(`cannot consume from queue '${queue}'`, () =>
          channel.consume(
            queue,
            (message) => {
              if (message !== null) return void run(deliver(message))
              Deferred.doneUnsafe(
                ended,
                Effect.fail(new Detached({ reason: "RabbitMQ cancelled the consumer (queue deleted?)", fatal: false }))
              )
            },
            { noAck: false }
          )
        )
        yield* Effect.logInfo(`consuming queue '${queue}' with prefetch ${prefetch}`)
        return yield* Deferred.await(ended)
      })
    )

  return Effect.gen(function* () {
    if (!Number.isInteger(prefetch) || prefetch < 1) {
      return yield* Effect.die(new Error(`prefetch must be a positive integer, got ${prefetch}`))
    }
    return yield* Effect.forever(
      Effect.gen(function* () {
        const session = yield* supervisor.next
        const detached = yield* Effect.flip(attach(session))
        if (detached.fatal) return yield* new BrokerUnavailable({ reason: detached.reason })
        if (Deferred.isDoneUnsafe(session.lost)) {
          const reason = yield* Deferred.await(session.lost)
          yield* Effect.logWarning(`consumer lost its connection (${reason}); it resumes once reconnected`)
        } else {
          yield* Effect.logWarning(`consumer lost its channel (${detached.reason}); resuming`)
          yield* Effect.sleep(settings.reattachDelay)
        }
      })
    )
  }).pipe(Effect.annotateLogs({ component: "amqp-consumer", queue }))
}
