import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { freePort } from "../utils/freePort.ts"
import { passwords } from "../utils/postgres.ts"
import { secretsDirectory, start, startScoped } from "../utils/processes.ts"
import { shippedMigrations, TestDatabase, layer as testDatabase } from "../utils/TestDatabase.ts"

const secrets = secretsDirectory({
  db_password: passwords.app,
  db_migration_password: passwords.owner,
  api_tokens: "service-test-token"
})

const envFor = (db: TestDatabase["Service"], extra: Record<string, string> = {}) => ({
  ORCH_DB_HOST: db.config.host,
  ORCH_DB_PORT: String(db.config.port),
  ORCH_DB_NAME: db.name,
  ORCH_SECRETS_DIR: secrets,
  ...extra
})
const asOwner = { ORCH_DB_MIGRATION_USER: "orchestrator_owner" }

const migrationCount = (db: TestDatabase["Service"]) =>
  db.superuser("SELECT count(*) FROM orchestrator.effect_sql_migrations").pipe(Effect.map((out) => Number(out.trim())))

describe("orchestrator service and CLI", () => {
  layer(testDatabase({ migrated: false }), { excludeTestServices: true, timeout: "60 seconds" })(
    "on a fresh database",
    (it) => {
      it.effect("refuses to start while the schema is not current and no migration user is given", () =>
        Effect.gen(function* () {
          const db = yield* TestDatabase
          const service = start(["src/main.ts"], envFor(db))
          assert.strictEqual(yield* service.exited, 1)
          assert.include(service.output(), "orchestrator migrate")
        })
      )

      it.effect("applies the migrations exactly once when four instances start together", () =>
        Effect.gen(function* () {
          const db = yield* TestDatabase
          // Each instance serves the HTTP API on a port of its own.
          const instances = yield* Effect.forEach(Array.from({ length: 4 }), () =>
            Effect.flatMap(freePort, (port) =>
              startScoped(["src/main.ts"], envFor(db, { ...asOwner, ORCH_HTTP_PORT: String(port) }))
            )
          )
          const started = yield* Effect.forEach(
            instances,
            (instance) => instance.waitFor(/applied migrations: .*|schema is up to date/, 45_000),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(started.filter((line) => line.startsWith("applied migrations")).length, 1)
          assert.strictEqual(started.filter((line) => line === "schema is up to date").length, 3)
          yield* Effect.forEach(instances, (instance) => instance.waitFor(/state store healthy/, 30_000))
          assert.strictEqual(yield* migrationCount(db), shippedMigrations.length)
          // SIGTERM is a clean shutdown.
          for (const instance of instances) instance.child.kill("SIGTERM")
          assert.deepStrictEqual(yield* Effect.forEach(instances, (instance) => instance.exited), [0, 0, 0, 0])
        })
      )

      it.effect("`orchestrator migrate` prints what it applied and exits 0, then has nothing to do", () =>
        Effect.gen(function* () {
          const db = yield* TestDatabase
          const again = start(["src/cli.ts", "migrate"], envFor(db, asOwner))
          assert.strictEqual(yield* again.exited, 0)
          assert.include(again.output(), "schema is up to date: no migration applied")
          assert.strictEqual(yield* migrationCount(db), shippedMigrations.length)
        })
      )

      it.effect("`orchestrator migrate` exits 1 with a clear message without migration credentials", () =>
        Effect.gen(function* () {
          const db = yield* TestDatabase
          const noUser = start(["src/cli.ts", "migrate"], envFor(db))
          assert.strictEqual(yield* noUser.exited, 1)
          assert.include(noUser.output(), "ORCH_DB_MIGRATION_USER is not set")
          const runtimeRole = start(
            ["src/cli.ts", "migrate"],
            envFor(db, { ORCH_DB_MIGRATION_USER: "orchestrator_app" })
          )
          assert.strictEqual(yield* runtimeRole.exited, 1)
          assert.strictEqual(yield* migrationCount(db), shippedMigrations.length)
        })
      )
    }
  )

  it.effect(
    "applies pending migrations with `orchestrator migrate` on a database bootstrapped from scratch",
    () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase
        const migrate = start(["src/cli.ts", "migrate"], envFor(db, asOwner))
        assert.strictEqual(yield* migrate.exited, 0)
        const printed = migrate.output().match(/^applied .*$/gm)
        assert.deepStrictEqual(
          printed,
          shippedMigrations.map(([id, name]) => `applied ${String(id).padStart(4, "0")}_${name}`)
        )
        assert.strictEqual(yield* migrationCount(db), shippedMigrations.length)
      }).pipe(Effect.provide(testDatabase({ migrated: false }))),
    { timeout: 60_000 }
  )

  it.effect("`orchestrator definitions` prints each saga as its transition table, as text or JSON", () =>
    Effect.gen(function* () {
      const json = start(["src/cli.ts", "definitions", "--json"], {})
      assert.strictEqual(yield* json.exited, 0)
      const [definition] = JSON.parse(json.output()) as Array<{ type: string; transitions: Array<{ state: string }> }>
      assert.strictEqual(definition?.type, "BALANCE_CALCULATION")
      assert.deepStrictEqual(
        definition?.transitions.map((t) => t.state),
        ["PREPARING_BRANCH", "MESHING_GEOMETRY", "AWAITING_CONDENSER_INPUT", "RUNNING_SOLVER", "PUBLISHING_RESULTS"]
      )
      const text = start(["src/cli.ts", "definitions"], {})
      assert.strictEqual(yield* text.exited, 0)
      assert.match(text.output(), /^AWAITING_CONDENSER_INPUT\s+signal condenser_input\s+RUNNING_SOLVER/m)
    })
  )

  it.effect("refuses a password in the environment, naming the file, and exits 1", () =>
    Effect.gen(function* () {
      const service = start(["src/main.ts"], {
        ORCH_DB_HOST: "127.0.0.1",
        ORCH_DB_PASSWORD: "hunter2",
        ORCH_SECRETS_DIR: secrets
      })
      assert.strictEqual(yield* service.exited, 1)
      assert.include(service.output(), "secret file db_password")
      assert.notInclude(service.output(), "hunter2")
    })
  )

  it.live(
    "runs sagas end to end in embedded mode with no database configured, says so, and stops cleanly on SIGTERM",
    () =>
      Effect.gen(function* () {
        const service = yield* startScoped(["src/main.ts"], {
          ORCH_SECRETS_DIR: secrets,
          ORCH_HTTP_PORT: String(yield* freePort)
        })
        yield* service.waitFor(/EMBEDDED MODE/, 30_000)
        yield* service.waitFor(/applied migrations: 1_create_saga_tables/, 30_000)
        yield* service.waitFor(/started 3 BALANCE_CALCULATION sagas/, 30_000)
        // The demonstration runs sagas end to end: PGlite, engine, in-memory broker and simulated workers.
        yield* service.waitFor(/all 3 demo sagas finished: \d+ completed, \d+ failed, 0 cancelled/, 60_000)
        assert.match(service.output(), /(COMPLETED|FAILED)\s+(COMPLETED|FAILED)/)
        service.child.kill("SIGTERM")
        assert.strictEqual(yield* service.exited, 0)
      }),
    { timeout: 100_000 }
  )
})
