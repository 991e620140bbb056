/**
 * PostgreSQL connections and migrations. Migrations run with the schema owner's credentials on a pool of their
 * own that closes as soon as they are applied; the runtime pool uses the DML-only role and never runs DDL. `layer`
 * is the service's pool, on the configured database or the embedded one.
 */

import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Effect, FileSystem, Layer, Option, type Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import * as MigratorFileSystem from "effect/sql/MigratorFileSystem"
import { isSqlError } from "effect/sql/SqlError"
import { AppConfig, Database, type DatabaseConfig, InvalidConfig } from "../Config.ts"
import * as Embedded from "./Embedded.ts"

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
export const migrate = Effect.fn("Database.migrate")(function* (db: DatabaseConfig) {
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
export const checkLeastPrivilege = Effect.fn("Database.checkLeastPrivilege")(function* (allowPrivileged: boolean) {
  const { role, reasons } = yield* runtimeRolePrivileges
  if (reasons.length === 0) return
  const error = new RuntimeRoleTooPowerful({ role, reasons })
  if (!allowPrivileged) return yield* error
  yield* Effect.logWarning(
    `DEVELOPMENT OVERRIDE (ORCH_DB_ALLOW_PRIVILEGED_ROLE=true): running although ${error.message}. Never in production.`
  )
})

const announceEmbedded = Effect.logWarning(
  [
    "EMBEDDED MODE: no database configured (ORCH_DB_HOST is unset).",
    "State lives in an in-process PostgreSQL (PGlite) and is lost when the process stops. For real use, set",
    "ORCH_DB_HOST, ORCH_DB_PORT, ORCH_DB_NAME, ORCH_DB_USER (and ORCH_DB_MIGRATION_USER) with the password files",
    "db_password (and db_migration_password) in ORCH_SECRETS_DIR, and ORCH_AMQP_URL with amqp_password; see README.md."
  ].join("\n")
)

/** Applies pending migrations when the configuration gives migration credentials, and says what it did. */
const migrateAtStartup = Effect.fnUntraced(function* (db: DatabaseConfig) {
  if (Option.isNone(db.migration)) return
  const applied = yield* migrate(db)
  yield* Effect.logInfo(
    applied.length === 0
      ? "schema is up to date"
      : `applied migrations: ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
  )
})

/**
 * Before serving: the schema is current, and the runtime role can do no more than DML (TR-DB-6). The first queries
 * as the runtime role: a refused login names the secret file of its password. The embedded database has a single
 * all-powerful user and is exempt from the privilege check.
 */
const startupChecks = (database: Database, allowPrivilegedDbRole: boolean) =>
  Database.$match(database, {
    External: ({ config }) =>
      checkSchemaCurrent.pipe(
        nameSecretFileOnAuthFailure(config.user, "db_password"),
        Effect.andThen(checkLeastPrivilege(allowPrivilegedDbRole))
      ),
    Embedded: () => checkSchemaCurrent.pipe(Effect.asVoid)
  })

/**
 * The service's runtime pool: on the configured database, or, in embedded mode, on an in-process one started for
 * the layer's lifetime; migrated when migration credentials are given (always, embedded), and checked.
 */
export const layer = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    const { db, maxConnections } = yield* Database.$match(config.database, {
      External: ({ config }) => Effect.succeed({ db: config, maxConnections: 10 }),
      // PGlite has a single backend: one connection, or transactions of different fibers would interleave.
      Embedded: () => Effect.map(Effect.andThen(announceEmbedded, Embedded.start), (db) => ({ db, maxConnections: 1 }))
    })
    yield* migrateAtStartup(db)
    return runtimeClient(db, maxConnections).pipe(
      Layer.tap((context) =>
        Effect.provideContext(startupChecks(config.database, config.allowPrivilegedDbRole), context)
      )
    )
  })
)
