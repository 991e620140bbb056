/**
 * PostgreSQL connections and migrations. Migrations run with the schema owner's credentials on a pool of their
 * own that closes as soon as they are applied; the runtime pool uses the DML-only role and never runs DDL.
 */

import { fileURLToPath } from "node:url"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Effect, FileSystem, Option, type Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import * as MigratorFileSystem from "effect/sql/MigratorFileSystem"
import type { DatabaseConfig } from "../Config.ts"
import { InvalidConfig } from "../Config.ts"

export const migrationsDirectory = fileURLToPath(new URL("../../migrations", import.meta.url))
export const migrationsTable = "orchestrator.effect_sql_migrations"

const tls = (db: DatabaseConfig) => {
  switch (db.ssl) {
    case "disable":
      return undefined
    case "require":
      return { rejectUnauthorized: false }
    case "verify-full":
      return { rejectUnauthorized: true, servername: db.host }
  }
}

const connection = (db: DatabaseConfig, user: string, password: Redacted.Redacted, maxConnections: number) =>
  PgClient.layer({
    host: db.host,
    port: db.port,
    database: db.database,
    username: user,
    password,
    ssl: tls(db),
    maxConnections,
    applicationName: "saga-orchestrator",
    connectTimeout: "5 seconds"
  })

/** The runtime pool, as the DML-only role. */
export const runtimeClient = (db: DatabaseConfig, maxConnections = 10) =>
  connection(db, db.user, db.password, maxConnections)

/** Applies pending migrations with the owner's credentials; returns what it applied. Safe to run concurrently. */
export const migrate = Effect.fnUntraced(function* (db: DatabaseConfig) {
  if (Option.isNone(db.migration)) {
    return yield* new InvalidConfig({ reason: "ORCH_DB_MIGRATION_USER is not set: no credentials to migrate with" })
  }
  const owner = db.migration.value
  return yield* PgMigrator.run({
    loader: MigratorFileSystem.fromFileSystem(migrationsDirectory),
    table: migrationsTable
  }).pipe(Effect.provide(connection(db, owner.user, owner.password, 1)))
})

export class SchemaNotCurrent extends Schema.TaggedError<SchemaNotCurrent>()("SchemaNotCurrent", {
  applied: Schema.Int,
  required: Schema.Int
}) {
  override get message() {
    return `the database schema is at migration ${this.applied} but this version needs ${this.required}: run \`orchestrator migrate\` with the migration credentials (or set ORCH_DB_MIGRATION_USER)`
  }
}

/** The highest migration id shipped with this version of the service. */
export const requiredMigration = Effect.gen(function* () {
  const fs = yield* FileSystem.FileSystem
  const files = yield* fs.readDirectory(migrationsDirectory).pipe(Effect.orDie)
  return Math.max(0, ...files.map((file) => Number(/^(\d+)_/.exec(file)?.[1] ?? 0)))
})

/** Fails unless every migration this version ships has been applied; runs as the runtime role (read only). */
export const checkSchemaCurrent = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const required = yield* requiredMigration
  const exists = yield* sql<{ present: boolean }>`SELECT to_regclass(${migrationsTable}) IS NOT NULL AS present`
  const rows = exists[0]?.present
    ? yield* sql<{ latest: number | null }>`SELECT max(migration_id) AS latest FROM ${sql(migrationsTable)}`
    : []
  const applied = rows[0]?.latest ?? 0
  if (applied < required) return yield* new SchemaNotCurrent({ applied, required })
  return applied
})
