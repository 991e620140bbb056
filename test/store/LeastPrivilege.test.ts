import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { runtimeClient, runtimeRolePrivileges } from "../../src/store/Database.ts"
import { freePort } from "../utils/freePort.ts"
import { passwords } from "../utils/postgres.ts"
import { secretsDirectory, start, startScoped } from "../utils/processes.ts"
import { TestDatabase, layer as testDatabase } from "../utils/TestDatabase.ts"

const secrets = secretsDirectory({ db_password: passwords.app, api_tokens: "least-privilege-test-token" })

/** What the service's startup check finds for a role, connected as that role. */
const privilegesOf = (user: string) =>
  Effect.flatMap(TestDatabase, (db) =>
    runtimeRolePrivileges.pipe(Effect.provide(runtimeClient({ ...db.config, user }, 1)), Effect.orDie)
  )

const serviceAs = (db: TestDatabase["Service"], user: string, extra: Record<string, string> = {}) => ({
  ORCH_DB_HOST: db.config.host,
  ORCH_DB_PORT: String(db.config.port),
  ORCH_DB_NAME: db.name,
  ORCH_DB_USER: user,
  ORCH_SECRETS_DIR: secrets,
  ...extra
})

layer(testDatabase(), { excludeTestServices: true, timeout: "60 seconds" })("least privilege at startup", (it) => {
  it.effect("finds nothing beyond DML for the runtime role, and names each excess privilege of other roles", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      assert.deepStrictEqual(yield* privilegesOf("orchestrator_app"), { role: "orchestrator_app", reasons: [] })
      assert.deepStrictEqual((yield* privilegesOf("postgres")).reasons, [
        "is a superuser",
        "owns the orchestrator schema (or is a member of its owner)",
        "can CREATE in the orchestrator schema"
      ])
      assert.deepStrictEqual((yield* privilegesOf("orchestrator_owner")).reasons, [
        "owns the orchestrator schema (or is a member of its owner)",
        "can CREATE in the orchestrator schema"
      ])
      const creator = `orch_creator_${process.pid}`
      yield* db.superuser(`CREATE ROLE ${creator} LOGIN; GRANT USAGE, CREATE ON SCHEMA orchestrator TO ${creator}`)
      yield* Effect.addFinalizer(() =>
        db.superuser(`DROP OWNED BY ${creator}; DROP ROLE ${creator}`).pipe(Effect.ignore)
      )
      assert.deepStrictEqual((yield* privilegesOf(creator)).reasons, ["can CREATE in the orchestrator schema"])
    })
  )

  it.effect("the service refuses to start with a role that owns the schema, saying why", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const owner = start(["src/main.ts"], serviceAs(db, "orchestrator_owner"))
      assert.strictEqual(yield* owner.exited, 1)
      assert.include(owner.output(), "the runtime database role orchestrator_owner owns the orchestrator schema")
      const superuser = start(["src/main.ts"], serviceAs(db, "postgres"))
      assert.strictEqual(yield* superuser.exited, 1)
      assert.include(superuser.output(), "is a superuser")
      assert.notInclude(superuser.output(), passwords.app)
    })
  )

  it.effect("runs with a privileged role only under the development override, and says so loudly", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const service = yield* startScoped(
        ["src/main.ts"],
        serviceAs(db, "orchestrator_owner", {
          ORCH_DB_ALLOW_PRIVILEGED_ROLE: "true",
          ORCH_HTTP_PORT: String(yield* freePort)
        })
      )
      yield* service.waitFor(/DEVELOPMENT OVERRIDE \(ORCH_DB_ALLOW_PRIVILEGED_ROLE=true\)/, 30_000)
      yield* service.waitFor(/saga orchestrator started/, 30_000)
      service.child.kill("SIGTERM")
      assert.strictEqual(yield* service.exited, 0)
    })
  )
})
