/**
 * When to look at the outbox again. On PostgreSQL the relay LISTENs on `orchestrator_outbox` (see migration 0003)
 * and wakes as soon as a step commits messages; polling stays as the fallback, and takes over while the listening
 * connection is down (a restart, a failover) until it is back.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, type Duration, Effect, Layer, Queue, Schedule } from "effect"

export const channel = "orchestrator_outbox"

export class OutboxNotifications extends Context.Service<
  OutboxNotifications,
  {
    /** Completes at the next notification, or after `fallback` at the latest. */
    readonly next: (fallback: Duration.Input) => Effect.Effect<void>
  }
>()("saga-orchestrator/store/OutboxNotifications") {}

/** Polling only: for stores without notifications (in memory, the single-connection embedded database). */
export const layerPolling = Layer.succeed(OutboxNotifications, OutboxNotifications.of({ next: Effect.sleep }))

export const layerPg = Layer.effect(
  OutboxNotifications,
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    // Capacity 1, sliding: any number of notifications while the relay is busy mean one more look.
    const signals = yield* Queue.sliding<void>(1)
    const listen = Effect.scoped(
      Effect.gen(function* () {
        const notifications = yield* sql.listen(channel)
        // Something may have been committed while nobody listened.
        yield* Queue.offer(signals, undefined)
        while (true) {
          yield* Queue.take(notifications)
          yield* Queue.offer(signals, undefined)
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
    return OutboxNotifications.of({
      next: (fallback) => Queue.take(signals).pipe(Effect.timeoutOption(fallback), Effect.asVoid)
    })
  })
)
