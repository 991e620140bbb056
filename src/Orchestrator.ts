/**
 * The running service. The state store is ready when this layer is: the database is the configured one (migrated at
 * startup when migration credentials are given, otherwise checked to be current) or, with none configured, the
 * embedded one. Until the saga engine lands, the service keeps the store open and reports its health.
 */
import { NodeServices } from "@effect/platform-node"
import { Duration, Effect, Layer, Option, Schedule } from "effect"
import { AppConfig, type DatabaseConfig } from "./Config.ts"
import { checkSchemaCurrent, migrate, runtimeClient } from "./store/Database.ts"
import * as Embedded from "./store/Embedded.ts"
import * as PgSagaStore from "./store/PgSagaStore.ts"
import { SagaStore } from "./store/SagaStore.ts"

const announceEmbedded = Effect.logWarning(
  [
    "EMBEDDED MODE: no database configured (ORCH_DB_HOST is unset).",
    "State lives in an in-process PostgreSQL (PGlite) and is lost when the process stops.",
    "For real use, set ORCH_DB_HOST, ORCH_DB_PORT, ORCH_DB_NAME, ORCH_DB_USER (and ORCH_DB_MIGRATION_USER) with the",
    "password files db_password (and db_migration_password) in ORCH_SECRETS_DIR; see README.md."
  ].join("\n")
)

const prepare = Effect.fnUntraced(function* (db: DatabaseConfig) {
  if (Option.isNone(db.migration)) return
  const applied = yield* migrate(db)
  yield* Effect.logInfo(
    applied.length === 0
      ? "schema is up to date"
      : `applied migrations: ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
  )
})

/** The runtime pool on the configured or embedded database, after migrations. */
const database = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    const embedded = Option.isNone(config.database)
    if (embedded) yield* announceEmbedded
    const db = Option.isSome(config.database) ? config.database.value : yield* Embedded.start
    yield* prepare(db)
    // PGlite has a single backend: one connection, or transactions of different fibers would interleave.
    return runtimeClient(db, embedded ? 1 : 10)
  })
)

const store = Layer.unwrap(
  Effect.map(AppConfig, (config) => PgSagaStore.layerNoDeps({ maxContextBytes: config.maxContextBytes }))
).pipe(
  Layer.provideMerge(database),
  Layer.tap((context) => Effect.asVoid(Effect.provideContext(checkSchemaCurrent, context)))
)

const reportHealth = Effect.gen(function* () {
  const store = yield* SagaStore
  const report = store.summary.pipe(
    Effect.flatMap(({ byStatus, outboxPending }) =>
      Effect.logInfo("state store healthy", { sagas: byStatus, outboxPending })
    ),
    Effect.catch((error) => Effect.logError("state store unavailable", error.message))
  )
  yield* Effect.logInfo("saga orchestrator started (the saga engine is not part of this version yet)")
  yield* report.pipe(Effect.repeat(Schedule.spaced(Duration.seconds(30))), Effect.forkScoped)
})

export const layer = Layer.effectDiscard(reportHealth).pipe(
  Layer.provide(store),
  Layer.provide(AppConfig.layer),
  Layer.provide(NodeServices.layer)
)
