import { inspect } from "node:util"
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option, Redacted } from "effect"
import { load } from "../src/Config.ts"
import { externalDatabase, rabbitMq } from "./utils/config.ts"
import { secretsDirectory } from "./utils/processes.ts"

const secretsDir = secretsDirectory

const loadWith = (env: Record<string, string>) =>
  load.pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })),
    Effect.provide(NodeServices.layer)
  )

const reasonOf = (env: Record<string, string>) => Effect.flip(loadWith(env)).pipe(Effect.map((error) => error.reason))

describe("AppConfig", () => {
  it.effect("runs embedded with an in-memory broker when nothing is configured", () =>
    Effect.gen(function* () {
      const config = yield* loadWith({ ORCH_SECRETS_DIR: secretsDir({}) })
      assert.strictEqual(config.database._tag, "Embedded")
      assert.strictEqual(config.workers._tag, "Simulated")
      assert.strictEqual(config.httpPort, 8080)
      assert.strictEqual(config.maxContextBytes, 65536)
      assert.isTrue(Option.isNone(config.otlpEndpoint))
      assert.strictEqual(config.logLevel, "Info")
      assert.isTrue(Duration.equals(config.stuckThreshold, Duration.minutes(15)))
    })
  )

  it.effect("reads ORCH_STUCK_THRESHOLD as a duration, and refuses one it cannot read", () =>
    Effect.gen(function* () {
      const dir = secretsDir({})
      const config = yield* loadWith({ ORCH_SECRETS_DIR: dir, ORCH_STUCK_THRESHOLD: "40 minutes" })
      assert.isTrue(Duration.equals(config.stuckThreshold, Duration.minutes(40)))
      assert.include(yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_STUCK_THRESHOLD: "soon" }), "ORCH_STUCK_THRESHOLD")
    })
  )

  it.effect("keeps finished sagas 30 days unless ORCH_RETENTION says otherwise, or off; reads the size limits", () =>
    Effect.gen(function* () {
      const dir = secretsDir({})
      const defaults = yield* loadWith({ ORCH_SECRETS_DIR: dir })
      assert.isTrue(Option.exists(defaults.retention, Duration.equals(Duration.days(30))))
      assert.strictEqual(defaults.maxPageBytes, 2 * 1024 * 1024)
      const custom = yield* loadWith({
        ORCH_SECRETS_DIR: dir,
        ORCH_RETENTION: "12 hours",
        ORCH_MAX_PAGE_BYTES: "65536"
      })
      assert.isTrue(Option.exists(custom.retention, Duration.equals(Duration.hours(12))))
      assert.strictEqual(custom.maxPageBytes, 65_536)
      assert.isTrue(Option.isNone((yield* loadWith({ ORCH_SECRETS_DIR: dir, ORCH_RETENTION: "OFF" })).retention))
      for (const bad of ["soon", "0 days", "-1 days"]) {
        assert.include(yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_RETENTION: bad }), "ORCH_RETENTION")
      }
      assert.include(yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_MAX_PAGE_BYTES: "0" }), "ORCH_MAX_PAGE_BYTES")
      assert.deepStrictEqual(defaults.messageLimits, {
        bodyBytes: 16 * 1024 * 1024,
        idLength: 255,
        errorMessageLength: 2_000,
        jsonDepth: 64
      })
      const limits = yield* loadWith({
        ORCH_SECRETS_DIR: dir,
        ORCH_MAX_REPLY_BYTES: "1048576",
        ORCH_MAX_REPLY_ID_CHARS: "64",
        ORCH_MAX_ERROR_MESSAGE_CHARS: "500",
        ORCH_MAX_REPLY_DEPTH: "16"
      })
      assert.deepStrictEqual(limits.messageLimits, {
        bodyBytes: 1_048_576,
        idLength: 64,
        errorMessageLength: 500,
        jsonDepth: 16
      })
    })
  )

  it.effect(
    "decides the run mode once: an external database with ORCH_DB_HOST, RabbitMQ workers with ORCH_AMQP_URL",
    () =>
      Effect.gen(function* () {
        const config = yield* loadWith({
          ORCH_SECRETS_DIR: secretsDir({ db_password: "x", amqp_password: "y" }),
          ORCH_DB_HOST: "db.internal",
          ORCH_AMQP_URL: "amqp://orchestrator@rabbitmq:5672/"
        })
        assert.strictEqual(externalDatabase(config).host, "db.internal")
        assert.strictEqual(rabbitMq(config).url, "amqp://orchestrator@rabbitmq:5672/")
      })
  )

  it.effect("reads ORCH_LOG_LEVEL in any case, with `warning` for `warn`, and refuses a level it does not know", () =>
    Effect.gen(function* () {
      const dir = secretsDir({})
      assert.strictEqual((yield* loadWith({ ORCH_SECRETS_DIR: dir, ORCH_LOG_LEVEL: "WARNING" })).logLevel, "Warn")
      assert.strictEqual((yield* loadWith({ ORCH_SECRETS_DIR: dir, ORCH_LOG_LEVEL: "debug" })).logLevel, "Debug")
      assert.strictEqual((yield* loadWith({ ORCH_SECRETS_DIR: dir, ORCH_LOG_LEVEL: "Error" })).logLevel, "Error")
      const reason = yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_LOG_LEVEL: "loud" })
      assert.include(reason, "ORCH_LOG_LEVEL must be one of")
      assert.include(reason, "warn")
    })
  )

  it.effect("reads the database settings from the environment and its passwords from files", () =>
    Effect.gen(function* () {
      const dir = secretsDir({ db_password: "app-secret", db_migration_password: "owner-secret" })
      const config = yield* loadWith({
        ORCH_SECRETS_DIR: dir,
        ORCH_DB_HOST: "db.internal",
        ORCH_DB_PORT: "6432",
        ORCH_DB_NAME: "balance",
        ORCH_DB_MIGRATION_USER: "orchestrator_owner",
        ORCH_DB_SSL: "verify-full",
        ORCH_MAX_CONTEXT_BYTES: "1024"
      })
      const db = externalDatabase(config)
      assert.deepInclude(db, {
        host: "db.internal",
        port: 6432,
        database: "balance",
        user: "orchestrator_app",
        ssl: "verify-full"
      })
      assert.strictEqual(Redacted.value(db.password), "app-secret")
      const migration = Option.getOrThrow(db.migration)
      assert.strictEqual(migration.user, "orchestrator_owner")
      assert.strictEqual(Redacted.value(migration.password), "owner-secret")
      assert.strictEqual(config.maxContextBytes, 1024)
      // Secrets never show when the configuration is printed or logged.
      for (const shown of [inspect(config, { depth: 10 }), JSON.stringify(config), String(db.password)]) {
        assert.notInclude(shown, "app-secret")
        assert.notInclude(shown, "owner-secret")
      }
    })
  )

  it.effect("names the missing secret file", () =>
    Effect.gen(function* () {
      const dir = secretsDir({})
      assert.include(yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_DB_HOST: "db" }), `${dir}/db_password`)
      const withApp = secretsDir({ db_password: "x" })
      assert.include(
        yield* reasonOf({ ORCH_SECRETS_DIR: withApp, ORCH_DB_HOST: "db", ORCH_DB_MIGRATION_USER: "owner" }),
        `${withApp}/db_migration_password`
      )
      assert.include(
        yield* reasonOf({ ORCH_SECRETS_DIR: withApp, ORCH_AMQP_URL: "amqp://orchestrator@127.0.0.1:5672/" }),
        `${withApp}/amqp_password`
      )
    })
  )

  it.effect.each([
    ["ORCH_DB_PASSWORD", "db_password"],
    ["PGPASSWORD", "db_password"],
    ["ORCH_DB_MIGRATION_PASSWORD", "db_migration_password"],
    ["ORCH_AMQP_PASSWORD", "amqp_password"]
  ] as const)("refuses a password in %s, naming the file to use", ([variable, file]) =>
    Effect.gen(function* () {
      const reason = yield* reasonOf({ ORCH_SECRETS_DIR: secretsDir({ db_password: "x" }), [variable]: "hunter2" })
      assert.include(reason, variable)
      assert.include(reason, `secret file ${file}`)
      assert.notInclude(reason, "hunter2")
    })
  )

  it.effect("refuses a password inside ORCH_AMQP_URL without repeating it", () =>
    Effect.gen(function* () {
      const reason = yield* reasonOf({
        ORCH_SECRETS_DIR: secretsDir({ amqp_password: "x" }),
        ORCH_AMQP_URL: "amqp://orchestrator:hunter2@127.0.0.1:5672/"
      })
      assert.include(reason, "amqp_password")
      assert.notInclude(reason, "hunter2")
    })
  )

  it.effect("refuses an unknown TLS mode and a bad port", () =>
    Effect.gen(function* () {
      const dir = secretsDir({ db_password: "x" })
      assert.include(
        yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_DB_HOST: "db", ORCH_DB_SSL: "prefer" }),
        "ORCH_DB_SSL"
      )
      assert.include(
        yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_DB_HOST: "db", ORCH_DB_PORT: "99999" }),
        "ORCH_DB_PORT"
      )
      assert.include(yield* reasonOf({ ORCH_SECRETS_DIR: dir, ORCH_MAX_CONTEXT_BYTES: "0" }), "ORCH_MAX_CONTEXT_BYTES")
    })
  )
})
