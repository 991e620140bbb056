/**
 * The bench's own PostgreSQL database and RabbitMQ vhost, created for the run and dropped afterwards: the database is
 * bootstrapped (docker/postgres/bootstrap.sql) and migrated as the service's would be; the store connects as the
 * DML-only runtime role.
 */
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { readFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { NodeServices } from "@effect/platform-node"
import { Effect, Option, Redacted } from "effect"
import type { DatabaseConfig } from "../src/Config.ts"
import { migrate } from "../src/store/Database.ts"
import { bootstrap, passwords, pg, psql } from "../test/utils/postgres.ts"

const run = promisify(execFile)

export const projectRoot = new URL("..", import.meta.url).pathname

export interface BenchEnv {
  readonly database: string
  readonly config: DatabaseConfig
  readonly vhost: string
  readonly amqpUrl: string
  readonly secrets: string
  /** SQL as the superuser in the bench database; psql's unaligned, tuples-only output. */
  readonly superuser: (query: string) => Effect.Effect<string>
}

export const rabbitmqctl = (args: ReadonlyArray<string>) =>
  Effect.promise(() => run("rabbitmqctl", [...args], { timeout: 60_000 }).then((r) => r.stdout))

const createDatabase = (name: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      await psql("postgres", ["-c", `CREATE DATABASE ${name}`])
      await bootstrap(name)
      return name
    }),
    () => Effect.promise(() => psql("postgres", ["-c", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]))
  )

const createVhost = (name: string) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      yield* rabbitmqctl(["add_vhost", name])
      yield* rabbitmqctl(["set_permissions", "-p", name, "guest", ".*", ".*", ".*"])
      return name
    }),
    () => rabbitmqctl(["delete_vhost", name]).pipe(Effect.ignore)
  )

const secretsDirectory = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(join(tmpdir(), "orch-bench-"))
    const files = {
      db_password: passwords.app,
      db_migration_password: passwords.owner,
      amqp_password: "guest",
      api_tokens: "bench-token-unused"
    }
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), `${content}\n`, { mode: 0o600 })
    return dir
  }),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** Creates the database and vhost for the scope's lifetime. */
export const acquire = Effect.gen(function* () {
  const name = `orch_bench_${process.pid}`
  const database = yield* createDatabase(name)
  const config: DatabaseConfig = {
    host: pg.host,
    port: pg.port,
    database,
    user: "orchestrator_app",
    password: Redacted.make(passwords.app),
    ssl: "disable",
    migration: Option.some({ user: "orchestrator_owner", password: Redacted.make(passwords.owner) })
  }
  yield* migrate(config).pipe(Effect.provide(NodeServices.layer), Effect.orDie)
  const vhost = yield* createVhost(name)
  const secrets = yield* secretsDirectory
  return {
    database,
    config,
    vhost,
    amqpUrl: `amqp://guest@${pg.host}:5672/${encodeURIComponent(vhost)}`,
    secrets,
    superuser: (query: string) => Effect.promise(() => psql(database, ["-At", "-c", query]))
  } satisfies BenchEnv
})

/** pgbench against the bench database as the superuser; resolves with its stdout. */
export const pgbench = (database: string, args: ReadonlyArray<string>) =>
  Effect.promise(() =>
    run("pgbench", ["-h", pg.host, "-p", String(pg.port), "-U", pg.superuser, ...args, database], {
      maxBuffer: 16 * 1024 * 1024
    }).then((r) => r.stdout)
  )

export interface Child {
  readonly pid: number
  readonly output: () => string
  readonly waitFor: (pattern: RegExp, timeoutMs: number) => Effect.Effect<void>
}

/** A node process (this node, so .ts runs) for the scope's lifetime, killed by its pid when the scope closes. */
export const nodeProcess = (
  args: ReadonlyArray<string>,
  env: Record<string, string>,
  nodeOptions: ReadonlyArray<string> = []
) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [...nodeOptions, ...args], {
        cwd: projectRoot,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      const onData = (chunk: Buffer) => {
        output = (output + chunk.toString("utf8")).slice(-200_000)
      }
      child.stdout?.on("data", onData)
      child.stderr?.on("data", onData)
      const waitFor = (pattern: RegExp, timeoutMs: number) =>
        Effect.gen(function* () {
          const deadline = Date.now() + timeoutMs
          while (!pattern.test(output)) {
            if (child.exitCode !== null || Date.now() > deadline) {
              return yield* Effect.die(new Error(`no ${pattern} from ${args[0]}:\n${output.slice(-3000)}`))
            }
            yield* Effect.sleep("50 millis")
          }
        })
      return { child, pid: child.pid ?? 0, output: () => output, waitFor }
    }),
    ({ child }) =>
      Effect.callback<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGTERM")
        setTimeout(() => child.kill("SIGKILL"), 5000).unref()
      })
  )

/** The service's environment, as in production: passwords in files, migrations with the owner's credentials. */
export const serviceEnvironment = (env: BenchEnv, httpPort: number): Record<string, string> => ({
  ORCH_DB_HOST: env.config.host,
  ORCH_DB_PORT: String(env.config.port),
  ORCH_DB_NAME: env.database,
  ORCH_DB_MIGRATION_USER: "orchestrator_owner",
  ORCH_SECRETS_DIR: env.secrets,
  ORCH_AMQP_URL: env.amqpUrl,
  ORCH_HTTP_PORT: String(httpPort)
})

/** Resident set size of a process, from /proc, in MB. */
export const rssMb = (pid: number) =>
  Effect.promise(() => readFile(`/proc/${pid}/status`, "utf8")).pipe(
    Effect.map((status) => Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024)
  )

export const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0)

/** Processes whose CPU time is summed: given by pid, or all those of a system user (PostgreSQL, RabbitMQ). */
export type CpuGroup = { readonly pids: ReadonlyArray<number> } | { readonly user: string }

const ticksPerSecond = 100

const processCpuSeconds = (pid: number) =>
  Effect.promise(() => readFile(`/proc/${pid}/stat`, "utf8").catch(() => "")).pipe(
    Effect.map((stat) => {
      // Fields after the command name (which may hold spaces), from field 3 on: utime and stime are 14 and 15,
      // cutime and cstime (children that ended and were waited for) 16 and 17. With the children, a group whose
      // processes come and go (PostgreSQL backends, reaped by the postmaster) keeps the CPU of those that ended.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      return fields.slice(11, 15).reduce((sum, ticks) => sum + Number(ticks), 0) / ticksPerSecond
    })
  )

const pidsOf = (group: CpuGroup) =>
  "pids" in group
    ? Effect.succeed(group.pids)
    : Effect.promise(() =>
        run("pgrep", ["-u", group.user])
          .then((r) => r.stdout.split("\n").filter(Boolean).map(Number))
          .catch((): Array<number> => [])
      )

/**
 * CPU seconds (user + system) used so far by each group, its processes' ended children included; a process that
 * ended is counted only when its parent is in the group.
 */
export const cpuSnapshot = (groups: Readonly<Record<string, CpuGroup>>) =>
  Effect.forEach(Object.entries(groups), ([name, group]) =>
    pidsOf(group).pipe(
      Effect.flatMap((pids) => Effect.forEach(pids, processCpuSeconds)),
      Effect.map((seconds) => [name, seconds.reduce((a, b) => a + b, 0)] as const)
    )
  ).pipe(Effect.map((entries) => Object.fromEntries(entries) as Record<string, number>))

/** Milliseconds of CPU per unit of work in each group between two snapshots. */
export const cpuPer = (before: Record<string, number>, after: Record<string, number>, units: number) =>
  Object.fromEntries(
    Object.keys(after).map((name) => [name, ((after[name] ?? 0) - (before[name] ?? 0)) * (1000 / units)])
  )
