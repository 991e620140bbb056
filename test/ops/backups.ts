/**
 * What the backup test drives: the scripts of docker/backup, run as the `postgres` OS user where they touch the
 * pgBackRest repository (archive_command writes to it as that user, so nothing in it may belong to root); a
 * workspace directory owned by that user for the repository, its config, the restored copy and a fresh cluster; and
 * PostgreSQL servers started from such data directories, each ended by its pid when its scope closes. What a killed
 * run left behind (its owner pid is gone) is removed when the next one starts.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Layer } from "effect"
import type { PgServer } from "../utils/postgres.ts"
import { isAlive, projectRoot } from "../utils/processes.ts"
import { awaitGone, logTail, postmasterOf, processesNaming, signalIf, terminate } from "./daemons.ts"
import { ensurePackages, postgresBin } from "./packages.ts"

export const backupScripts = path.join(projectRoot, "docker", "backup")
/** Shares HaCluster's prefix: either test's clean-up removes what a killed run of the other left. */
const prefix = "orch-ops-"

export interface ScriptResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export class Workspace extends Context.Service<
  Workspace,
  {
    /** A temp directory owned by `postgres`, mode 0700; everything of the test's that is not the source cluster. */
    readonly root: string
    /** Where pgbackrest.conf goes (written once the source cluster runs: it names its data directory and port). */
    readonly pgbackrestConf: string
    /** Runs a script of docker/backup with a clean environment plus `env`; its exit code and output, whatever they are. */
    readonly script: (
      name: string,
      args: ReadonlyArray<string>,
      options: { readonly asPostgres: boolean; readonly env?: Record<string, string> | undefined }
    ) => Effect.Effect<ScriptResult>
  }
>()("test/ops/Workspace") {}

const postgresIds = () => {
  const line = fs
    .readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("postgres:"))
  const [, , uid, gid] = line?.split(":") ?? []
  if (uid === undefined || gid === undefined) throw new Error("no `postgres` OS user on this machine")
  return { uid: Number(uid), gid: Number(gid) }
}

/** Ends what `root` names that still runs (postmasters, pgBackRest), then deletes it. */
const removeWorkspace = (root: string) =>
  Effect.gen(function* () {
    for (const pid of processesNaming(root)) signalIf(pid, root, "SIGQUIT")
    for (const pid of processesNaming(root)) {
      if (!(yield* awaitGone(pid, root, 5_000))) signalIf(pid, root, "SIGKILL")
    }
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 })
  })

const removeAbandoned = Effect.gen(function* () {
  for (const entry of fs.readdirSync(os.tmpdir())) {
    const owner = Number(entry.startsWith(prefix) ? entry.slice(prefix.length).split("-")[0] : Number.NaN)
    if (Number.isInteger(owner) && owner !== process.pid && !isAlive(owner)) {
      yield* removeWorkspace(path.join(os.tmpdir(), entry))
    }
  }
})

const run = (program: string, args: ReadonlyArray<string>, cwd: string, env: Record<string, string>) =>
  Effect.callback<ScriptResult>((resume) => {
    const child = execFile(
      program,
      args,
      { cwd, env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        resume(Effect.succeed({ code, stdout, stderr: error !== null && code === -1 ? String(error) : stderr }))
      }
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** The workspace, after installing pgBackRest (and the other ops packages) when missing. */
export const layerWorkspace = Layer.effect(
  Workspace,
  Effect.gen(function* () {
    yield* Effect.promise(ensurePackages)
    yield* removeAbandoned
    const root = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const directory = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}${process.pid}-backup-`))
        fs.chownSync(directory, postgresIds().uid, postgresIds().gid)
        fs.chmodSync(directory, 0o700)
        return directory
      }),
      removeWorkspace
    )
    const script = (
      name: string,
      args: ReadonlyArray<string>,
      options: { readonly asPostgres: boolean; readonly env?: Record<string, string> | undefined }
    ) => {
      const env = {
        PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
        HOME: root,
        LC_ALL: "C.UTF-8",
        ...options.env
      }
      const command = [path.join(backupScripts, name), ...args]
      return options.asPostgres
        ? run("setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", ...command], root, env)
        : run(command[0] ?? "", command.slice(1), root, env)
    }
    return Workspace.of({ root, pgbackrestConf: path.join(root, "pgbackrest.conf"), script })
  })
)

/** `key = value` lines of a postgresql.conf fragment, values as written (strings quoted). */
export const postgresqlSettings = (file: string): Record<string, string> =>
  Object.fromEntries(
    fs
      .readFileSync(file, "utf8")
      .split("\n")
      .map((line) => /^\s*([a-z_]+)\s*=\s*(.*?)\s*$/.exec(line))
      .flatMap((match) => (match ? [[match[1] ?? "", match[2] ?? ""] as const] : []))
  )

/** The template with the given `key=value` lines replaced; fails when the template lacks one of them. */
export const renderConfig = (template: string, values: Readonly<Record<string, string>>) => {
  const seen = new Set<string>()
  const text = fs
    .readFileSync(template, "utf8")
    .split("\n")
    .map((line) => {
      const key = /^([a-z0-9-]+)=/.exec(line)?.[1]
      if (key === undefined || values[key] === undefined) return line
      seen.add(key)
      return `${key}=${values[key]}`
    })
    .join("\n")
  const missing = Object.keys(values).filter((key) => !seen.has(key))
  if (missing.length > 0) throw new Error(`${template} has no ${missing.join(", ")} to set`)
  return text
}

const asPostgres = (program: string, args: ReadonlyArray<string>, cwd: string) =>
  run("setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", program, ...args], cwd, {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    LC_ALL: "C"
  }).pipe(
    Effect.flatMap((result) =>
      result.code === 0
        ? Effect.succeed(result.stdout)
        : Effect.die(new Error(`${program} ${args.join(" ")} exited ${result.code}: ${result.stderr}`))
    )
  )

/** A new, empty cluster in `dataDir` (which must not exist yet), trusting local connections. */
export const initdb = (dataDir: string) =>
  asPostgres(
    `${postgresBin}/initdb`,
    ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
    path.dirname(dataDir)
  ).pipe(Effect.asVoid)

/**
 * Starts PostgreSQL on `dataDir` for the scope's lifetime, on 127.0.0.1:`port` with its socket in the data
 * directory's parent and archiving off (the settings a copy inherits from the cluster it came from are overridden).
 * Waits until it accepts connections — for a restored copy, until recovery has reached consistency. Ended by its pid
 * when the scope closes: fast shutdown, SIGKILL if it does not go.
 */
export const startServer = (dataDir: string, port: number) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const socketDir = path.dirname(dataDir)
      const log = `${dataDir}.log`
      const options = `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='${socketDir}' -c archive_mode=off`
      yield* asPostgres(
        `${postgresBin}/pg_ctl`,
        ["-D", dataDir, "-l", log, "-w", "-t", "60", "-o", options, "start"],
        socketDir
      ).pipe(Effect.catchDefect((defect) => Effect.die(new Error(`${String(defect)}\n${logTail(log)}`))))
      const server: PgServer = { host: "127.0.0.1", port, superuser: "postgres" }
      return server
    }),
    () =>
      Effect.gen(function* () {
        const postmaster = postmasterOf(dataDir)
        if (postmaster !== undefined) yield* terminate(postmaster, dataDir, "SIGINT", 10_000)
      })
  )

/** `pg_dump --schema-only` of the orchestrator schema, as the superuser. */
export const schemaDump = (server: PgServer) =>
  run(
    "pg_dump",
    ["-s", "-n", "orchestrator", "-h", server.host, "-p", String(server.port), "-U", server.superuser, "orchestrator"],
    os.tmpdir(),
    { PATH: process.env.PATH ?? "/usr/bin:/bin" }
  ).pipe(
    Effect.flatMap((result) =>
      result.code === 0 ? Effect.succeed(result.stdout) : Effect.die(new Error(`pg_dump failed: ${result.stderr}`))
    )
  )
