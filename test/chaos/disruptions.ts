/**
 * What the chaos run does to the system: SIGKILLs the orchestrators one after the other, and takes RabbitMQ and
 * PostgreSQL down once each for a few seconds — RabbitMQ with `stop_app` (connections are closed, the port refuses),
 * PostgreSQL with `pg_ctl stop` in the chosen mode (`immediate` is a crash: recovery runs at the next start).
 */
import { Clock, Duration, Effect } from "effect"
import { PrivateCluster, type ShutdownMode } from "../utils/PrivateCluster.ts"
import { PrivateRabbit } from "../utils/PrivateRabbit.ts"
import { seconds } from "./report.ts"
import type { Log, Slot } from "./supervised.ts"

/** Every `every`, SIGKILLs the next slot's process, round robin, until interrupted. */
export const killRoundRobin = (slots: ReadonlyArray<Slot>, every: Duration.Duration, log: Log) =>
  Effect.gen(function* () {
    for (let n = 0; ; n++) {
      yield* Effect.sleep(every)
      const slot = slots[n % slots.length]
      if (slot === undefined) continue
      const killed = yield* slot.kill
      yield* log(
        killed === undefined ? `CHAOS: ${slot.name} is not running, nothing to kill` : `CHAOS: SIGKILL ${killed}`
      )
    }
  })

export interface OutageSettings {
  /** Since the beginning of the chaos. */
  readonly rabbitAt: Duration.Duration
  readonly postgresAt: Duration.Duration
  /** How long each stays down before it is started again. */
  readonly downFor: Duration.Duration
  readonly postgresStop: ShutdownMode
}

/** The two server outages, each at its time; returns how long each server refused connections, in ms. */
export const serverOutages = (settings: OutageSettings, log: Log) =>
  Effect.gen(function* () {
    const rabbit = yield* PrivateRabbit
    const cluster = yield* PrivateCluster
    const origin = yield* Clock.currentTimeMillis
    const at = (offset: Duration.Duration) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sleep(Duration.millis(Math.max(0, origin + Duration.toMillis(offset) - now)))
      )
    const outage = (stop: Effect.Effect<void>, start: Effect.Effect<void>, server: string) =>
      Effect.gen(function* () {
        const from = yield* Clock.currentTimeMillis
        yield* stop
        yield* Effect.sleep(settings.downFor)
        yield* log(`CHAOS: starting ${server} again`)
        yield* start
        const down = (yield* Clock.currentTimeMillis) - from
        yield* log(`CHAOS: ${server} accepts connections again, after ${seconds(down)}`)
        return down
      })

    yield* at(settings.rabbitAt)
    yield* log("CHAOS: RabbitMQ stop_app")
    const rabbitDown = yield* outage(rabbit.stopApp, rabbit.startApp, "RabbitMQ")
    yield* at(settings.postgresAt)
    yield* log(`CHAOS: PostgreSQL stop -m ${settings.postgresStop}`)
    const postgresDown = yield* outage(cluster.stop(settings.postgresStop), cluster.start, "PostgreSQL")
    return { rabbitDown, postgresDown }
  })
