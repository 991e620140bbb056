/**
 * The HTTP API as `node src/main.ts` serves it: in embedded mode with the token it prints, and on PostgreSQL with
 * the tokens of the api_tokens file — without which it does not start.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Exit, Option, Schedule } from "effect"
import { freePort } from "../utils/freePort.ts"
import { passwords } from "../utils/postgres.ts"
import { secretsDirectory, start, startScoped } from "../utils/processes.ts"
import { TestDatabase, layer as testDatabase } from "../utils/TestDatabase.ts"

const get = (port: number, path: string, token?: string) =>
  Effect.promise(async () => {
    const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
    return { status: response.status, body: await response.text() }
  })

const envFor = (db: TestDatabase["Service"], secrets: string, port: number) => ({
  ORCH_DB_HOST: db.config.host,
  ORCH_DB_PORT: String(db.config.port),
  ORCH_DB_NAME: db.name,
  ORCH_SECRETS_DIR: secrets,
  ORCH_HTTP_PORT: String(port)
})

describe("the service's HTTP API", () => {
  layer(testDatabase(), { excludeTestServices: true, timeout: "90 seconds" })("on PostgreSQL", (it) => {
    it.effect("serves /v1 with the tokens of the api_tokens file, and probes without", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase
        const port = yield* freePort
        const secrets = secretsDirectory({
          db_password: passwords.app,
          api_tokens: "# ops\nfile-token-1\nfile-token-2"
        })
        const service = yield* startScoped(["src/main.ts"], envFor(db, secrets, port))
        yield* service.waitFor(/Listening on/, 45_000)
        assert.strictEqual((yield* get(port, "/readyz")).status, 200)
        assert.strictEqual((yield* get(port, "/v1/sagas", "file-token-2")).status, 200)
        assert.strictEqual((yield* get(port, "/v1/sagas", "file-token-3")).status, 401)
        assert.strictEqual((yield* get(port, "/v1/sagas")).status, 401)
        assert.notInclude(service.output(), "file-token")
        service.child.kill("SIGTERM")
        assert.strictEqual(yield* service.exited, 0)
      })
    )

    it.effect("does not start without the api_tokens file, naming it", () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase
        const secrets = secretsDirectory({ db_password: passwords.app })
        const service = start(["src/main.ts"], envFor(db, secrets, yield* freePort))
        assert.strictEqual(yield* service.exited, 1)
        assert.include(service.output(), `${secrets}/api_tokens`)
      })
    )
  })

  it.live(
    "serves the API in embedded mode with the token it printed at startup",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort
        const service = yield* startScoped(["src/main.ts"], {
          ORCH_SECRETS_DIR: secretsDirectory({}),
          ORCH_HTTP_PORT: String(port)
        })
        const printed = yield* service.waitFor(/Authorization: Bearer [\w-]+/, 45_000)
        yield* service.waitFor(/Listening on/, 45_000)
        const token = printed.replace("Authorization: Bearer ", "")
        const sagas = yield* get(port, "/v1/sagas", token)
        assert.strictEqual(sagas.status, 200)
        assert.property(JSON.parse(sagas.body), "items")
        assert.strictEqual((yield* get(port, "/v1/sagas")).status, 401)
        assert.strictEqual((yield* get(port, "/healthz")).status, 200)
        service.child.kill("SIGTERM")
        assert.strictEqual(yield* service.exited, 0)
      }),
    { timeout: 90_000 }
  )

  it.live(
    "writes only warnings and worse with ORCH_LOG_LEVEL=warn",
    () =>
      Effect.gen(function* () {
        const port = yield* freePort
        const service = yield* startScoped(["src/main.ts"], {
          ORCH_SECRETS_DIR: secretsDirectory({}),
          ORCH_HTTP_PORT: String(port),
          ORCH_LOG_LEVEL: "warn"
        })
        // The generated token is a warning; the server's "Listening on …" (info) comes before it answers.
        yield* service.waitFor(/Authorization: Bearer [\w-]+/, 45_000)
        // Refused (status 0) until the server listens.
        const healthy = yield* Effect.exit(get(port, "/healthz")).pipe(
          Effect.map((exit) => (Exit.isSuccess(exit) ? exit.value.status : 0)),
          Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (status) => status === 200 }),
          Effect.timeoutOption("45 seconds")
        )
        assert.deepStrictEqual(healthy, Option.some(200))
        assert.include(service.output(), '"level":"WARN"')
        assert.notInclude(service.output(), '"level":"INFO"')
        assert.notInclude(service.output(), "Listening on")
        service.child.kill("SIGTERM")
        assert.strictEqual(yield* service.exited, 0)
      }),
    { timeout: 90_000 }
  )
})
