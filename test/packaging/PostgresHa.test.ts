import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { at, haproxySections, readCompose, readText, readYaml, record, run, strings, text } from "./files.ts"

const nodes = ["patroni1", "patroni2"] as const
const patroni = Object.fromEntries(nodes.map((node) => [node, readYaml(`docker/patroni/${node}.yml`)]))
const compose = readCompose()
const services = record(compose.services)
const haproxy = haproxySections(readText("docker/haproxy/haproxy.cfg"))
const section = (kind: string, name: string) => {
  const found = haproxy.find((s) => s.kind === kind && s.name === name)
  assert.isDefined(found, `haproxy.cfg: ${kind} ${name}`)
  return found!.lines
}
const directive = (lines: ReadonlyArray<string>, keyword: string) => lines.filter((l) => l.startsWith(`${keyword} `))

const hostPort = (address: unknown) => {
  const [host = "", port = ""] = text(address).split(":")
  return { host, port: Number(port) }
}

/** Replaces what differs between the two node configs by a placeholder, to compare the rest. */
const normalized = (node: string) => JSON.stringify(patroni[node]).replaceAll(node, "NODE")

describe("Patroni (docker/patroni)", () => {
  it("runs two nodes whose configs differ only in their name and addresses", () => {
    assert.strictEqual(normalized("patroni1"), normalized("patroni2"))
    for (const node of nodes) {
      const config = patroni[node]
      assert.strictEqual(config?.name, node)
      assert.strictEqual(hostPort(at(config, "restapi", "connect_address")).host, node)
      assert.strictEqual(hostPort(at(config, "postgresql", "connect_address")).host, node)
      // The compose service of that name mounts exactly this file as the node's config.
      assert.include(strings(at(services, node, "volumes")), `./patroni/${node}.yml:/etc/patroni/patroni.yml:ro`)
      assert.strictEqual(at(services, node, "hostname"), node)
    }
  })

  it("uses etcd's v3 API at the compose etcd service, and fails over within the timing rule", () => {
    const config = patroni.patroni1
    const etcd = hostPort(at(config, "etcd3", "hosts"))
    assert.strictEqual(etcd.host, "etcd")
    assert.include(strings(at(services, "etcd", "command")), `--listen-client-urls=http://0.0.0.0:${etcd.port}`)
    const dcs = record(at(config, "bootstrap", "dcs"))
    const [ttl, loopWait, retryTimeout] = [dcs.ttl, dcs.loop_wait, dcs.retry_timeout].map(Number)
    assert.isAtMost(loopWait! + 2 * retryTimeout!, ttl!, "loop_wait + 2 * retry_timeout <= ttl")
    assert.strictEqual(at(dcs, "postgresql", "use_pg_rewind"), true)
    assert.strictEqual(at(dcs, "postgresql", "parameters", "wal_log_hints"), "on")
    // Commits acknowledged to the service survive a crash failover only with synchronous replication.
    for (const node of Object.values(patroni))
      assert.strictEqual(at(node, "bootstrap", "dcs", "synchronous_mode"), true)
  })

  it("runs PostgreSQL 15's binaries as Debian installs them, with no password in the config", () => {
    const config = patroni.patroni1
    assert.strictEqual(at(config, "postgresql", "bin_dir"), "/usr/lib/postgresql/15/bin")
    assert.match(readText("docker/patroni/Dockerfile"), /apt-get install [^\n]*postgresql-15 patroni/)
    assert.notMatch(JSON.stringify(config), /"password"\s*:/, "no password key")
    const users = Object.keys(record(at(config, "postgresql", "authentication")))
    assert.sameMembers(users, ["superuser", "replication", "rewind"])
    // entrypoint.sh hands each of them its password from a mounted secret file.
    const entrypoint = readText("docker/patroni/entrypoint.sh")
    const secrets = strings(at(services, "patroni1", "secrets"))
    for (const user of users) {
      const assignment = new RegExp(`PATRONI_${user.toUpperCase()}_PASSWORD=\\$\\(secret (\\w+)\\)`).exec(entrypoint)
      assert.isNotNull(assignment, `entrypoint.sh sets PATRONI_${user.toUpperCase()}_PASSWORD`)
      assert.include(secrets, assignment![1], `the secret ${assignment![1]} is mounted`)
    }
    const hba = strings(at(config, "postgresql", "pg_hba"))
    assert.include(hba, "host replication replicator all scram-sha-256")
    assert.isTrue(
      hba.every((line) => !/\btrust\b/.test(line)),
      "no trust authentication"
    )
  })
})

describe("HAProxy (docker/haproxy/haproxy.cfg)", () => {
  const primary = section("listen", "postgres-primary")

  it("routes to the Patroni leader, checked with OPTIONS /primary on the REST API", () => {
    assert.include(primary, "option httpchk OPTIONS /primary")
    assert.include(primary, "http-check expect status 200")
    assert.include(directive(section("defaults", ""), "mode"), "mode tcp")
  })

  it("marks a demoted leader down within a second and cuts its sessions", () => {
    const [defaults] = directive(primary, "default-server")
    for (const option of ["inter 500ms", "fall 2", "rise 1", "on-marked-down shutdown-sessions"]) {
      assert.include(defaults, option)
    }
  })

  it("knows each Patroni node at its PostgreSQL port, checked on its REST port", () => {
    const servers = directive(primary, "server").map((line) => line.split(" "))
    assert.sameMembers(
      servers.map((words) => words[1]),
      [...nodes]
    )
    for (const words of servers) {
      const node = text(words[1])
      const config = patroni[node]
      const pgPort = hostPort(at(config, "postgresql", "listen")).port
      const restPort = hostPort(at(config, "restapi", "listen")).port
      assert.strictEqual(words[2], `${node}:${pgPort}`)
      assert.include(words.join(" "), `check port ${restPort}`)
      // Clients beyond what PostgreSQL accepts wait in HAProxy's queue rather than being refused.
      const maxconn = Number(words[words.indexOf("maxconn") + 1])
      assert.isBelow(maxconn, Number(at(config, "bootstrap", "dcs", "postgresql", "parameters", "max_connections")))
    }
  })

  it("listens where the orchestrator connects, re-resolving nodes through Docker's DNS", () => {
    const port = Number(at(services, "orchestrator-1", "environment", "ORCH_DB_PORT"))
    assert.include(directive(primary, "bind"), `bind :${port}`)
    assert.include(directive(primary, "default-server")[0], "resolvers docker")
    assert.include(section("resolvers", "docker"), "nameserver dns 127.0.0.11:53")
  })

  it("reports healthy only while a primary is up, where compose's healthcheck asks", () => {
    const health = section("frontend", "health")
    assert.include(health, "monitor-uri /health")
    assert.include(health, "monitor fail if { nbsrv(postgres-primary) lt 1 }")
    const test = strings(at(services, "haproxy", "healthcheck", "test"))
    const bind = text(directive(health, "bind")[0]).split(":")[1]
    assert.include(test.at(-1), `/dev/tcp/127.0.0.1/${bind}`)
    assert.include(test.at(-1), "GET /health ")
  })
})

/** An HTTP server on a free loopback port answering `status` to every request, for the scope's lifetime. */
const httpServer = (status: number) =>
  Effect.acquireRelease(
    Effect.callback<Server>((resume) => {
      const server = createServer((_, response) => response.writeHead(status).end())
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => String((server.address() as AddressInfo).port)))

describe("compose healthchecks of the database tier", () => {
  /** Runs a healthcheck's CMD with its fixed port replaced by a test server's. */
  const check = (name: string, fixedPort: string, port: string) => {
    const [cmd, program = "", ...args] = strings(at(services, name, "healthcheck", "test"))
    assert.strictEqual(cmd, "CMD")
    // `127.0.0.1:8008` in a URL, `127.0.0.1/8404` in bash's /dev/tcp path.
    const address = new RegExp(`127\\.0\\.0\\.1([:/])${fixedPort}\\b`, "g")
    const replaced = args.map((arg) => arg.replace(address, `127.0.0.1$1${port}`))
    assert.notDeepEqual(replaced, args, `the healthcheck of ${name} names port ${fixedPort}`)
    return run(program, replaced, { timeoutMs: 10_000 }).pipe(Effect.map((result) => result.code))
  }

  it.effect("HAProxy's passes on 200 and fails on 503 (no primary) and when nothing listens", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* check("haproxy", "8404", yield* httpServer(200)), 0)
      assert.notStrictEqual(yield* check("haproxy", "8404", yield* httpServer(503)), 0)
      assert.notStrictEqual(yield* check("haproxy", "8404", yield* Effect.scoped(httpServer(200))), 0)
    })
  )

  it.effect("Patroni's passes on 200 and fails on 503 (PostgreSQL down) and when nothing listens", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* check("patroni1", "8008", yield* httpServer(200)), 0)
      assert.notStrictEqual(yield* check("patroni1", "8008", yield* httpServer(503)), 0)
      assert.notStrictEqual(yield* check("patroni1", "8008", yield* Effect.scoped(httpServer(200))), 0)
    })
  )
})
