/**
 * TR-DB-6 as PostgreSQL enforces it: the runtime role reads and writes saga rows and nothing more — no DDL, no
 * objects anywhere, no reading outside its schema, no migrating — the owner is no superuser, and the bootstrap can
 * be run again without changing anything.
 */

import { execFile } from "node:child_process"
import { NodeServices } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
import type { DatabaseConfig } from "../../src/Config.ts"
import { migrate, runtimeClient } from "../../src/store/Database.ts"
import { bootstrap, bootstrapSql, passwords, pg } from "../utils/postgres.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"

/** The runtime role, connected exactly as the service connects its pool. */
class App extends Context.Service<App, PgClient.PgClient>()("test/store/Privileges/App") {}
/** The migration role. */
class Owner extends Context.Service<Owner, PgClient.PgClient>()("test/store/Privileges/Owner") {}
/** The `postgres` superuser: sets the stage and reads the catalog. */
class Superuser extends Context.Service<Superuser, PgClient.PgClient>()("test/store/Privileges/Superuser") {}

const asService = <I>(tag: Context.Service<I, PgClient.PgClient>, client: Layer.Layer<PgClient.PgClient, SqlError>) =>
  Layer.effect(tag, Effect.service(PgClient.PgClient)).pipe(Layer.provide(client))

const ownerConfig = (db: DatabaseConfig): DatabaseConfig => ({
  ...db,
  user: "orchestrator_owner",
  password: Redacted.make(passwords.owner)
})

/** The migration credentials swapped for the runtime role's. */
const migrationAsApp = (db: DatabaseConfig): DatabaseConfig => ({
  ...db,
  migration: Option.some({ user: db.user, password: db.password })
})

const databaseLayer = (options: { readonly migrated: boolean }) =>
  TestDatabase.layer(options).pipe(Layer.provideMerge(NodeServices.layer))

const clientsLayer = Layer.unwrap(
  Effect.map(TestDatabase.TestDatabase, (db) =>
    Layer.mergeAll(
      asService(App, runtimeClient(db.config, 2)),
      asService(Owner, runtimeClient(ownerConfig(db.config), 1)),
      asService(
        Superuser,
        PgClient.layer({ host: pg.host, port: pg.port, database: db.name, username: pg.superuser, maxConnections: 1 })
      )
    )
  )
)

const testLayer = (options: { readonly migrated: boolean }) =>
  clientsLayer.pipe(Layer.provideMerge(databaseLayer(options)))

// ---------------------------------------------------------------------------------------------------------------

const sqlState = (error: SqlError): string | undefined => {
  const cause = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

const denied = "AuthorizationError 42501"

/** How a statement ended: "ok", or the error's reason and SQLSTATE (42501 is insufficient_privilege). */
const outcome = <A, R>(effect: Effect.Effect<A, SqlError, R>) =>
  effect.pipe(
    Effect.match({
      onSuccess: () => "ok",
      onFailure: (error) => `${error.reason._tag} ${sqlState(error) ?? "?"}`
    })
  )

/** Each statement's outcome, labelled, so that one assertion shows every statement that got through. */
const outcomes = <R>(statements: ReadonlyArray<readonly [string, Effect.Effect<unknown, SqlError, R>]>) =>
  Effect.forEach(statements, ([label, statement]) => Effect.map(outcome(statement), (result) => [label, result]))

const allDenied = (statements: ReadonlyArray<readonly [string, unknown]>) =>
  statements.map(([label]) => [label, denied])

/** Everything that decides who may do what in this database, order-independent. */
const privilegeSnapshot = Effect.gen(function* () {
  const sql = yield* Superuser
  const [row] = yield* sql<{ snapshot: unknown }>`
    SELECT json_build_object(
      'relations', (SELECT json_agg(json_build_object('name', n.nspname || '.' || c.relname, 'kind', c.relkind,
                                                      'owner', c.relowner::regrole::text, 'acl', ARRAY(SELECT unnest(c.relacl::text[]) ORDER BY 1))
                                    ORDER BY n.nspname, c.relname)
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname IN ('orchestrator', 'public')),
      'schemas', (SELECT json_agg(json_build_object('name', nspname, 'owner', nspowner::regrole::text,
                                                    'acl', ARRAY(SELECT unnest(nspacl::text[]) ORDER BY 1)) ORDER BY nspname)
                  FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'),
      'database', (SELECT ARRAY(SELECT unnest(datacl::text[]) ORDER BY 1) FROM pg_database WHERE datname = current_database()),
      'defaults', (SELECT json_agg(json_build_object('role', defaclrole::regrole::text,
                                                     'schema', defaclnamespace::regnamespace::text,
                                                     'type', defaclobjtype, 'acl', ARRAY(SELECT unnest(defaclacl::text[]) ORDER BY 1))
                                   ORDER BY defaclrole::regrole::text, defaclnamespace, defaclobjtype)
                   FROM pg_default_acl),
      'roles', (SELECT json_agg(json_build_object('name', rolname, 'super', rolsuper, 'createdb', rolcreatedb,
                                                  'createrole', rolcreaterole, 'login', rolcanlogin,
                                                  'replication', rolreplication, 'bypassrls', rolbypassrls,
                                                  'inherit', rolinherit,
                                                  'memberOf', ARRAY(SELECT roleid::regrole::text FROM pg_auth_members
                                                                    WHERE member = r.oid ORDER BY 1))
                                ORDER BY rolname)
                FROM pg_roles r WHERE rolname IN ('orchestrator_owner', 'orchestrator_app'))
    ) AS snapshot`
  return row?.snapshot
})

/** Runs bootstrap.sql the way a DBA does (no ON_ERROR_STOP on the command line): psql's exit code and stderr. */
const runBootstrapAsDba = (database: string, variables: ReadonlyArray<string>) =>
  Effect.callback<{ readonly exitCode: number; readonly stderr: string }>((resume) => {
    execFile(
      "psql",
      [
        "-X",
        "-q",
        "-h",
        pg.host,
        "-p",
        String(pg.port),
        "-U",
        pg.superuser,
        "-d",
        database,
        ...variables.flatMap((variable) => ["-v", variable]),
        "-f",
        bootstrapSql
      ],
      { env: { ...process.env, PGCONNECT_TIMEOUT: "5" } },
      (error, _stdout, stderr) => {
        const exitCode = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        resume(Effect.succeed({ exitCode, stderr }))
      }
    )
  })

const migrationRows = Effect.gen(function* () {
  const sql = yield* Superuser
  return yield* sql<{ migration_id: number; name: string }>`
    SELECT migration_id, name FROM orchestrator.effect_sql_migrations ORDER BY migration_id`
})

const relationsIn = (schema: string) =>
  Effect.gen(function* () {
    const sql = yield* Superuser
    const rows = yield* sql<{ relname: string }>`
      SELECT relname FROM pg_class WHERE relnamespace = ${schema}::regnamespace AND relkind IN ('r', 'v', 'm', 'p')
      ORDER BY relname`
    return rows.map((row) => row.relname)
  })

const sagaTables = [
  "saga_idempotency_keys",
  "saga_ignored_events",
  "saga_instances",
  "saga_outbox",
  "saga_timers",
  "saga_transitions"
]

// ---------------------------------------------------------------------------------------------------------------

layer(testLayer({ migrated: true }), { excludeTestServices: true, timeout: "60 seconds" })(
  "database privileges (TR-DB-6), migrated database",
  (it) => {
    it.effect("the runtime role reads, inserts, updates and deletes saga rows", () =>
      Effect.gen(function* () {
        const sql = yield* App
        const id = "00000000-0000-7000-8000-00000000a001"
        const inserted = yield* sql<{ id: string }>`
          INSERT INTO orchestrator.saga_instances (id, saga_type, current_state, status, context, progress, correlation_id)
          VALUES (${id}, 'PRIVILEGES_TEST', 'PREPARING', 'RUNNING', '{}', '{}', ${id}) RETURNING id`
        const updated = yield* sql<{ status: string }>`
          UPDATE orchestrator.saga_instances SET status = 'COMPLETED' WHERE id = ${id} RETURNING status`
        const read = yield* sql<{ status: string }>`SELECT status FROM orchestrator.saga_instances WHERE id = ${id}`
        const deleted = yield* sql<{
          id: string
        }>`DELETE FROM orchestrator.saga_instances WHERE id = ${id} RETURNING id`
        assert.deepStrictEqual(
          [inserted, updated, read, deleted],
          [[{ id }], [{ status: "COMPLETED" }], [{ status: "COMPLETED" }], [{ id }]]
        )
        const [user] = yield* sql<{ current_user: string }>`SELECT current_user`
        assert.strictEqual(user?.current_user, "orchestrator_app")
      })
    )

    it.effect("the runtime role can create nothing and cannot drop, alter or truncate the schema's tables", () =>
      Effect.gen(function* () {
        const sql = yield* App
        const statements = [
          ["CREATE TABLE in orchestrator", sql`CREATE TABLE orchestrator.intruder (x int)`],
          ["CREATE VIEW in orchestrator", sql`CREATE VIEW orchestrator.intruder AS SELECT 1 AS x`],
          ["CREATE INDEX on saga_instances", sql`CREATE INDEX intruder ON orchestrator.saga_instances (saga_type)`],
          ["CREATE TABLE in public", sql`CREATE TABLE public.intruder (x int)`],
          ["CREATE FUNCTION in public", sql`CREATE FUNCTION public.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'`],
          ["CREATE TEMP TABLE", sql`CREATE TEMP TABLE intruder (x int)`],
          ["CREATE SCHEMA", sql`CREATE SCHEMA intruder`],
          ["DROP TABLE saga_instances", sql`DROP TABLE orchestrator.saga_instances`],
          ["ALTER TABLE saga_instances", sql`ALTER TABLE orchestrator.saga_instances ADD COLUMN x int`],
          ["TRUNCATE saga_instances", sql`TRUNCATE orchestrator.saga_instances`],
          ["DROP SCHEMA orchestrator", sql`DROP SCHEMA orchestrator CASCADE`]
        ] as const
        assert.deepStrictEqual(yield* outcomes(statements), allDenied(statements))

        const su = yield* Superuser
        const intruders = yield* su<{ name: string }>`
          SELECT relname AS name FROM pg_class WHERE relname = 'intruder'
          UNION ALL SELECT nspname FROM pg_namespace WHERE nspname = 'intruder'
          UNION ALL SELECT proname FROM pg_proc WHERE proname = 'intruder'`
        assert.deepStrictEqual(intruders, [])
        assert.deepStrictEqual(yield* relationsIn("orchestrator"), ["effect_sql_migrations", ...sagaTables])
        const columns = yield* su<{ count: number }>`
          SELECT count(*)::int AS count FROM information_schema.columns
          WHERE table_schema = 'orchestrator' AND table_name = 'saga_instances'`
        assert.deepStrictEqual(columns, [{ count: 10 }])
      })
    )

    it.effect("the runtime role reads the migrations table but cannot change or lock it", () =>
      Effect.gen(function* () {
        const sql = yield* App
        const before = yield* migrationRows
        assert.deepStrictEqual(
          before,
          TestDatabase.shippedMigrations.map(([migration_id, name]) => ({ migration_id, name }))
        )
        const read = yield* sql<{ migration_id: number }>`SELECT migration_id FROM orchestrator.effect_sql_migrations`
        assert.deepStrictEqual(
          read,
          TestDatabase.shippedMigrations.map(([migration_id]) => ({ migration_id }))
        )
        const statements = [
          ["INSERT", sql`INSERT INTO orchestrator.effect_sql_migrations (migration_id, name) VALUES (999, 'intruder')`],
          ["UPDATE", sql`UPDATE orchestrator.effect_sql_migrations SET name = 'intruder'`],
          ["DELETE", sql`DELETE FROM orchestrator.effect_sql_migrations`],
          ["TRUNCATE", sql`TRUNCATE orchestrator.effect_sql_migrations`],
          [
            "LOCK ACCESS EXCLUSIVE",
            sql.withTransaction(sql`LOCK TABLE orchestrator.effect_sql_migrations IN ACCESS EXCLUSIVE MODE`)
          ]
        ] as const
        assert.deepStrictEqual(yield* outcomes(statements), allDenied(statements))
        assert.deepStrictEqual(yield* migrationRows, before)
      })
    )

    it.effect("the runtime role cannot read outside its schema", () =>
      Effect.gen(function* () {
        const su = yield* Superuser
        yield* su`CREATE TABLE public.outside (secret text)`
        yield* su`INSERT INTO public.outside VALUES ('not for the orchestrator')`
        assert.deepStrictEqual(yield* su`SELECT secret FROM public.outside`, [{ secret: "not for the orchestrator" }])
        const sql = yield* App
        const statements = [
          ["SELECT from public.outside", sql`SELECT secret FROM public.outside`],
          ["pg_read_file", sql`SELECT pg_read_file('PG_VERSION')`],
          ["pg_ls_dir", sql`SELECT pg_ls_dir('.')`]
        ] as const
        assert.deepStrictEqual(yield* outcomes(statements), allDenied(statements))
        yield* su`DROP TABLE public.outside`
      })
    )

    it.effect("the runtime role holds exactly DML on the saga tables and SELECT on the migrations table", () =>
      Effect.gen(function* () {
        const su = yield* Superuser
        // Effective privileges (through PUBLIC and any membership too) on every table a user can see.
        const effective = yield* su<{ name: string; privileges: string }>`
          SELECT n.nspname || '.' || c.relname AS name,
                 coalesce(string_agg(p.privilege, ',' ORDER BY p.privilege)
                          FILTER (WHERE has_table_privilege('orchestrator_app', c.oid, p.privilege)), '') AS privileges
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN unnest(ARRAY['DELETE', 'INSERT', 'REFERENCES', 'SELECT', 'TRIGGER', 'TRUNCATE', 'UPDATE'])
            AS p(privilege)
          WHERE n.nspname IN ('orchestrator', 'public') AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
          GROUP BY 1 ORDER BY 1`
        assert.deepStrictEqual(effective, [
          { name: "orchestrator.effect_sql_migrations", privileges: "SELECT" },
          ...sagaTables.map((table) => ({ name: `orchestrator.${table}`, privileges: "DELETE,INSERT,SELECT,UPDATE" }))
        ])
        const grants = yield* su<{ privilege_type: string }>`
          SELECT privilege_type FROM information_schema.role_table_grants
          WHERE grantee = 'orchestrator_app' AND table_schema = 'orchestrator' AND table_name = 'effect_sql_migrations'`
        assert.deepStrictEqual(grants, [{ privilege_type: "SELECT" }])

        const [scope] = yield* su<Record<string, boolean>>`
          SELECT has_schema_privilege('orchestrator_app', 'orchestrator', 'USAGE') AS orchestrator_usage,
                 has_schema_privilege('orchestrator_app', 'orchestrator', 'CREATE') AS orchestrator_create,
                 has_schema_privilege('orchestrator_app', 'public', 'CREATE') AS public_create,
                 has_database_privilege('orchestrator_app', current_database(), 'CREATE') AS database_create,
                 has_database_privilege('orchestrator_app', current_database(), 'TEMPORARY') AS database_temporary,
                 has_database_privilege('orchestrator_app', current_database(), 'CONNECT') AS database_connect,
                 EXISTS (SELECT FROM pg_auth_members WHERE member = 'orchestrator_app'::regrole) AS member_of_any_role`
        assert.deepStrictEqual(scope, {
          orchestrator_usage: true,
          orchestrator_create: false,
          public_create: false,
          database_create: false,
          database_temporary: false,
          database_connect: true,
          member_of_any_role: false
        })

        // What future tables will grant: DML on tables and sequence use, to the runtime role only.
        const defaults = yield* su<{ schema: string; type: string; acl: ReadonlyArray<string> }>`
          SELECT defaclnamespace::regnamespace::text AS schema, defaclobjtype::text AS type,
                 ARRAY(SELECT unnest(defaclacl::text[]) ORDER BY 1) AS acl
          FROM pg_default_acl ORDER BY 1, 2`
        assert.deepStrictEqual(defaults, [
          { schema: "orchestrator", type: "S", acl: ["orchestrator_app=rU/orchestrator_owner"] },
          { schema: "orchestrator", type: "r", acl: ["orchestrator_app=arwd/orchestrator_owner"] }
        ])
      })
    )

    it.effect("neither role is a superuser and neither can create roles or databases", () =>
      Effect.gen(function* () {
        const su = yield* Superuser
        const roles = yield* su`
          SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles
          WHERE rolname IN ('orchestrator_owner', 'orchestrator_app') ORDER BY rolname`
        assert.deepStrictEqual(
          roles,
          ["orchestrator_app", "orchestrator_owner"].map((rolname) => ({
            rolname,
            rolsuper: false,
            rolcreaterole: false,
            rolcreatedb: false,
            rolreplication: false,
            rolbypassrls: false
          }))
        )
        const owner = yield* Owner
        const app = yield* App
        const statements = [
          ["owner: CREATE ROLE", owner`CREATE ROLE orchestrator_intruder`],
          ["owner: CREATE DATABASE", owner`CREATE DATABASE orchestrator_intruder`],
          ["owner: ALTER ROLE SUPERUSER", owner`ALTER ROLE orchestrator_owner SUPERUSER`],
          ["app: CREATE ROLE", app`CREATE ROLE orchestrator_intruder`],
          ["app: CREATE DATABASE", app`CREATE DATABASE orchestrator_intruder`],
          ["app: ALTER ROLE SUPERUSER", app`ALTER ROLE orchestrator_app SUPERUSER`]
        ] as const
        assert.deepStrictEqual(yield* outcomes(statements), allDenied(statements))
        // The owner does run DDL in its schema (so the refusals above are about the role, not the connection).
        yield* owner`CREATE TABLE orchestrator.owner_probe (x int)`
        yield* owner`DROP TABLE orchestrator.owner_probe`
      })
    )

    it.effect("the migrator fails with the runtime role's credentials and leaves the migrations table as it was", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        const before = yield* migrationRows
        const error = yield* migrate(migrationAsApp(db.config)).pipe(Effect.flip)
        assert.isTrue(isSqlError(error), `expected an SqlError, got ${String(error)}`)
        if (isSqlError(error)) assert.strictEqual(`${error.reason._tag} ${sqlState(error)}`, denied)
        assert.deepStrictEqual(yield* migrationRows, before)
        assert.deepStrictEqual(yield* relationsIn("orchestrator"), ["effect_sql_migrations", ...sagaTables])
      })
    )

    it.effect("running the bootstrap twice more changes no privilege", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        const before = yield* privilegeSnapshot
        yield* Effect.promise(() => bootstrap(db.name))
        yield* Effect.promise(() => bootstrap(db.name))
        assert.deepStrictEqual(yield* privilegeSnapshot, before)
        // Same passwords: the runtime pool reconnects as before.
        const app = yield* App
        assert.deepStrictEqual(yield* app`SELECT count(*)::int AS n FROM orchestrator.effect_sql_migrations`, [
          { n: TestDatabase.shippedMigrations.length }
        ])
      })
    )

    it.effect("the bootstrap refuses to run without both passwords, naming the missing variable", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        const before = yield* privilegeSnapshot
        const withoutAny = yield* runBootstrapAsDba(db.name, [])
        const withoutApp = yield* runBootstrapAsDba(db.name, [`owner_password=${passwords.owner}`])
        const withoutOwner = yield* runBootstrapAsDba(db.name, [`app_password=${passwords.app}`])
        assert.notStrictEqual(withoutAny.exitCode, 0)
        assert.match(withoutAny.stderr, /owner_password/)
        assert.notStrictEqual(withoutApp.exitCode, 0)
        assert.match(withoutApp.stderr, /app_password/)
        assert.notStrictEqual(withoutOwner.exitCode, 0)
        assert.match(withoutOwner.stderr, /owner_password/)
        assert.deepStrictEqual(yield* privilegeSnapshot, before)
        // Both given: it runs (the refusals above are about the variables, not the invocation).
        const complete = yield* runBootstrapAsDba(db.name, [
          `owner_password=${passwords.owner}`,
          `app_password=${passwords.app}`
        ])
        assert.strictEqual(complete.exitCode, 0, complete.stderr)
      })
    )
  }
)

layer(testLayer({ migrated: false }), { excludeTestServices: true, timeout: "60 seconds" })(
  "database privileges (TR-DB-6), database not yet migrated",
  (it) => {
    it.effect("the migrator fails with the runtime role's credentials and creates nothing; the owner's succeeds", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        assert.deepStrictEqual(yield* relationsIn("orchestrator"), [])
        const error = yield* migrate(migrationAsApp(db.config)).pipe(Effect.flip)
        assert.isTrue(isSqlError(error), `expected an SqlError, got ${String(error)}`)
        if (isSqlError(error)) assert.strictEqual(`${error.reason._tag} ${sqlState(error)}`, denied)
        assert.deepStrictEqual(yield* relationsIn("orchestrator"), [])
        assert.deepStrictEqual(yield* relationsIn("public"), [])

        const applied = yield* migrate(db.config)
        assert.deepStrictEqual(applied, TestDatabase.shippedMigrations)
        assert.deepStrictEqual(yield* relationsIn("orchestrator"), ["effect_sql_migrations", ...sagaTables])
      })
    )
  }
)
