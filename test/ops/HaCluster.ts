/**
 * PostgreSQL in high availability, as production runs it (TR-DB-1), on loopback: one etcd member, two
 * Patroni nodes (a leader and its synchronous replica) and HAProxy in front, which sends clients to whichever node
 * Patroni's REST API calls the writable primary. Everything lives in a temp directory owned by the `postgres` user
 * and runs on free ports; configurations come from templates.ts. The database `orchestrator` is bootstrapped
 * (docker/postgres/bootstrap.sql) and migrated through HAProxy, so clients see one endpoint throughout.
 *
 * Every daemon is ended by its pid when the scope closes, failed test or not, and the directory deleted; what a
 * killed run left behind (its owner pid is gone) is removed when the next one starts.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { NodeServices } from "@effect/platform-node"
import { Clock, Context, type Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { DatabaseConfig } from "../../src/Config.ts"
import { migrate } from "../../src/store/Database.ts"
import { freePort } from "../utils/freePort.ts"
import { bootstrap, type PgServer, passwords, psql } from "../utils/postgres.ts"
import {
  asPostgres,
  awaitGone,
  type Daemon,
  logTail,
  postmasterOf,
  signalIf,
  spawnDaemon,
  terminate
} from "./daemons.ts"
import { haproxyServers, poll, request } from "./HaCluster/checks.ts"
import { makeRoot, ownDirectory, removeAbandoned } from "./HaCluster/files.ts"
import { postgresBin } from "./packages.ts"
import { etcdArguments, haproxyConfig, type PatroniNode, patroniConfig } from "./templates.ts"

/** A member as Patroni's `GET /cluster` reports it. */
export const Member = Schema.Struct({
  name: Schema.String,
  /** `leader`, `sync_standby` or `replica`. */
  role: Schema.String,
  /** `running`, `stopped`, `starting`, `creating replica`, … */
  state: Schema.String,
  timeline: Schema.optional(Schema.Number)
})
export type Member = typeof Member.Type
const decodeCluster = Schema.decodeUnknownEffect(
  Schema.fromJsonString(Schema.Struct({ members: Schema.optional(Schema.Array(Member)) }))
)

export class HaCluster extends Context.Service<
  HaCluster,
  {
    readonly directory: string
    readonly nodes: ReadonlyArray<PatroniNode>
    /** HAProxy, as the superuser. */
    readonly endpoint: PgServer
    /** The orchestrator database through HAProxy: runtime role, with the owner as migration credentials. */
    readonly config: DatabaseConfig
    /** The cluster as the first REST API that answers sees it. */
    readonly members: Effect.Effect<ReadonlyArray<Member>, Error>
    /** Waits until a node other than `not` leads and is writable; returns its name. */
    readonly awaitLeader: (options?: {
      readonly not?: string
      readonly timeout?: Duration.Input
    }) => Effect.Effect<string, Error>
    /** Waits until `node` runs as the leader's synchronous standby (the only node a failover may promote). */
    readonly awaitSyncStandby: (node: string, timeout?: Duration.Input) => Effect.Effect<void, Error>
    /** SIGKILLs the node's Patroni and its postmaster, as a machine dying would; returns when both are gone. */
    readonly crash: (node: string) => Effect.Effect<void>
    /** Starts the node's Patroni (again). */
    readonly start: (node: string) => Effect.Effect<void>
    /** A planned switchover through the leader's REST API; returns once Patroni reports it done. */
    readonly switchover: (leader: string, candidate: string) => Effect.Effect<void, Error>
    /** Runs SQL as the superuser on one node directly (not through HAProxy); psql's unaligned output. */
    readonly query: (node: string, database: string, sql: string) => Effect.Effect<string, Error>
    /** The node's Patroni log (PostgreSQL's own output included). */
    readonly log: (node: string) => string
  }
>()("test/ops/HaCluster") {}

const database = "orchestrator"
const clusterPasswords = { replication: "replication-test-secret", rewind: "rewind-test-secret" }

export const layer = Layer.effect(
  HaCluster,
  Effect.gen(function* () {
    yield* removeAbandoned
    const [etcdPort, etcdPeerPort, haproxyPort, ...nodePorts] = yield* Effect.forEach(
      Array.from({ length: 7 }),
      () => freePort
    )
    if (etcdPort === undefined || etcdPeerPort === undefined || haproxyPort === undefined) {
      return yield* Effect.die(new Error("no free ports"))
    }
    const root = yield* Effect.acquireRelease(makeRoot, (root) =>
      Effect.sync(() => fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 }))
    )
    const scope = `orch-ha-${process.pid}`
    const nodes: ReadonlyArray<PatroniNode> = ["node1", "node2"].map((name, i) => ({
      name,
      pgPort: nodePorts[2 * i] ?? 0,
      restPort: nodePorts[2 * i + 1] ?? 0,
      directory: ownDirectory(path.join(root, name))
    }))
    const nodeNamed = (name: string) => {
      const node = nodes.find((n) => n.name === name)
      if (node === undefined) throw new Error(`no node ${name}`)
      return node
    }
    const configFile = (node: PatroniNode) => path.join(root, `${node.name}.yml`)
    const logFile = (name: string) => path.join(root, `${name}.log`)
    for (const node of nodes) {
      const text = patroniConfig({ scope, node, etcdPort, binDir: postgresBin, passwords: clusterPasswords })
      fs.writeFileSync(configFile(node), text, { mode: 0o644 })
    }

    // etcd first: Patroni's lock and the cluster's configuration live there.
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawnDaemon({
          name: "etcd",
          command: asPostgres(
            "etcd",
            etcdArguments({
              name: "etcd1",
              dataDir: ownDirectory(path.join(root, "etcd")),
              clientPort: etcdPort,
              peerPort: etcdPeerPort
            })
          ),
          cwd: root,
          log: logFile("etcd")
        })
      ),
      (etcd) => terminate(etcd.pid, root, "SIGTERM", 5_000)
    )
    yield* poll(
      "etcd did not report healthy",
      Effect.map(request(`http://127.0.0.1:${etcdPort}/health`), (r) => (r.body.includes("true") ? true : undefined)),
      "30 seconds",
      () => logTail(logFile("etcd"))
    )

    // The running Patroni of each node; ended with its postmaster when the scope closes (replica and leader at once).
    const patroni = new Map<string, Daemon>()
    const stopNode = (node: PatroniNode) =>
      Effect.gen(function* () {
        const daemon = patroni.get(node.name)
        if (daemon !== undefined) yield* terminate(daemon.pid, configFile(node), "SIGTERM", 15_000)
        const postmaster = postmasterOf(path.join(node.directory, "data"))
        // SIGQUIT: immediate shutdown, which still removes the shared memory a SIGKILL would leave behind.
        if (postmaster !== undefined) yield* terminate(postmaster, node.directory, "SIGQUIT", 5_000)
      })
    yield* Effect.addFinalizer(() => Effect.forEach(nodes, stopNode, { concurrency: "unbounded", discard: true }))

    const start = (name: string) =>
      Effect.sync(() => {
        const node = nodeNamed(name)
        const running = patroni.get(name)
        if (running !== undefined && !running.hasExited()) throw new Error(`${name}'s Patroni is running already`)
        patroni.set(
          name,
          spawnDaemon({
            name: `patroni ${name}`,
            command: asPostgres("patroni", [configFile(node)]),
            cwd: root,
            log: logFile(name)
          })
        )
      })

    const crash = (name: string) =>
      Effect.gen(function* () {
        const node = nodeNamed(name)
        const daemon = patroni.get(name)
        const dataDir = path.join(node.directory, "data")
        const postmaster = postmasterOf(dataDir)
        // Patroni first, in the same instant: alone, a killed postmaster is restarted by its Patroni.
        if (daemon !== undefined) signalIf(daemon.pid, configFile(node), "SIGKILL")
        if (postmaster !== undefined) signalIf(postmaster, dataDir, "SIGKILL")
        if (daemon !== undefined) yield* Effect.promise(() => daemon.exited)
        if (postmaster !== undefined) yield* awaitGone(postmaster, dataDir, 5_000)
      })

    const members = Effect.gen(function* () {
      for (const node of nodes) {
        const response = yield* Effect.result(request(`http://127.0.0.1:${node.restPort}/cluster`))
        if (response._tag === "Success" && response.success.status === 200) {
          const cluster = yield* decodeCluster(response.success.body).pipe(
            Effect.mapError((error) => new Error(`GET /cluster: ${error.message}`))
          )
          return cluster.members ?? []
        }
      }
      return yield* Effect.fail(new Error("no Patroni REST API answers"))
    })

    const describe = () => nodes.map((node) => `--- ${node.name}:\n${logTail(logFile(node.name), 15)}`).join("\n")

    const isPrimary = (node: PatroniNode) =>
      Effect.map(request(`http://127.0.0.1:${node.restPort}/primary`, { method: "OPTIONS" }), (r) => r.status === 200)

    const awaitLeader = (options: { readonly not?: string; readonly timeout?: Duration.Input } = {}) =>
      poll(
        `no writable leader${options.not === undefined ? "" : ` other than ${options.not}`}`,
        Effect.gen(function* () {
          const leader = (yield* members).find(
            (m) => m.role === "leader" && m.state === "running" && m.name !== options.not
          )
          return leader !== undefined && (yield* isPrimary(nodeNamed(leader.name))) ? leader.name : undefined
        }),
        options.timeout ?? "60 seconds",
        describe
      )

    const awaitSyncStandby = (name: string, timeout: Duration.Input = "60 seconds") =>
      poll(
        `${name} is not the synchronous standby`,
        Effect.map(members, (all) =>
          all.some((m) => m.name === name && m.role === "sync_standby" && m.state === "running") ? true : undefined
        ),
        timeout,
        describe
      ).pipe(Effect.asVoid)

    const switchover = (leader: string, candidate: string) =>
      request(`http://127.0.0.1:${nodeNamed(leader).restPort}/switchover`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ leader, candidate })
      }).pipe(
        Effect.flatMap((response) =>
          response.status === 200
            ? Effect.void
            : Effect.fail(new Error(`switchover ${leader} → ${candidate}: ${response.status} ${response.body}`))
        )
      )

    const nodeServer = (name: string): PgServer => ({
      host: "127.0.0.1",
      port: nodeNamed(name).pgPort,
      superuser: "postgres"
    })
    const query = (name: string, db: string, sql: string) =>
      Effect.tryPromise({
        try: () => psql(db, ["-At", "-c", sql], nodeServer(name)),
        catch: (error) => new Error(`psql on ${name}: ${String(error)}`)
      })

    // The first node bootstraps the cluster and leads; the second clones it and becomes its synchronous standby.
    const [first, second] = nodes
    if (first === undefined || second === undefined) return yield* Effect.die(new Error("two nodes expected"))
    const begin = yield* Clock.currentTimeMillis
    yield* start(first.name)
    yield* awaitLeader({ timeout: "60 seconds" })
    yield* start(second.name)
    yield* awaitSyncStandby(second.name)

    const haproxyFile = path.join(root, "haproxy.cfg")
    const statsSocket = path.join(root, "haproxy.sock")
    fs.writeFileSync(haproxyFile, haproxyConfig({ port: haproxyPort, nodes, statsSocket }))
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawnDaemon({
          name: "haproxy",
          // -db: stay in the foreground, so that the pid is HAProxy's own.
          command: ["haproxy", ["-db", "-f", haproxyFile]],
          cwd: root,
          log: logFile("haproxy")
        })
      ),
      (haproxy) => terminate(haproxy.pid, haproxyFile, "SIGTERM", 5_000)
    )
    const endpoint: PgServer = { host: "127.0.0.1", port: haproxyPort, superuser: "postgres" }
    // HAProxy starts with every server up: ready once it sees the leader up and the replica down.
    const leader = yield* awaitLeader()
    yield* poll(
      "HAProxy does not see the leader alone up",
      Effect.map(haproxyServers(statsSocket), (servers) =>
        // Exactly: "UP 1/2" is a server going down that still takes connections.
        nodes.every((node) => servers.get(node.name) === (node.name === leader ? "UP" : "DOWN")) ? true : undefined
      ),
      "20 seconds",
      () => logTail(logFile("haproxy"))
    )

    yield* Effect.promise(() => psql("postgres", ["-c", `CREATE DATABASE ${database}`], endpoint))
    yield* Effect.promise(() => bootstrap(database, endpoint))
    const config: DatabaseConfig = {
      host: endpoint.host,
      port: haproxyPort,
      database,
      user: "orchestrator_app",
      password: Redacted.make(passwords.app),
      ssl: "disable",
      migration: Option.some({ user: "orchestrator_owner", password: Redacted.make(passwords.owner) })
    }
    yield* migrate(config).pipe(Effect.orDie)
    const ready = (yield* Clock.currentTimeMillis) - begin
    yield* Effect.logInfo(`HA cluster up in ${ready} ms: HAProxy on 127.0.0.1:${haproxyPort}, ${root}`)

    return HaCluster.of({
      directory: root,
      nodes,
      endpoint,
      config,
      members,
      awaitLeader,
      awaitSyncStandby,
      crash,
      start,
      switchover,
      query,
      log: logFile
    })
  }).pipe(Effect.orDie)
).pipe(Layer.provide(NodeServices.layer))
