/**
 * The HTTP API as `node src/main.ts` serves it: in embedded mode with the token it prints, and on PostgreSQL with
 * the tokens of the api_tokens file — without which it does not start.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect } from "effect"
import { freePort } from "../utils/PrivateCluster.ts"
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
})
