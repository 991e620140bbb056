/**
 * Probes and metrics, without authentication. Liveness says only that the process serves requests (a restart would
 * not fix a database outage); readiness says whether this instance can do its work now: the database answers, its
 * schema is the one this version needs, and the broker is connected.
 */
import { Duration, Effect, FileSystem } from "effect"
import { HttpMiddleware } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { SqlClient } from "effect/sql"
import { Broker } from "../../broker/Broker.ts"
import { checkSchemaCurrent } from "../../store/Database.ts"
import { describe as describeSqlError } from "../../store/transactions.ts"
import type { ReadinessChecks } from "../Api/Representations.ts"
import { Api } from "../Api.ts"
import { MetricsText } from "../Metrics.ts"
import * as Problems from "../Problems.ts"

/** A probe that hangs is a failed probe: orchestrators call readiness every few seconds. */
const probeTimeout = Duration.seconds(2)

type Check = ReadinessChecks["database"]

const ok: Check = { ok: true }
const failed = (detail: string): Check => ({ ok: false, detail })

const check = <E>(probe: Effect.Effect<unknown, E>, describe: (error: E) => string): Effect.Effect<Check> =>
  probe.pipe(
    Effect.as(ok),
    Effect.timeoutOrElse({ duration: probeTimeout, orElse: () => Effect.succeed(failed("no answer within 2 s")) }),
    Effect.catch((error) => Effect.succeed(failed(describe(error)))),
    Effect.catchDefect((defect) => Effect.succeed(failed(String(defect))))
  )

export const layer = HttpApiBuilder.group(
  Api,
  "operations",
  Effect.fnUntraced(function* (handlers) {
    const sql = yield* SqlClient.SqlClient
    const fs = yield* FileSystem.FileSystem
    const broker = yield* Broker
    const metrics = yield* MetricsText

    const readiness = Effect.all(
      {
        database: check(sql`SELECT 1`, describeSqlError),
        schema: check(
          checkSchemaCurrent.pipe(
            Effect.provideService(SqlClient.SqlClient, sql),
            Effect.provideService(FileSystem.FileSystem, fs)
          ),
          (error) => (error._tag === "SchemaNotCurrent" ? error.message : `cannot check: ${describeSqlError(error)}`)
        ),
        broker: check(broker.health, (error) => error.message)
      },
      { concurrency: "unbounded" }
    )

    // Probes and scrapes come every few seconds: they are not logged as requests (a failed readiness check is).
    return handlers
      .handle("healthz", () => HttpMiddleware.withLoggerDisabled(Effect.succeed({ status: "ok" as const })))
      .handle("readyz", () =>
        Effect.flatMap(readiness, (checks) => {
          if (checks.database.ok && checks.schema.ok && checks.broker.ok) {
            return Effect.succeed({ status: "ready" as const, checks })
          }
          const failing = Object.entries(checks)
            .filter(([, result]) => !result.ok)
            .map(([name]) => name)
          const detail = `not ready: ${failing.join(", ")}`
          return Effect.logWarning(detail, checks).pipe(
            Effect.andThen(Effect.fail(new Problems.NotReady({ detail, checks })))
          )
        }).pipe(HttpMiddleware.withLoggerDisabled)
      )
      .handle("metrics", () => HttpMiddleware.withLoggerDisabled(metrics))
  })
)
