/**
 * When to look at the outbox again. The store says when a transaction committed outbox messages; the relay waits
 * for that, or for its polling fallback.
 *
 * Commits in the relay's own process wake it in memory. Other processes that write outbox messages (the operator
 * CLI, another tool on the database) have no relay of their own: their store sends a notification on channel
 * `orchestrator_outbox` after the commit, and the service's relay LISTENs on it. A notification is sent after the
 * commit, never inside the step's transaction: PostgreSQL serializes the commits of transactions that notify (they
 * hold a database-wide lock through the commit's WAL flush), which would cap the step rate at one commit flush at a
 * time. Polling stays as the fallback, and takes over while the listening connection is down (a restart, a
 * failover) until it is back.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, type Duration, Effect, Layer, Queue, Schedule } from "effect"
import { AppConfig, Database } from "../Config.ts"

export const channel = "orchestrator_outbox"

export class OutboxNotifications extends Context.Service<
  OutboxNotifications,
  {
    /** Says that a transaction of this process committed outbox messages. */
    readonly committed: Effect.Effect<void>
    /** Completes at the next commit of outbox messages, or after `fallback` at the latest. */
    readonly next: (fallback: Duration.Input) => Effect.Effect<void>
  }
>()("saga-orchestrator/store/OutboxNotifications") {}

// Capacity 1, sliding: any number of commits while the relay is busy mean one more look.
const signals = Queue.sliding<void>(1)

const fromSignals = (queue: Queue.Queue<void>) =>
  OutboxNotifications.of({
    committed: Queue.offer(queue, undefined).pipe(Effect.asVoid),
    next: (fallback) => Queue.take(queue).pipe(Effect.timeoutOption(fallback), Effect.asVoid)
  })

/** Commits of this process only: for a database no other process writes (the embedded one). */
export const layerLocal = Layer.effect(OutboxNotifications, Effect.map(signals, fromSignals))

/** Commits of this process, and those other processes announce on the `orchestrator_outbox` channel. */
export const layerPg = Layer.effect(
  OutboxNotifications,
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    const queue = yield* signals
    const listen = Effect.scoped(
      Effect.gen(function* () {
        const notifications = yield* sql.listen(channel)
        // Something may have been committed while nobody listened.
        yield* Queue.offer(queue, undefined)
        while (true) {
          yield* Queue.take(notifications)
          yield* Queue.offer(queue, undefined)
        }
      })
    )
    yield* listen.pipe(
      Effect.tapError((error) =>
        Effect.logWarning("outbox notifications lost; polling until they are back", error.message)
      ),
      Effect.retry(Schedule.spaced("1 second")),
      Effect.forkScoped
    )
    return fromSignals(queue)
  })
)

/**
 * The service's: listening on PostgreSQL, except on the embedded database, whose single connection a listener would
 * hold, and which no other process writes.
 */
export const layer = Layer.unwrap(
  Effect.map(AppConfig, (config) => (Database.$is("External")(config.database) ? layerPg : layerLocal))
)

/**
 * For a process without a relay: announces its commits of outbox messages to the relays listening on the channel.
 * Best effort, after the commit: a relay that misses it finds the messages at its next poll.
 */
export const announce = (sql: PgClient.PgClient): OutboxNotifications["Service"] =>
  OutboxNotifications.of({
    committed: sql`SELECT pg_notify(${channel}, '')`.pipe(Effect.ignore),
    next: Effect.sleep
  })
