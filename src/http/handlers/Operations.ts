/**
 * Probes and metrics, without authentication. Liveness says only that the process serves requests (a restart would
 * not fix a database outage); readiness says whether this instance can do its work now: the database answers, its
 * schema is the one this version needs, and the broker is connected.
 */
import { Duration, Effect } from "effect"
import { HttpMiddleware } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { Broker } from "../../broker/Broker.ts"
import { SagaStore } from "../../store/SagaStore.ts"
import type { ReadinessChecks } from "../Api/Representations.ts"
import { Api } from "../Api.ts"
import { MetricsText } from "../Metrics.ts"
import * as Problems from "../Problems.ts"

/** A probe that hangs is a failed probe: orchestrators call readiness every few seconds. */
const probeTimeout = Duration.seconds(2)

type Check = ReadinessChecks["database"]

const ok: Check = { ok: true }
const failed = (detail: string): Check => ({ ok: false, detail })
const noAnswer = failed("no answer within 2 s")

const check = <E>(probe: Effect.Effect<unknown, E>, describe: (error: E) => string): Effect.Effect<Check> =>
  probe.pipe(
    Effect.as(ok),
    Effect.timeoutOrElse({ duration: probeTimeout, orElse: () => Effect.succeed(noAnswer) }),
    Effect.catch((error) => Effect.succeed(failed(describe(error)))),
    Effect.catchDefect((defect) => Effect.succeed(failed(String(defect))))
  )

export const layer = HttpApiBuilder.group(
  Api,
  "operations",
  Effect.fnUntraced(function* (handlers) {
    const store = yield* SagaStore
    const broker = yield* Broker
    const metrics = yield* MetricsText

    const storeHealth = store.health.pipe(
      Effect.timeoutOrElse({
        duration: probeTimeout,
        orElse: () => Effect.succeed({ database: noAnswer, schema: noAnswer })
      })
    )
    const readiness = Effect.all([storeHealth, check(broker.health, (error) => error.message)], {
      concurrency: "unbounded"
    }).pipe(Effect.map(([{ database, schema }, broker]) => ({ database, schema, broker })))

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
