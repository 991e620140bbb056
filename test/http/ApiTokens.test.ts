import { inspect } from "node:util"
import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Logger, Option, Redacted } from "effect"
import { AppConfig, type AppConfigShape, Database, type DatabaseConfig, load } from "../../src/Config.ts"
import { ApiTokens } from "../../src/http/ApiTokens.ts"
import { secretsDirectory } from "../utils/processes.ts"

const loadWith = (env: Record<string, string>) =>
  load.pipe(
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env })),
    Effect.provide(NodeServices.layer)
  )

/** A database that is configured; nothing here connects to it. */
const database: DatabaseConfig = {
  host: "db.internal",
  port: 5432,
  database: "orchestrator",
  user: "orchestrator_app",
  password: Redacted.make("x"),
  ssl: "disable",
  migration: Option.none()
}

/** The configuration of an embedded run: nothing configured, no api_tokens file. */
const embedded = loadWith({ ORCH_SECRETS_DIR: secretsDirectory({}) }).pipe(Effect.orDie)

const tokensFor = (config: AppConfigShape) =>
  Effect.gen(function* () {
    return yield* ApiTokens
  }).pipe(Effect.provide(ApiTokens.layer.pipe(Layer.provide(Layer.succeed(AppConfig, config)))))

describe("API tokens", () => {
  it.effect("reads one token per line from the api_tokens file, skipping blank lines and comments", () =>
    Effect.gen(function* () {
      const dir = secretsDirectory({ api_tokens: "# ci pipeline\nfirst-token\n\n  second-token  \r\n" })
      const config = yield* loadWith({ ORCH_SECRETS_DIR: dir })
      const tokens = Option.getOrThrow(config.apiTokens)
      assert.deepStrictEqual(tokens.map(Redacted.value), ["first-token", "second-token"])
      assert.notInclude(inspect(config, { depth: 10 }), "first-token")
      assert.notInclude(JSON.stringify(config), "second-token")
    })
  )

  it.effect("has none without the file, and refuses a file without a token", () =>
    Effect.gen(function* () {
      assert.isTrue(Option.isNone((yield* loadWith({ ORCH_SECRETS_DIR: secretsDirectory({}) })).apiTokens))
      const dir = secretsDirectory({ api_tokens: "# nobody yet\n" })
      const error = yield* Effect.flip(loadWith({ ORCH_SECRETS_DIR: dir }))
      assert.include(error.reason, `${dir}/api_tokens holds no token`)
    })
  )

  it("accepts exactly the configured tokens", () => {
    const tokens = ApiTokens.make([Redacted.make("alpha-token"), Redacted.make("beta-token")])
    assert.isTrue(tokens.verify(Redacted.make("alpha-token")))
    assert.isTrue(tokens.verify(Redacted.make("beta-token")))
    for (const wrong of ["", "alpha", "alpha-token ", "ALPHA-TOKEN", "beta-tokenx"]) {
      assert.isFalse(tokens.verify(Redacted.make(wrong)), JSON.stringify(wrong))
    }
  })

  it.effect("refuses to start the API with a database configured and no api_tokens file, naming the file", () =>
    Effect.gen(function* () {
      const config = {
        ...(yield* embedded),
        secretsDir: "/etc/orch",
        database: Database.External({ config: database })
      }
      const error = yield* Effect.flip(tokensFor(config))
      assert.include(error.message, "missing secret file /etc/orch/api_tokens")
    })
  )

  it.effect("generates a token in embedded mode and prints it once, labelled", () =>
    Effect.gen(function* () {
      const lines: Array<string> = []
      const capture = Logger.make(({ message }) => lines.push(String(message)))
      const tokens = yield* tokensFor(yield* embedded).pipe(Effect.provide(Logger.layer([capture])))
      const printed = lines.join("\n").match(/Authorization: Bearer (\S+)/)
      assert.isNotNull(printed)
      assert.isTrue(tokens.verify(Redacted.make(printed?.[1] ?? "")))
      assert.isFalse(tokens.verify(Redacted.make("guess")))
      assert.strictEqual(lines.filter((line) => line.includes(printed?.[1] ?? "")).length, 1)
    })
  )
})
