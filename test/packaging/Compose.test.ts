import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { at, list, readCompose, readText, record, repoPath, run, stringRecord, strings, text } from "./files.ts"

const compose = readCompose()
const services = record(compose.services, "services")
const service = (name: string) => record(services[name], `services.${name}`)
const replicas = ["orchestrator-1", "orchestrator-2"]
const composeDir = repoPath("docker")

const dependencies = (name: string): Record<string, string> =>
  Object.fromEntries(
    Object.entries(record(service(name).depends_on ?? {})).map(([target, spec]) => [
      target,
      text(at(spec, "condition"), `${name} depends_on ${target}: a condition`)
    ])
  )
const secretsOf = (name: string) => strings(service(name).secrets ?? [], `${name}.secrets`)
const environmentOf = (name: string) => stringRecord(service(name).environment ?? {}, `${name}.environment`)
/** Bind mounts: `./host/path:/container/path[:ro]` relative to the compose file. */
const bindMounts = (name: string) =>
  strings(service(name).volumes ?? [], `${name}.volumes`)
    .filter((volume) => volume.startsWith("."))
    .map((volume) => {
      const [host = "", container = "", mode] = volume.split(":")
      return { host: resolve(composeDir, host), container, mode }
    })

describe("docker/compose.yaml", () => {
  it("runs etcd, two Patroni nodes, HAProxy, RabbitMQ, the bootstrap job and two orchestrator replicas", () => {
    assert.sameMembers(Object.keys(services), [
      "etcd",
      "patroni1",
      "patroni2",
      "haproxy",
      "rabbitmq",
      "postgres-bootstrap",
      ...replicas
    ])
  })

  it("builds the replicas from docker/Dockerfile with the repository as context", () => {
    for (const name of replicas) {
      const build = record(service(name).build)
      assert.strictEqual(resolve(composeDir, text(build.context)), resolve(repoPath()))
      assert.isTrue(existsSync(resolve(resolve(composeDir, text(build.context)), text(build.dockerfile))))
      assert.strictEqual(text(build.dockerfile), "docker/Dockerfile")
    }
    assert.isTrue(existsSync(resolve(composeDir, text(at(service("patroni1"), "build", "context")), "Dockerfile")))
  })

  it("configures the replicas with ORCH_* variables only: PostgreSQL via HAProxy, RabbitMQ without a password", () => {
    for (const name of replicas) {
      const env = environmentOf(name)
      assert.deepStrictEqual(env, {
        ORCH_DB_HOST: "haproxy",
        ORCH_DB_PORT: "5432",
        ORCH_DB_NAME: "orchestrator",
        ORCH_DB_USER: "orchestrator_app",
        ORCH_DB_MIGRATION_USER: "orchestrator_owner",
        ORCH_DB_SSL: "disable",
        ORCH_AMQP_URL: "amqp://orchestrator@rabbitmq:5672/",
        ORCH_HTTP_PORT: "8080",
        ORCH_SECRETS_DIR: "/run/secrets"
      })
      const amqp = new URL(text(env.ORCH_AMQP_URL))
      assert.strictEqual(amqp.password, "")
      assert.include(Object.keys(services), amqp.hostname)
      assert.include(Object.keys(services), env.ORCH_DB_HOST)
      assert.sameMembers([...secretsOf(name)], ["db_password", "db_migration_password", "amqp_password", "api_tokens"])
    }
  })

  it("puts no password or token into any service's environment", () => {
    const secretName = /PASSWORD|PASSWD|TOKEN|CREDENTIAL/i
    for (const name of Object.keys(services)) {
      for (const [variable, value] of Object.entries(environmentOf(name))) {
        assert.notMatch(variable, secretName, `${name}: ${variable}`)
        assert.notMatch(value, /:\/\/[^/@]*:[^/@]*@/, `${name}: ${variable} holds a URL with a password`)
      }
    }
    // `${…}` would be compose interpolation from the caller's environment; `$$` is a literal dollar.
    assert.notMatch(readText("docker/compose.yaml").replaceAll("$$", ""), /\$\{?[A-Za-z_]/)
  })

  it("mounts secrets as files, each declared once and created by docker/make-secrets.sh", () => {
    const declared = record(compose.secrets, "secrets")
    const used = new Set(Object.keys(services).flatMap(secretsOf))
    assert.sameMembers([...used], Object.keys(declared))
    for (const [name, spec] of Object.entries(declared)) {
      assert.strictEqual(text(at(spec, "file")), `./secrets/${name}`)
    }
    assert.sameMembers([...secretsOf("patroni1")], ["postgres_password", "replication_password", "rewind_password"])
    assert.sameMembers(
      [...secretsOf("postgres-bootstrap")],
      ["postgres_password", "db_password", "db_migration_password"]
    )
    assert.sameMembers([...secretsOf("rabbitmq")], ["amqp_password"])
  })

  it.effect("make-secrets.sh creates every secret file, readable in the containers, in a private directory", () =>
    Effect.gen(function* () {
      const parent = mkdtempSync(join(tmpdir(), "orch-make-secrets-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(parent, { recursive: true, force: true })))
      const dir = join(parent, "secrets")
      const first = yield* run("bash", [repoPath("docker/make-secrets.sh"), dir])
      assert.strictEqual(first.code, 0, first.output)
      assert.sameMembers(readdirSync(dir), Object.keys(record(compose.secrets)))
      assert.strictEqual(statSync(dir).mode & 0o777, 0o700)
      const values = new Set<string>()
      for (const file of readdirSync(dir)) {
        assert.strictEqual(statSync(join(dir, file)).mode & 0o777, 0o644, file)
        const value = readFileSync(join(dir, file), "utf8").trim()
        assert.match(value, /^[0-9a-f]{48}$/, file)
        values.add(value)
      }
      assert.strictEqual(values.size, readdirSync(dir).length, "every secret is different")
      // A second run keeps what exists.
      const second = yield* run("bash", [repoPath("docker/make-secrets.sh"), dir])
      assert.strictEqual(second.code, 0, second.output)
      assert.notInclude(second.output, "created")
      const ignored = yield* run("git", ["check-ignore", "-q", "docker/secrets/db_password"])
      assert.strictEqual(ignored.code, 0, "git ignores docker/secrets/")
    })
  )

  it("starts each service after what it needs: healthy, or completed for the bootstrap job", () => {
    for (const name of replicas) {
      assert.deepStrictEqual(dependencies(name), {
        "postgres-bootstrap": "service_completed_successfully",
        haproxy: "service_healthy",
        rabbitmq: "service_healthy"
      })
    }
    assert.deepStrictEqual(dependencies("postgres-bootstrap"), { haproxy: "service_healthy" })
    assert.deepStrictEqual(dependencies("patroni1"), { etcd: "service_healthy" })
    assert.deepStrictEqual(dependencies("patroni2"), { etcd: "service_healthy" })
    for (const name of Object.keys(services)) {
      for (const [target, condition] of Object.entries(dependencies(name))) {
        assert.include(Object.keys(services), target)
        if (condition === "service_healthy") {
          assert.isDefined(service(target).healthcheck, `${target} has a healthcheck (${name} waits for it)`)
        }
      }
    }
    // No cycle: a topological order exists.
    const done = new Set<string>()
    while (done.size < Object.keys(services).length) {
      const ready = Object.keys(services).filter(
        (name) => !done.has(name) && Object.keys(dependencies(name)).every((d) => done.has(d))
      )
      assert.isNotEmpty(ready, "depends_on has a cycle")
      for (const name of ready) done.add(name)
    }
  })

  it("gives every long-running service a healthcheck and a restart policy", () => {
    for (const name of Object.keys(services).filter((n) => n !== "postgres-bootstrap")) {
      const test = strings(at(service(name), "healthcheck", "test"), `${name} healthcheck`)
      assert.strictEqual(test[0], "CMD", `${name}: exec form`)
      assert.strictEqual(service(name).restart, "unless-stopped")
    }
    assert.strictEqual(service("postgres-bootstrap").restart, "no")
  })

  it("mounts files that exist, read-only, with the scripts executable", () => {
    for (const name of Object.keys(services)) {
      for (const mount of bindMounts(name)) {
        assert.isTrue(existsSync(mount.host), `${name}: ${mount.host}`)
        assert.strictEqual(mount.mode, "ro", `${name}: ${mount.container} read-only`)
        if (mount.host.endsWith(".sh")) accessSync(mount.host, constants.X_OK)
      }
    }
    const bootstrap = bindMounts("postgres-bootstrap")
    assert.deepStrictEqual(
      bootstrap.map((m) => m.container),
      ["/bootstrap/bootstrap.sh", "/bootstrap/bootstrap.sql"]
    )
    assert.strictEqual(dirname(bootstrap[0]!.host), repoPath("docker/postgres"))
    assert.deepStrictEqual(list(service("postgres-bootstrap").entrypoint), ["/bin/sh", "/bootstrap/bootstrap.sh"])
    assert.strictEqual(environmentOf("postgres-bootstrap").PGHOST, "haproxy")
  })

  it("publishes ports on the host's loopback only, and each host port once", () => {
    const published = Object.keys(services).flatMap((name) => strings(service(name).ports ?? []))
    for (const port of published) assert.match(port, /^127\.0\.0\.1:\d+:\d+$/)
    const hostPorts = published.map((port) => port.split(":")[1])
    assert.strictEqual(new Set(hostPorts).size, hostPorts.length)
    assert.notInclude(hostPorts, "5432", "the machine's own PostgreSQL keeps its port")
  })
})
