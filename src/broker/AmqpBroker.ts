/**
 * The Broker port on RabbitMQ, with amqplib. One supervised connection per service instance: when it is
 * lost it is opened again with back-off and the topology declared again (AmqpBroker/connection.ts).
 *
 * - publish: on the connection's confirm channel; succeeds once RabbitMQ confirmed every message of the batch. With
 *   no connection, on a nack, a closed channel or no confirm in time it fails with `BrokerUnavailable` and the
 *   caller (the outbox relay) keeps its rows and tries again: nothing is lost, a retried batch may repeat messages.
 *   An unroutable message (no queue bound for its routing key) is logged as a warning and does not fail the publish:
 *   RabbitMQ confirmed the batch, and failing it would publish the routed messages of the batch again on every retry
 *   for a message that cannot be routed until a worker binds its queue. The saga's step timeout retries the task.
 * - consume: keeps running across reconnects (AmqpBroker/consumer.ts); fails only for a missing or forbidden queue.
 */
import { Duration, Effect, Layer, type Redacted } from "effect"
import { AppConfig, InvalidConfig } from "../Config.ts"
import * as Connection from "./AmqpBroker/connection.ts"
import * as Consumer from "./AmqpBroker/consumer.ts"
import { toWire } from "./AmqpBroker/wire.ts"
import { Broker, type Delivery, type Disposition, type OutgoingMessage } from "./Broker.ts"

export interface Options {
  /** RabbitMQ URL without the password, e.g. `amqp://orchestrator@127.0.0.1:5672/`; the path names the vhost. */
  readonly url: string
  readonly password: Redacted.Redacted
  /** For a `consume` that names none; default 10. */
  readonly prefetch?: number | undefined
  /** Heartbeat interval asked of RabbitMQ; a silent network is noticed after about two of them. Default 15 s. */
  readonly heartbeat?: Duration.Input | undefined
  /** Default 10 s. */
  readonly connectTimeout?: Duration.Input | undefined
  /** How long a publish waits for its confirms before failing. Default 30 s. */
  readonly confirmTimeout?: Duration.Input | undefined
  /** Reconnect back-off: exponential from the initial delay (default 100 ms) up to the maximum (default 5 s). */
  readonly reconnectInitialDelay?: Duration.Input | undefined
  readonly reconnectMaxDelay?: Duration.Input | undefined
  /** Shown in RabbitMQ's connection list. Default `saga-orchestrator`. */
  readonly connectionName?: string | undefined
  /** Before a consumer attaches again when only its channel closed. Default 1 s. */
  readonly consumerReattachDelay?: Duration.Input | undefined
  /** Before a message whose dead-letter copy could not be published is requeued. Default 1 s. */
  readonly deadLetterRetryDelay?: Duration.Input | undefined
}

const duration = (input: Duration.Input | undefined, fallback: Duration.Input) =>
  Duration.fromInputUnsafe(input ?? fallback)

/**
 * Connects (failing with `BrokerUnavailable` when the first connection cannot be made: unreachable broker, wrong
 * credentials, a topology that conflicts with what exists) and keeps the connection up until the scope closes.
 */
export const make = Effect.fnUntraced(function* (options: Options) {
  const defaultPrefetch = options.prefetch ?? 10
  const supervisor = yield* Connection.supervise({
    url: options.url,
    password: options.password,
    heartbeat: duration(options.heartbeat, "15 seconds"),
    connectTimeout: duration(options.connectTimeout, "10 seconds"),
    confirmTimeout: duration(options.confirmTimeout, "30 seconds"),
    reconnectInitialDelay: duration(options.reconnectInitialDelay, "100 millis"),
    reconnectMaxDelay: duration(options.reconnectMaxDelay, "5 seconds"),
    connectionName: options.connectionName ?? "saga-orchestrator"
  })
  const consumerSettings: Consumer.ConsumerSettings = {
    reattachDelay: duration(options.consumerReattachDelay, "1 second"),
    deadLetterRetryDelay: duration(options.deadLetterRetryDelay, "1 second")
  }

  const publish = Effect.fn("AmqpBroker.publish")(function* (messages: ReadonlyArray<OutgoingMessage>) {
    const session = yield* supervisor.current
    yield* session.publisher.publish(messages.map(toWire))
  })

  const consume = <R>(
    queue: string,
    handle: (delivery: Delivery) => Effect.Effect<Disposition, never, R>,
    consumeOptions?: { readonly prefetch?: number | undefined }
  ) => Consumer.consume(supervisor, consumerSettings, queue, handle, consumeOptions?.prefetch ?? defaultPrefetch)

  return Broker.of({ publish, consume, health: Effect.asVoid(supervisor.current) })
})

/** The broker on explicit settings (tests, tools). */
export const layerConfig = (options: Options) => Layer.effect(Broker, make(options))

/** The broker on the service configuration: `ORCH_AMQP_URL` and the secret file `amqp_password`. */
export const layer = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    if (config.workers._tag === "Simulated") {
      return yield* new InvalidConfig({ reason: "ORCH_AMQP_URL is not set: there is no RabbitMQ to connect to" })
    }
    return layerConfig(config.workers.amqp)
  })
)
