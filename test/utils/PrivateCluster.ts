/**
 * A PostgreSQL cluster of one test file's own, for tests that stop, restart or crash the server: the machine's
 * cluster on 5432 serves every other test file at the same moment and must never go down. It is initdb'd into a
 * fresh temp directory as the `postgres` OS user (the server refuses to run as root), trusts local connections,
 * listens on 127.0.0.1 on a free port with its socket in the same directory, and is stopped and deleted when the
 * scope closes. The database `orchestrator` in it is bootstrapped and migrated like the tests' own databases.
 */

import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { NodeServices } from "@effect/platform-node"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import type { DatabaseConfig } from "../../src/Config.ts"
import { migrate } from "../../src/store/Database.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import type { StoreSettings } from "../../src/store/settings.ts"
import { freePort } from "./freePort.ts"
import { bootstrap, type PgServer, passwords, psql } from "./postgres.ts"
import { isAlive } from "./processes.ts"

/** `fast` terminates the sessions (SQLSTATE 57P01) and checkpoints; `immediate` kills the server as a crash would. */
export type ShutdownMode = "fast" | "immediate"

export class PrivateCluster extends Context.Service<
  PrivateCluster,
  {
    readonly server: PgServer
    /** The temp directory holding the data directory, the socket and `server.log`. */
    readonly directory: string
    /** The bootstrapped, migrated database: runtime role, with the owner as migration credentials. */
    readonly config: DatabaseConfig
    /** Starts the server and waits until it accepts connections. */
    readonly start: Effect.Effect<void>
    /** Stops the server and waits until it is gone. */
    readonly stop: (mode: ShutdownMode) => Effect.Effect<void>
    /** Stops the server and starts it again, waiting until it accepts connections (after crash recovery). */
    readonly restart: (mode: ShutdownMode) => Effect.Effect<void>
    /** Runs SQL as the superuser in the orchestrator database; resolves with psql's unaligned output. */
    readonly superuser: (query: string) => Effect.Effect<string>
  }
>()("test/PrivateCluster") {}

export interface Options {
  /** Extra postgresql.conf settings, values as written in the file (strings quoted). */
  readonly postgresql?: Readonly<Record<string, string>> | undefined
}

const bin = "/usr/lib/postgresql/15/bin"
const database = "orchestrator"
/** Temp directories are named after the test process, so a later run can tell which ones were abandoned. */
const prefix = "orch-pg-"
const run = promisify(execFile)

/** Runs a PostgreSQL program as the `postgres` OS user, from a directory that user can read. */
const asPostgres = (cwd: string, program: string, args: ReadonlyArray<string>) =>
  run("setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", program, ...args], {
    cwd,
    env: { ...process.env, LC_ALL: "C" }
  })

interface Directories {
  readonly root: string
  readonly data: string
  readonly log: string
}

const directories = (root: string): Directories => ({
  root,
  data: path.join(root, "data"),
  log: path.join(root, "server.log")
})

/** pg_ctl, waiting for the outcome; a failure carries the end of the server log, which says why. */
const pgCtl = (dirs: Directories, args: ReadonlyArray<string>) =>
  asPostgres(dirs.root, `${bin}/pg_ctl`, ["-D", dirs.data, "-w", "-t", "30", ...args]).then(
    () => undefined,
    async (error: unknown) => {
      const log = await fs.readFile(dirs.log, "utf8").catch(() => "")
      throw new Error(`pg_ctl ${args.join(" ")} failed: ${String(error)}\n${log.split("\n").slice(-20).join("\n")}`)
    }
  )

/** The postmaster's pid while it runs this data directory: checked on /proc, so a reused pid is never signalled. */
const runningPostmaster = async (dirs: Directories) => {
  const pidFile = await fs.readFile(path.join(dirs.data, "postmaster.pid"), "utf8").catch(() => "")
  const pid = Number(pidFile.split("\n")[0])
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  const commandLine = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")
  return commandLine.split("\0").includes(dirs.data) ? pid : undefined
}

/** Whatever state the cluster was left in: stop it, kill the postmaster if it will not stop, delete its files. */
const removeCluster = async (dirs: Directories) => {
  const pid = await runningPostmaster(dirs)
  if (pid !== undefined) {
    await pgCtl(dirs, ["-m", "immediate", "stop"]).catch(() => undefined)
    // Its backends exit on their own once the postmaster is gone.
    if ((await runningPostmaster(dirs)) === pid) process.kill(pid, "SIGKILL")
  }
  await fs.rm(dirs.root, { recursive: true, force: true, maxRetries: 3 })
}

/** Clusters of test processes that died before their scope closed (a killed run). */
const removeAbandoned = Effect.promise(async () => {
  const entries = await fs.readdir(os.tmpdir())
  for (const entry of entries) {
    const owner = Number(entry.startsWith(prefix) ? entry.slice(prefix.length).split("-")[0] : Number.NaN)
    if (Number.isInteger(owner) && owner !== process.pid && !isAlive(owner)) {
      await removeCluster(directories(path.join(os.tmpdir(), entry)))
    }
  }
})

/** A fresh cluster in a temp directory owned by `postgres`, not yet started. */
const initCluster = Effect.fnUntraced(function* (options: Options) {
  const port = yield* freePort
  const template = path.join(os.tmpdir(), `${prefix}${process.pid}-XXXXXX`)
  const dirs = yield* Effect.promise(() =>
    asPostgres(os.tmpdir(), "mktemp", ["-d", template]).then(({ stdout }) => directories(stdout.trim()))
  )
  const initdbOptions = ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
  yield* Effect.promise(() =>
    asPostgres(dirs.root, `${bin}/initdb`, ["-D", dirs.data, "-U", "postgres", ...initdbOptions])
  )
  const settings = {
    listen_addresses: "'127.0.0.1'",
    port: String(port),
    unix_socket_directories: `'${dirs.root}'`,
    max_connections: "50",
    shared_buffers: "16MB",
    log_line_prefix: "'%m [%p] %q%u@%d '",
    ...options.postgresql
  }
  const lines = Object.entries(settings).map(([name, value]) => `${name} = ${value}\n`)
  // Appending as root leaves the file owned by postgres.
  yield* Effect.promise(() => fs.appendFile(path.join(dirs.data, "postgresql.conf"), ["\n", ...lines].join("")))
  return { dirs, port }
})

/** A private cluster, started, with the orchestrator database bootstrapped and migrated. */
export const layer = (options: Options = {}) =>
  Layer.effect(
    PrivateCluster,
    Effect.gen(function* () {
      yield* removeAbandoned
      const { dirs, port } = yield* Effect.acquireRelease(initCluster(options), ({ dirs }) =>
        Effect.promise(() => removeCluster(dirs))
      )
      const server: PgServer = { host: "127.0.0.1", port, superuser: "postgres" }
      const start = Effect.promise(() => pgCtl(dirs, ["-l", dirs.log, "start"]))
      const stop = (mode: ShutdownMode) => Effect.promise(() => pgCtl(dirs, ["-m", mode, "stop"]))
      // -l again: without it the new postmaster would write to (and hold open) pg_ctl's stdout.
      const restart = (mode: ShutdownMode) => Effect.promise(() => pgCtl(dirs, ["-l", dirs.log, "-m", mode, "restart"]))

      yield* start
      yield* Effect.promise(() => psql("postgres", ["-c", `CREATE DATABASE ${database}`], server))
      yield* Effect.promise(() => bootstrap(database, server))
      const config: DatabaseConfig = {
        host: server.host,
        port,
        database,
        user: "orchestrator_app",
        password: Redacted.make(passwords.app),
        ssl: "disable",
        migration: Option.some({ user: "orchestrator_owner", password: Redacted.make(passwords.owner) })
      }
      yield* migrate(config).pipe(Effect.orDie)

      return PrivateCluster.of({
        server,
        directory: dirs.root,
        config,
        start,
        stop,
        restart,
        superuser: (query) => Effect.promise(() => psql(database, ["-At", "-c", query], server))
      })
    })
  ).pipe(Layer.provide(NodeServices.layer))

/** A private cluster, the runtime pool on it (closed before the cluster goes), and the PostgreSQL SagaStore. */
export const layerStore = (
  options: Options & {
    readonly store?: Partial<StoreSettings> | undefined
    readonly maxConnections?: number | undefined
  } = {}
) =>
  Layer.unwrap(
    Effect.map(PrivateCluster, (cluster) =>
      PgSagaStore.layerDatabase(cluster.config, { ...options.store, maxConnections: options.maxConnections })
    )
  ).pipe(Layer.provideMerge(layer(options)))
