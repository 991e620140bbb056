import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { AppConfig, InvalidConfig } from "../Config.ts"
import { migrate as runMigrations } from "../store/Database.ts"

/** `orchestrator migrate`: applies pending migrations with the migration credentials, for deployment pipelines. */
export const migrate = Command.make(
  "migrate",
  {},
  Effect.fnUntraced(function* () {
    const config = yield* AppConfig
    if (config.database._tag === "Embedded") {
      return yield* new InvalidConfig({ reason: "ORCH_DB_HOST is not set: there is no database to migrate" })
    }
    const applied = yield* runMigrations(config.database.config)
    if (applied.length === 0) {
      yield* Console.log("schema is up to date: no migration applied")
      return
    }
    for (const [id, name] of applied) yield* Console.log(`applied ${String(id).padStart(4, "0")}_${name}`)
  })
).pipe(
  Command.withDescription("Apply pending database migrations (needs ORCH_DB_MIGRATION_USER and its password file)")
)
