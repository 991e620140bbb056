/**
 * Secrets never leak (TR-DB-8): the service runs as an OS process against a private PostgreSQL cluster
 * that requires a password on TCP (scram-sha-256) and a RabbitMQ user of this file's own, with distinctive random
 * secrets in its secrets directory. Its output, every HTTP response (bodies and headers, successes and refusals),
 * its environment and its command line are searched for each secret, as written and base64- / URL-encoded. A wrong
 * database or broker password ends the process with an error naming the authentication failure and the file,
 * without printing either password.
 */
import { randomBytes } from "node:crypto"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schedule } from "effect"
import { freePort } from "../utils/freePort.ts"
import { PrivateCluster, layer as privateCluster } from "../utils/PrivateCluster.ts"
import { isAlive, type RunningProcess, secretsDirectory, start, startScoped } from "../utils/processes.ts"
import { amqpUrl, createVhost, listRows, rabbitmqctl, requireRabbit } from "../utils/rabbit.ts"

/** Distinctive, random, and full of characters that URL-encoding changes. */
const secretValue = (label: string) => `${label}-${randomBytes(12).toString("hex")}+/:@%&=`
const tokenValue = (label: string) => `${label}-${randomBytes(16).toString("hex")}`

const secrets = {
  db_password: secretValue("dbpw"),
  db_migration_password: secretValue("dbmigpw"),
  amqp_password: secretValue("amqppw"),
  api_token: tokenValue("apitok"),
  second_api_token: tokenValue("apitok2")
}
const wrong = {
  db_password: secretValue("wrongdbpw"),
  db_migration_password: secretValue("wrongdbmigpw"),
  amqp_password: secretValue("wrongamqppw")
}

/** A secret as written and in the encodings a careless log line or header might carry it. */
const forms = (value: string) => [
  value,
  Buffer.from(value).toString("base64"),
  Buffer.from(value).toString("base64url"),
  encodeURIComponent(value),
  encodeURI(value)
]

const assertNoSecret = (what: string, text: string, values: ReadonlyArray<string>) => {
  for (const value of values) {
    for (const form of forms(value)) {
      assert.isFalse(text.includes(form), `${what} contains a secret (${value.slice(0, 6)}…)`)
    }
  }
}

/**
 * A private cluster whose pg_hba trusts only the superuser (the test administers the cluster with it); every other
 * TCP login needs its password. The file lives in a directory of its own, removed after the cluster.
 */
const passwordCluster = Layer.unwrap(
  Effect.acquireRelease(
    Effect.sync(() => {
      const directory = mkdtempSync(join(tmpdir(), "orch-hba-"))
      chmodSync(directory, 0o755)
      const file = join(directory, "pg_hba.conf")
      writeFileSync(
        file,
        [
          "local all postgres trust",
          "host all postgres 127.0.0.1/32 trust",
          "host all all 127.0.0.1/32 scram-sha-256",
          ""
        ].join("\n"),
        { mode: 0o644 }
      )
      return { directory, file }
    }),
    ({ directory }) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
  ).pipe(Effect.map(({ file }) => privateCluster({ postgresql: { hba_file: `'${file}'` } })))
)

/** The broker side: a vhost and a user of this file's own, the user's password being the secret. */
class Fixture extends Context.Service<
  Fixture,
  { readonly vhost: string; readonly amqpUser: string; readonly cluster: PrivateCluster["Service"] }
>()("test/Secrets/Fixture") {}

const userPrefix = "orch_secrets_"

const fixture = Layer.effect(
  Fixture,
  Effect.gen(function* () {
    const cluster = yield* PrivateCluster
    yield* cluster.superuser(
      `ALTER ROLE orchestrator_app PASSWORD '${secrets.db_password}';` +
        ` ALTER ROLE orchestrator_owner PASSWORD '${secrets.db_migration_password}'`
    )
    const hashes = yield* cluster.superuser(
      "SELECT bool_and(rolpassword LIKE 'SCRAM-SHA-256$%') FROM pg_authid" +
        " WHERE rolname IN ('orchestrator_app', 'orchestrator_owner')"
    )
    assert.strictEqual(hashes.trim(), "t")

    yield* requireRabbit()
    // Users of test processes that are gone (a killed run).
    yield* Effect.promise(async () => {
      for (const [name] of await listRows(["list_users"])) {
        const owner = Number(name?.startsWith(userPrefix) ? name.slice(userPrefix.length) : Number.NaN)
        if (Number.isInteger(owner) && owner !== process.pid && !isAlive(owner)) {
          await rabbitmqctl(["delete_user", name ?? ""]).catch(() => undefined)
        }
      }
    })
    const vhost = yield* createVhost()
    const amqpUser = `${userPrefix}${process.pid}`
    yield* Effect.acquireRelease(
      Effect.promise(async () => {
        await rabbitmqctl(["delete_user", amqpUser]).catch(() => undefined)
        await rabbitmqctl(["add_user", amqpUser, secrets.amqp_password])
        await rabbitmqctl(["set_permissions", "-p", vhost, amqpUser, ".*", ".*", ".*"])
      }),
      () => Effect.promise(() => rabbitmqctl(["delete_user", amqpUser]).catch(() => undefined))
    )
    return Fixture.of({ vhost, amqpUser, cluster })
  })
).pipe(Layer.provideMerge(passwordCluster))

const allSecrets = [
  secrets.db_password,
  secrets.db_migration_password,
  secrets.amqp_password,
  secrets.api_token,
  secrets.second_api_token
]

const secretFiles = (
  overrides: Partial<Record<"db_password" | "db_migration_password" | "amqp_password", string>> = {}
) =>
  secretsDirectory({
    db_password: overrides.db_password ?? secrets.db_password,
    db_migration_password: overrides.db_migration_password ?? secrets.db_migration_password,
    amqp_password: overrides.amqp_password ?? secrets.amqp_password,
    api_tokens: `# operators\n${secrets.api_token}\n# ci\n${secrets.second_api_token}`
  })

const serviceEnv = (f: Fixture["Service"], secretsDir: string, port: number, migrate: boolean) => ({
  ORCH_DB_HOST: f.cluster.config.host,
  ORCH_DB_PORT: String(f.cluster.config.port),
  ORCH_DB_NAME: f.cluster.config.database,
  ...(migrate ? { ORCH_DB_MIGRATION_USER: "orchestrator_owner" } : {}),
  ORCH_AMQP_URL: amqpUrl(f.vhost, undefined, f.amqpUser),
  ORCH_SECRETS_DIR: secretsDir,
  ORCH_HTTP_PORT: String(port)
})

const exitedWithin = (service: RunningProcess, ms: number) =>
  service.exited.pipe(
    Effect.timeoutOrElse({
      duration: ms,
      orElse: () => Effect.die(new Error(`the service did not exit within ${ms} ms:\n${service.output()}`))
    })
  )

interface Captured {
  readonly status: number
  readonly text: string
}

/** One request; the capture is the status line, every header and the body. */
const tryRequest = (port: number, path: string, init: RequestInit = {}) =>
  Effect.tryPromise(async (): Promise<Captured> => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { ...init, signal: AbortSignal.timeout(10_000) })
    const body = await response.text()
    const headers = [...response.headers].map(([name, value]) => `${name}: ${value}`).join("\n")
    return { status: response.status, text: `${response.status} ${response.statusText}\n${headers}\n\n${body}` }
  })
const request = (port: number, path: string, init?: RequestInit) => Effect.orDie(tryRequest(port, path, init))

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
const json = { "content-type": "application/json" }

/** Polls /readyz until it answers 200 (database and broker up), with a deadline. */
const awaitReady = (service: RunningProcess, port: number) =>
  tryRequest(port, "/readyz").pipe(
    Effect.flatMap((r) => (r.status === 200 ? Effect.succeed(r) : Effect.fail(new Error(r.text)))),
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.timeoutOrElse({
      duration: "45 seconds",
      orElse: () => Effect.die(new Error(`the service was not ready within 45 s:\n${service.output()}`))
    })
  )

const procFile = (pid: number, file: string) => readFileSync(`/proc/${pid}/${file}`, "utf8")

layer(fixture, { excludeTestServices: true, timeout: "120 seconds" })("secrets (TR-DB-8)", (it) => {
  it.effect(
    "no secret appears in the output, any HTTP response, the environment or the command line of the service",
    () =>
      Effect.gen(function* () {
        const f = yield* Fixture
        const port = yield* freePort
        const service = yield* startScoped(["src/main.ts"], serviceEnv(f, secretFiles(), port, true))
        yield* service.waitFor(/saga orchestrator started/, 45_000)
        const pid = service.child.pid ?? 0
        const responses: Array<[string, Captured]> = []
        const call = (name: string, path: string, init?: RequestInit) =>
          Effect.tap(request(port, path, init), (r) => Effect.sync(() => responses.push([name, r])))

        const ready = yield* awaitReady(service, port)
        responses.push(["readyz", ready])
        assert.strictEqual((yield* call("healthz", "/healthz")).status, 200)
        assert.strictEqual((yield* call("metrics", "/metrics")).status, 200)
        assert.strictEqual((yield* call("openapi", "/openapi.json")).status, 200)
        assert.strictEqual((yield* call("docs", "/docs")).status, 200)
        const input = { repo: "balance/plant-3", baseBranch: "main", inputRef: "inputs/run-1.yaml", requestedBy: "me" }
        const created = yield* call("create", "/v1/sagas", {
          method: "POST",
          headers: { ...bearer(secrets.api_token), ...json },
          body: JSON.stringify({ type: "BALANCE_CALCULATION", input })
        })
        assert.strictEqual(created.status, 201, created.text)
        assert.strictEqual(
          (yield* call("list", "/v1/sagas", { headers: bearer(secrets.second_api_token) })).status,
          200
        )

        // Refusals: wrong, missing and secret-valued tokens, and bad input.
        const refusals: Array<[string, string, RequestInit, number]> = [
          ["wrong token", "/v1/sagas", { headers: bearer(tokenValue("nottoken")) }, 401],
          ["no token", "/v1/sagas", {}, 401],
          ["token with a suffix", "/v1/sagas", { headers: bearer(`${secrets.api_token}x`) }, 401],
          ["limit 0", "/v1/sagas?limit=0", { headers: bearer(secrets.api_token) }, 400],
          ["bad context", "/v1/sagas?context=%7Bnot-json", { headers: bearer(secrets.api_token) }, 400],
          [
            "malformed JSON",
            "/v1/sagas",
            { method: "POST", headers: { ...bearer(secrets.api_token), ...json }, body: "{" },
            400
          ],
          [
            "unknown type",
            "/v1/sagas",
            {
              method: "POST",
              headers: { ...bearer(secrets.api_token), ...json },
              body: JSON.stringify({ type: "NOPE", input: {} })
            },
            400
          ],
          [
            "bad input",
            "/v1/sagas",
            {
              method: "POST",
              headers: { ...bearer(secrets.api_token), ...json },
              body: JSON.stringify({ type: "BALANCE_CALCULATION", input: { repo: 1 } })
            },
            400
          ],
          ["unknown saga", "/v1/sagas/does-not-exist", { headers: bearer(secrets.api_token) }, 404]
        ]
        for (const [name, path, init, status] of refusals) {
          const response = yield* call(name, path, init)
          assert.strictEqual(response.status, status, `${name}: ${response.text}`)
        }
        // The database and broker passwords offered as bearer tokens: refused, and not echoed anywhere.
        for (const password of [secrets.db_password, secrets.amqp_password]) {
          const response = yield* call("password as token", "/v1/sagas", { headers: bearer(password) })
          assert.strictEqual(response.status, 401)
        }
        // The readiness and metrics once more, after the traffic.
        assert.strictEqual((yield* call("readyz again", "/readyz")).status, 200)
        const metrics = yield* call("metrics again", "/metrics")
        assert.include(metrics.text, "orchestrator_sagas_started_total")

        for (const [name, response] of responses) assertNoSecret(`the response to ${name}`, response.text, allSecrets)
        const environ = procFile(pid, "environ")
        assert.include(environ, "ORCH_SECRETS_DIR=")
        assertNoSecret("/proc/<pid>/environ", environ, allSecrets)
        assertNoSecret("/proc/<pid>/cmdline", procFile(pid, "cmdline"), allSecrets)

        service.child.kill("SIGTERM")
        assert.strictEqual(yield* exitedWithin(service, 30_000), 0)
        const output = service.output()
        assert.match(output, /saga started/)
        assertNoSecret("the service's output", output, allSecrets)
      })
  )

  it.effect(
    "a wrong database password: exits non-zero naming the failure and the file, printing neither password",
    () =>
      Effect.gen(function* () {
        const f = yield* Fixture
        const service = start(
          ["src/main.ts"],
          serviceEnv(f, secretFiles({ db_password: wrong.db_password }), yield* freePort, false)
        )
        const code = yield* exitedWithin(service, 45_000)
        const output = service.output()
        assert.notStrictEqual(code, 0, output)
        assert.match(output, /password authentication failed/)
        assert.match(output, /secret file \S*db_password/)
        assertNoSecret("the service's output", output, [wrong.db_password, ...allSecrets])
      })
  )

  it.effect(
    "a wrong migration password: exits non-zero naming the failure and the file, printing neither password",
    () =>
      Effect.gen(function* () {
        const f = yield* Fixture
        const service = start(
          ["src/main.ts"],
          serviceEnv(f, secretFiles({ db_migration_password: wrong.db_migration_password }), yield* freePort, true)
        )
        const code = yield* exitedWithin(service, 45_000)
        const output = service.output()
        assert.notStrictEqual(code, 0, output)
        assert.match(output, /password authentication failed for user "orchestrator_owner"/)
        assert.match(output, /secret file \S*db_migration_password/)
        assertNoSecret("the service's output", output, [wrong.db_migration_password, ...allSecrets])
      })
  )

  it.effect("a wrong broker password: exits non-zero naming the failure and the file, printing neither password", () =>
    Effect.gen(function* () {
      const f = yield* Fixture
      const service = start(
        ["src/main.ts"],
        serviceEnv(f, secretFiles({ amqp_password: wrong.amqp_password }), yield* freePort, false)
      )
      const code = yield* exitedWithin(service, 45_000)
      const output = service.output()
      assert.notStrictEqual(code, 0, output)
      assert.match(output, /ACCESS_REFUSED|authentication/i)
      assert.match(output, /secret file \S*amqp_password/)
      assertNoSecret("the service's output", output, [wrong.amqp_password, ...allSecrets])
    })
  )
})
