/**
 * PostgreSQL connections and migrations. Migrations run with the schema owner's credentials on a pool of their
 * own that closes as soon as they are applied; the runtime pool uses the DML-only role and never runs DDL.
 */

import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Effect, FileSystem, Option, type Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import * as MigratorFileSystem from "effect/sql/MigratorFileSystem"
import { isSqlError } from "effect/sql/SqlError"
import type { DatabaseConfig } from "../Config.ts"
import { InvalidConfig } from "../Config.ts"

export const migrationsDirectory = fileURLToPath(new URL("../../migrations", import.meta.url))
export const migrationsTable = "orchestrator.effect_sql_migrations"

/**
 * TLS as ORCH_DB_SSL asks: `require` encrypts without checking who answers; `verify-full` checks the server's
 * certificate against the CA (ORCH_DB_SSL_ROOT_CERT, else the system's) and that it names the host connected to.
 */
const tls = (db: DatabaseConfig) => {
  switch (db.ssl) {
    case "disable":
      return undefined
    case "require":
      return { rejectUnauthorized: false }
    case "verify-full":
      return {
        rejectUnauthorized: true,
        servername: db.host,
        ...(db.sslRootCert === undefined ? {} : { ca: readFileSync(db.sslRootCert, "utf8") })
      }
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

/**
 * A login the server refused (wrong password, no such role, pg_hba) as a configuration error naming the secret
 * file that holds the role's password. The message is the server's, which never contains the password.
 */
export const nameSecretFileOnAuthFailure =
  (user: string, file: string) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | InvalidConfig, R> =>
    Effect.mapError(effect, (error): E | InvalidConfig => {
      if (!isSqlError(error) || error.reason._tag !== "AuthenticationError") return error
      const cause = error.reason.cause
      const detail = cause instanceof Error && cause.message !== "" ? cause.message : error.message
      return new InvalidConfig({
        reason: `the database refused the login of role ${user} (${detail}): check its password in the secret file ${file}`
      })
    })

/** Applies pending migrations with the owner's credentials; returns what it applied. Safe to run concurrently. */
export const migrate = Effect.fnUntraced(function* (db: DatabaseConfig) {
  if (Option.isNone(db.migration)) {
    return yield* new InvalidConfig({ reason: "ORCH_DB_MIGRATION_USER is not set: no credentials to migrate with" })
  }
  const owner = db.migration.value
  return yield* PgMigrator.run({
    loader: MigratorFileSystem.fromFileSystem(migrationsDirectory),
    table: migrationsTable
  }).pipe(
    Effect.provide(connection(db, owner.user, owner.password, 1)),
    nameSecretFileOnAuthFailure(owner.user, "db_migration_password")
  )
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

/** The runtime role holds more than DML on its tables: the service refuses to run with it (TR-DB-6). */
export class RuntimeRoleTooPowerful extends Schema.TaggedError<RuntimeRoleTooPowerful>()("RuntimeRoleTooPowerful", {
  role: Schema.String,
  reasons: Schema.Array(Schema.String)
}) {
  override get message() {
    return (
      `the runtime database role ${this.role} ${this.reasons.join(", ")}: connect as a role with only USAGE on the ` +
      "schema and SELECT/INSERT/UPDATE/DELETE on its tables (docker/postgres/bootstrap.sql creates orchestrator_app)"
    )
  }
}

/** What the runtime role can do beyond DML, as PostgreSQL sees it. Runs as the runtime role. */
export const runtimeRolePrivileges = Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ role: string; superuser: boolean; owns_schema: boolean; can_create: boolean }>`
    SELECT current_user AS role,
           r.rolsuper AS superuser,
           pg_has_role(current_user, n.nspowner, 'USAGE') AS owns_schema,
           has_schema_privilege(current_user, n.oid, 'CREATE') AS can_create
    FROM pg_roles r, pg_namespace n
    WHERE r.rolname = current_user AND n.nspname = 'orchestrator'`
  const row = rows[0]
  const reasons = [
    ...(row?.superuser ? ["is a superuser"] : []),
    ...(row?.owns_schema ? ["owns the orchestrator schema (or is a member of its owner)"] : []),
    ...(row?.can_create ? ["can CREATE in the orchestrator schema"] : [])
  ]
  return { role: row?.role ?? "unknown", reasons }
})

/** Fails unless the runtime role is least-privileged, or logs loudly when an override allows it anyway. */
export const checkLeastPrivilege = (allowPrivileged: boolean) =>
  Effect.gen(function* () {
    const { role, reasons } = yield* runtimeRolePrivileges
    if (reasons.length === 0) return
    const error = new RuntimeRoleTooPowerful({ role, reasons })
    if (!allowPrivileged) return yield* error
    yield* Effect.logWarning(
      `DEVELOPMENT OVERRIDE (ORCH_DB_ALLOW_PRIVILEGED_ROLE=true): running although ${error.message}. Never in production.`
    )
  })
