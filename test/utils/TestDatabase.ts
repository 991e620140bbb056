/**
 * A database of its own for each test file: copied from this run's bootstrapped template (roles, schema, grants
 * exactly as docker/postgres/bootstrap.sql makes them), migrated with the owner role unless asked not to, and
 * dropped afterwards. The store under test connects as the runtime role.
 */

import { readdirSync } from "node:fs"
import { NodeServices } from "@effect/platform-node"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { inject } from "vitest"
import type { DatabaseConfig } from "../../src/Config.ts"
import { migrate, migrationsDirectory } from "../../src/store/Database.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import type { StoreSettings } from "../../src/store/settings.ts"
import { bootstrap, passwords, pg, psql } from "./postgres.ts"

export class TestDatabase extends Context.Service<
  TestDatabase,
  {
    readonly name: string
    /** Runtime role, with the owner as migration credentials. */
    readonly config: DatabaseConfig
    /** Runs SQL as the superuser in this database; resolves with psql's unaligned output. */
    readonly superuser: (query: string) => Effect.Effect<string>
  }
>()("test/TestDatabase") {}

/** The migrations this version ships, as the migrator records them: `[id, name]` in id order. */
export const shippedMigrations: ReadonlyArray<readonly [number, string]> = readdirSync(migrationsDirectory)
  .flatMap((file) => {
    const match = /^(\d+)_(.+)\.ts$/.exec(file)
    return match ? [[Number(match[1]), match[2] ?? ""] as const] : []
  })
  .sort(([a], [b]) => a - b)

let counter = 0

export const databaseConfig = (name: string, overrides: Partial<DatabaseConfig> = {}): DatabaseConfig => ({
  host: pg.host,
  port: pg.port,
  database: name,
  user: "orchestrator_app",
  password: Redacted.make(passwords.app),
  ssl: "disable",
  migration: Option.some({ user: "orchestrator_owner", password: Redacted.make(passwords.owner) }),
  ...overrides
})

/**
 * A copy of the template. CREATE DATABASE copies the schema and its grants but not the database-level ones
 * (TEMPORARY revoked from PUBLIC, CONNECT), so the bootstrap runs on the copy too, as a DBA would run it.
 */
const createDatabase = Effect.promise(async () => {
  const template = inject("templateDatabase")
  const runnerPid = template.split("_")[2]
  counter += 1
  const name = `orch_t_${runnerPid}_${process.pid}_${counter}`
  await psql("postgres", ["-c", `CREATE DATABASE ${name} TEMPLATE ${template}`])
  await bootstrap(name)
  return name
})

const dropDatabase = (name: string) =>
  Effect.promise(() => psql("postgres", ["-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]))

export const layer = (options: { readonly migrated?: boolean } = {}) =>
  Layer.effect(
    TestDatabase,
    Effect.gen(function* () {
      const name = yield* Effect.acquireRelease(createDatabase, dropDatabase)
      const config = databaseConfig(name)
      if (options.migrated ?? true) yield* migrate(config).pipe(Effect.orDie)
      return TestDatabase.of({
        name,
        config,
        superuser: (query) => Effect.promise(() => psql(name, ["-At", "-c", query]))
      })
    })
  ).pipe(Layer.provide(NodeServices.layer))

/** A migrated test database, the runtime pool on it, and the PostgreSQL SagaStore. */
export const layerStore = (settings: Partial<StoreSettings> = {}) =>
  Layer.unwrap(
    Effect.map(TestDatabase, (db) => PgSagaStore.layerDatabase(db.config, { ...settings, maxConnections: 20 }))
  ).pipe(Layer.provideMerge(layer()))
