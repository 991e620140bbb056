/**
 * The connection to RabbitMQ, supervised. It is opened with the password taken from its `Redacted` secret only at
 * connect time, the topology (docs/contract/asyncapi.yaml) is declared on it, and whenever it is lost (broker restart, network loss,
 * missed heartbeats) it is opened again with exponential back-off and the topology declared again. While there is
 * no connection, `current` fails at once saying why, and `next` waits for the next one.
 */
import * as Amqp from "amqplib"
import { Deferred, Duration, Effect, Fiber, Redacted, Schedule, type Scope } from "effect"
import { Exchanges, Queues } from "../../domain/Messages.ts"
import { BrokerUnavailable } from "../Broker.ts"
import * as Publisher from "./publisher.ts"
import { closeQuietly, describe, redactor } from "./wire.ts"

export interface ConnectionSettings {
  /** Without the password; the path is the vhost (`%2F` for `/`). */
  readonly url: string
  readonly password: Redacted.Redacted
  readonly heartbeat: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly confirmTimeout: Duration.Duration
  readonly reconnectInitialDelay: Duration.Duration
  readonly reconnectMaxDelay: Duration.Duration
  /** Shown by `rabbitmqctl list_connections client_properties` and the management UI. */
  readonly connectionName: string
}

/** One open connection with its topology declared and its confirm channel. */
export interface Session {
  readonly id: number
  readonly connection: Amqp.ChannelModel
  readonly publisher: Publisher.Publisher
  /** Completes, with why, once the connection is gone. */
  readonly lost: Deferred.Deferred<string>
}

export interface Supervisor {
  /** The open connection; fails with why there is none during an outage. */
  readonly current: Effect.Effect<Session, BrokerUnavailable>
  /** The open connection, waiting for the next one during an outage. */
  readonly next: Effect.Effect<Session>
  readonly redact: (text: string) => string
}

/** The topology (docs/contract/asyncapi.yaml). Declaring is idempotent, so instances starting together all declare it. */
const declareTopology = async (channel: Amqp.Channel) => {
  for (const exchange of Object.values(Exchanges)) await channel.assertExchange(exchange, "topic", { durable: true })
  // Quorum queues: replicated, and safe for data that must not be lost. Anything RabbitMQ itself dead-letters from
  // the replies queue (a delivery limit set by policy, or RabbitMQ 4's default of 20) lands in the DLQ, not nowhere.
  await channel.assertQueue(Queues.replies, {
    durable: true,
    arguments: { "x-queue-type": "quorum", "x-dead-letter-exchange": Exchanges.deadLetter }
  })
  await channel.bindQueue(Queues.replies, Exchanges.replies, "#")
  await channel.assertQueue(Queues.deadLetters, { durable: true, arguments: { "x-queue-type": "quorum" } })
  await channel.bindQueue(Queues.deadLetters, Exchanges.deadLetter, "#")
}

export const supervise = Effect.fnUntraced(function* (
  settings: ConnectionSettings
): Effect.fn.Return<Supervisor, BrokerUnavailable, Scope.Scope> {
  const parsed = URL.parse(settings.url)
  if (parsed === null || parsed.password !== "") {
    return yield* Effect.die(new Error("the AMQP URL must be a valid URL without a password; pass the password apart"))
  }
  const redact = redactor([Redacted.value(settings.password), encodeURIComponent(Redacted.value(settings.password))])
  const endpoint = `RabbitMQ at ${settings.url}`
  const context = yield* Effect.context<never>()
  const logFromCallback = (effect: Effect.Effect<void>) => void Effect.runForkWith(context)(effect)

  let current: Session | undefined
  let waiting = Deferred.makeUnsafe<Session>()
  let lastFailure = "not connected yet"
  let sessions = 0

  /** Called by amqplib's 'close' event, so `current` never names a connection that is gone. */
  const onLost = (lost: Deferred.Deferred<string>, reason: string) => {
    lastFailure = reason
    if (current?.lost === lost) {
      current = undefined
      waiting = Deferred.makeUnsafe<Session>()
    }
    Deferred.doneUnsafe(lost, Effect.succeed(reason))
  }

  const connect = Effect.acquireRelease(
    Effect.tryPromise({
      try: (signal) => {
        const url = new URL(settings.url)
        if (!url.searchParams.has("heartbeat")) {
          url.searchParams.set("heartbeat", String(Math.max(1, Math.round(Duration.toSeconds(settings.heartbeat)))))
        }
        // The credentials go into the SASL response rather than the URL: amqplib decodes a URL's user info with
        // `unescape`, which garbles passwords with `%` sequences or non-ASCII characters.
        const username = decodeURIComponent(url.username) || "guest"
        return Amqp.connect(url.toString(), {
          // Without it Nagle's algorithm holds each confirm round trip for ~40 ms.
          noDelay: true,
          timeout: Duration.toMillis(settings.connectTimeout),
          credentials: Amqp.credentials.plain(username, Redacted.value(settings.password)),
          clientProperties: { connection_name: settings.connectionName }
        }).then((connection) => {
          if (signal.aborted) {
            // Timed out or interrupted while the handshake went on: do not leave this connection behind.
            connection.close().catch(() => undefined)
            throw new Error("connect interrupted")
          }
          const lost = Deferred.makeUnsafe<string>()
          let lastError: string | undefined
          let lostReason: string | undefined
          // Listeners go on at once: an 'error' event without a listener would crash the process.
          connection.on("error", (error: unknown) => {
            lastError = describe(error, redact)
          })
          connection.on("close", (error?: unknown) => {
            lostReason = error === undefined ? (lastError ?? "connection closed") : describe(error, redact)
            onLost(lost, lostReason)
          })
          connection.on("blocked", (reason: unknown) =>
            logFromCallback(Effect.logWarning(`RabbitMQ blocks publishing on this connection: ${String(reason)}`))
          )
          connection.on("unblocked", () => logFromCallback(Effect.logInfo("RabbitMQ unblocked publishing")))
          return { connection, lost, lostReason: () => lostReason }
        })
      },
      catch: (error) => {
        const described = describe(error, redact)
        // A refused login names the secret file to check; the password itself is never part of the message.
        const hint = /ACCESS.REFUSED/.test(described)
          ? ": check the user in ORCH_AMQP_URL and its password in the secret file amqp_password"
          : ""
        return new BrokerUnavailable({ reason: `cannot connect to ${endpoint}: ${described}${hint}` })
      }
    }).pipe(
      Effect.timeoutOrElse({
        duration: Duration.sum(settings.connectTimeout, Duration.seconds(1)),
        orElse: () => Effect.fail(new BrokerUnavailable({ reason: `cannot connect to ${endpoint}: timed out` }))
      })
    ),
    ({ connection }) => closeQuietly(connection)
  )

  const topologyFailed = (error: unknown) =>
    new BrokerUnavailable({ reason: `cannot declare the topology: ${describe(error, redact)}` })

  const topology = (connection: Amqp.ChannelModel) =>
    Effect.acquireUseRelease(
      Effect.tryPromise({
        try: async () => {
          const channel = await connection.createChannel()
          // A refused declaration closes the channel with an 'error' event; the failed call reports it.
          channel.on("error", () => undefined)
          return channel
        },
        catch: topologyFailed
      }),
      (channel) => Effect.tryPromise({ try: () => declareTopology(channel), catch: topologyFailed }),
      closeQuietly
    )

  /** One connection from opening to loss; fails only when it cannot be opened and set up. */
  const session = Effect.scoped(
    Effect.gen(function* () {
      const { connection, lost, lostReason } = yield* connect
      yield* topology(connection)
      const publisher = yield* Publisher.make(connection, {
        confirmTimeout: settings.confirmTimeout,
        redact,
        connectionLost: lostReason
      })
      if (Deferred.isDoneUnsafe(lost)) {
        return yield* new BrokerUnavailable({ reason: `connection lost while setting up: ${lastFailure}` })
      }
      sessions += 1
      const opened: Session = { id: sessions, connection, publisher, lost }
      current = opened
      Deferred.doneUnsafe(waiting, Effect.succeed(opened))
      yield* Effect.logInfo(`connected to ${endpoint} (connection #${opened.id})`)
      const reason = yield* Deferred.await(lost)
      yield* Effect.logWarning(`lost the connection to ${endpoint}: ${reason}; reconnecting`)
    })
  )

  const backoff = Schedule.min([
    Schedule.exponential(settings.reconnectInitialDelay),
    Schedule.spaced(settings.reconnectMaxDelay)
  ]).pipe(Schedule.jittered)

  const reconnecting = session.pipe(
    Effect.tapError((error) =>
      Effect.sync(() => {
        lastFailure = error.reason
      }).pipe(Effect.andThen(Effect.logWarning(`${error.reason}; retrying`)))
    ),
    // A session that ended after it was open succeeds, so the back-off starts afresh for the next outage.
    Effect.retry(backoff),
    Effect.forever
  )

  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      lastFailure = "the broker client is shutting down"
    })
  )
  // The first connection is made before the service starts: an unreachable broker or wrong credentials fail startup.
  const supervisor = yield* Effect.forkScoped(session.pipe(Effect.andThen(reconnecting)))
  yield* Effect.raceFirst(
    Effect.suspend(() => Deferred.await(waiting)),
    Fiber.join(supervisor)
  )

  return {
    current: Effect.suspend(() =>
      current === undefined
        ? Effect.fail(new BrokerUnavailable({ reason: `not connected to ${endpoint}: ${lastFailure}` }))
        : Effect.succeed(current)
    ),
    next: Effect.suspend(() => (current === undefined ? Deferred.await(waiting) : Effect.succeed(current))),
    redact
  }
})
