/**
 * The database tier's bootstrap job (docker/postgres/bootstrap.sh) against the machine's PostgreSQL: it prepares a
 * database the compose replicas then migrate. The checks of the tier's files are in PostgresHa.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { inject } from "vitest"
import { passwords, pg, psql } from "../utils/postgres.ts"
import { secretsDirectory, start } from "../utils/processes.ts"
import { repoPath, run } from "./files.ts"

describe("the bootstrap job (docker/postgres/bootstrap.sh)", () => {
  it.effect("prepares a database the replicas then migrate, passwords from files only, and runs again harmlessly", () =>
    Effect.gen(function* () {
      const runner = inject("templateDatabase").split("_")[2]
      const database = `orch_t_${runner}_${process.pid}_compose`
      yield* Effect.addFinalizer(() =>
        Effect.promise(() => psql("postgres", ["-c", `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`]))
      )
      // The roles' passwords are the test suite's, so that other test files running now keep working.
      const secrets = secretsDirectory({
        postgres_password: "unused-with-trust-auth",
        db_password: passwords.app,
        db_migration_password: passwords.owner
      })
      const env = {
        PGHOST: pg.host,
        PGPORT: String(pg.port),
        PGUSER: pg.superuser,
        ORCH_DB_NAME: database,
        SECRETS_DIR: secrets,
        BOOTSTRAP_WAIT: "10"
      }
      for (const attempt of [1, 2]) {
        const result = yield* run("sh", [repoPath("docker/postgres/bootstrap.sh")], { env })
        assert.strictEqual(result.code, 0, `run ${attempt}: ${result.output}`)
        assert.include(result.output, `database ${database} is ready`)
        assert.notInclude(result.output, passwords.owner)
      }
      const owner = yield* Effect.promise(() =>
        psql(database, ["-At", "-c", "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'orchestrator'"])
      )
      assert.strictEqual(owner.trim(), "orchestrator_owner")
      // What the compose replicas do next: migrate at startup as the owner.
      const migrate = start(["src/cli.ts", "migrate"], {
        ORCH_DB_HOST: pg.host,
        ORCH_DB_PORT: String(pg.port),
        ORCH_DB_NAME: database,
        ORCH_DB_MIGRATION_USER: "orchestrator_owner",
        ORCH_SECRETS_DIR: secrets
      })
      assert.strictEqual(yield* migrate.exited, 0, migrate.output())
      assert.match(migrate.output(), /applied \d{4}_/)
    })
  )

  it.effect("stops with the missing file's name when a secret is absent", () =>
    Effect.gen(function* () {
      const secrets = secretsDirectory({ postgres_password: "x", db_password: passwords.app })
      const result = yield* run("sh", [repoPath("docker/postgres/bootstrap.sh")], {
        env: { PGHOST: pg.host, PGPORT: String(pg.port), SECRETS_DIR: secrets, BOOTSTRAP_WAIT: "1" }
      })
      assert.strictEqual(result.code, 1)
      assert.include(result.output, `missing secret file ${secrets}/db_migration_password`)
      assert.notInclude(result.output, "is ready")
    })
  )
})
