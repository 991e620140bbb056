/** The PostgreSQL store's readiness: the database answers a query, and has every migration this version ships. */
import { NodeFileSystem } from "@effect/platform-node"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { checkSchemaCurrent } from "../Database.ts"
import type { HealthCheck, StoreHealth } from "../SagaStore.ts"
import { describe } from "../transactions.ts"

const passed: HealthCheck = { ok: true }

const probe = <E>(check: Effect.Effect<unknown, E>, describeError: (error: E) => string): Effect.Effect<HealthCheck> =>
  check.pipe(
    Effect.as(passed),
    Effect.catch((error) => Effect.succeed({ ok: false, detail: describeError(error) })),
    Effect.catchDefect((defect) => Effect.succeed({ ok: false, detail: String(defect) }))
  )

export const health = (sql: SqlClient.SqlClient): Effect.Effect<StoreHealth> =>
  Effect.all(
    {
      database: probe(sql`SELECT 1`, describe),
      schema: probe(
        checkSchemaCurrent.pipe(
          Effect.provideService(SqlClient.SqlClient, sql),
          // The shipped migrations are files next to the code: read them with the platform's file system.
          Effect.provide(NodeFileSystem.layer)
        ),
        (error) => (error._tag === "SchemaNotCurrent" ? error.message : `cannot check: ${describe(error)}`)
      )
    },
    { concurrency: "unbounded" }
  )
