/**
 * How long writes were impossible after an event (a crash, a switchover), seen two ways, each as the longest gap
 * between consecutive commits while the load went on:
 * - a probe that commits a row through HAProxy every 50 ms on a connection of its own (the database's view);
 * - the saga history: the steps the service committed (what the service saw).
 * Times are this machine's clock in epoch milliseconds; the service runs on the same machine.
 */
import { PgClient } from "@effect/sql-pg"
import { Clock, Context, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { HaCluster } from "./HaCluster.ts"

/** The longest stretch without a commit: the last commit before it and the first after. */
export interface Window {
  readonly lastBefore: number | undefined
  readonly firstAfter: number | undefined
}

/**
 * The longest gap between consecutive commits (sorted times) that ends after `from` and starts before `to`: the
 * outage an event at `from` caused, as long as commits were frequent until `to`.
 */
export const largestGap = (times: ReadonlyArray<number>, from: number, to: number): Window => {
  let best: Window = { lastBefore: times.filter((t) => t <= from).at(-1), firstAfter: undefined }
  let longest = -1
  for (let i = 0; i + 1 < times.length; i++) {
    const [before, after] = [times[i] ?? 0, times[i + 1] ?? 0]
    if (after > from && before < to && after - before > longest) {
      longest = after - before
      best = { lastBefore: before, firstAfter: after }
    }
  }
  return best
}

export class WriteProbe extends Context.Service<
  WriteProbe,
  {
    /** The probe's longest gap between `from` and `to`. */
    readonly gap: (from: number, to: number) => Effect.Effect<Window>
    /** How many probe writes failed so far (each is retried on the next tick). */
    readonly failures: Effect.Effect<number>
  }
>()("test/ops/WriteProbe") {}

/** The probe as the superuser, in the `postgres` database, through HAProxy; each write gives up after 1 s. */
export const layerProbe = Layer.effect(
  WriteProbe,
  Effect.gen(function* () {
    const sql = yield* PgClient.PgClient
    yield* sql`CREATE TABLE IF NOT EXISTS ops_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`
    const commits: Array<number> = []
    let failures = 0
    const write = sql`INSERT INTO ops_probe DEFAULT VALUES`.pipe(
      Effect.timeout("1 second"),
      Effect.andThen(Clock.currentTimeMillis),
      Effect.match({
        onSuccess: (at) => {
          commits.push(at)
        },
        onFailure: () => {
          failures += 1
        }
      })
    )
    yield* write.pipe(Effect.repeat(Schedule.spaced("50 millis")), Effect.forkScoped)
    return WriteProbe.of({
      gap: (from, to) => Effect.sync(() => largestGap(commits, from, to)),
      failures: Effect.sync(() => failures)
    })
  }).pipe(Effect.orDie)
).pipe(
  Layer.provide(
    Layer.unwrap(
      Effect.map(HaCluster, (cluster) =>
        PgClient.layer({
          host: cluster.endpoint.host,
          port: cluster.endpoint.port,
          database: "postgres",
          username: cluster.endpoint.superuser,
          maxConnections: 1,
          connectTimeout: "1 second",
          applicationName: "ops-write-probe"
        })
      )
    )
  )
)

/**
 * The service's longest gap between its commits from the saga history: steps it took on replies and timers (the
 * sagas the test starts and signals are committed by the test process, and left out).
 */
export const historyGap = (from: number, to: number) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ at: number }>`
      SELECT (extract(epoch FROM at) * 1000)::float8 AS at FROM orchestrator.saga_transitions
      WHERE event NOT IN ('SagaStarted', 'SignalReceived')
        AND at BETWEEN ${new Date(from - 60_000)} AND ${new Date(to + 60_000)}
      ORDER BY at`
    return largestGap(
      rows.map((row) => row.at),
      from,
      to
    )
  })

const offset = (time: number | undefined, at: number) =>
  time === undefined ? "none" : `${time - at >= 0 ? "+" : ""}${((time - at) / 1000).toFixed(2)} s`

/** `last commit -0.03 s, first commit +9.84 s: no commit for 9.87 s` */
export const describeWindow = (window: Window, at: number) => {
  const gap =
    window.lastBefore === undefined || window.firstAfter === undefined
      ? "unknown"
      : `${((window.firstAfter - window.lastBefore) / 1000).toFixed(2)} s`
  return `last commit ${offset(window.lastBefore, at)}, first commit ${offset(window.firstAfter, at)}: no commit for ${gap}`
}
