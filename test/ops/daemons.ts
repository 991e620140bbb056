/**
 * Daemons the ops tests start (etcd, Patroni, HAProxy) and the postmasters Patroni starts. Each is spawned so that
 * the child's pid is the daemon itself (`setpriv` execs it, as the `postgres` user where it refuses root), writes to
 * a log file of its own, and is ended by its pid only — checked on /proc first, so a reused pid is never signalled.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { Effect, Schedule } from "effect"

export interface Daemon {
  readonly name: string
  readonly pid: number
  readonly log: string
  /** Resolves with the exit code or signal once the daemon has ended. */
  readonly exited: Promise<number | string>
  readonly hasExited: () => boolean
}

/** Runs `program` as the `postgres` OS user (Patroni and PostgreSQL refuse to run as root). */
export const asPostgres = (program: string, args: ReadonlyArray<string>) =>
  ["setpriv", ["--reuid=postgres", "--regid=postgres", "--init-groups", program, ...args]] as const

export const spawnDaemon = (options: {
  readonly name: string
  readonly command: readonly [string, ReadonlyArray<string>]
  readonly cwd: string
  readonly log: string
  readonly env?: Record<string, string> | undefined
}): Daemon => {
  const out = fs.openSync(options.log, "a")
  const [program, args] = options.command
  const child = spawn(program, args, {
    cwd: options.cwd,
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C.UTF-8", ...options.env },
    stdio: ["ignore", out, out]
  })
  fs.closeSync(out)
  if (child.pid === undefined) throw new Error(`${options.name} did not start (${program} ${args.join(" ")})`)
  let ended = false
  const exited = new Promise<number | string>((resolve) =>
    child.once("exit", (code, signal) => {
      ended = true
      resolve(code ?? signal ?? "unknown")
    })
  )
  return { name: options.name, pid: child.pid, log: options.log, exited, hasExited: () => ended }
}

/** The process's command line, or undefined when there is no such process or it is a zombie. */
export const commandLine = (pid: number): string | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return undefined
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ")
  } catch {
    return undefined
  }
}

/** Signals `pid` only while its command line still contains `mark` (a path of the test's own). */
export const signalIf = (pid: number, mark: string, signal: NodeJS.Signals): boolean => {
  if (!commandLine(pid)?.includes(mark)) return false
  try {
    process.kill(pid, signal)
    return true
  } catch {
    return false
  }
}

/** Waits until no live process with `pid` and `mark` in its command line is left; false after the deadline. */
export const awaitGone = (pid: number, mark: string, timeout: number) =>
  Effect.sync(() => commandLine(pid)?.includes(mark) !== true).pipe(
    Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (gone) => gone }),
    Effect.timeoutOption(timeout),
    Effect.map((gone) => gone._tag === "Some")
  )

/**
 * Ends a process by its pid: `signal` first, SIGKILL if it is still there after `grace` ms; waits until it is gone.
 * `mark` is a path in its command line (its config file, its data directory).
 */
export const terminate = (pid: number, mark: string, signal: NodeJS.Signals, grace: number) =>
  Effect.gen(function* () {
    if (!signalIf(pid, mark, signal)) return
    if (yield* awaitGone(pid, mark, grace)) return
    signalIf(pid, mark, "SIGKILL")
    yield* awaitGone(pid, mark, 5_000)
  })

/** The postmaster running `dataDir`, from its pid file, while it runs. */
export const postmasterOf = (dataDir: string): number | undefined => {
  const pidFile = fs.existsSync(`${dataDir}/postmaster.pid`) ? fs.readFileSync(`${dataDir}/postmaster.pid`, "utf8") : ""
  const pid = Number(pidFile.split("\n")[0])
  return Number.isInteger(pid) && pid > 0 && commandLine(pid)?.includes(dataDir) ? pid : undefined
}

/** Processes whose command line names `mark`: what a killed run of the tests left behind in its directory. */
export const processesNaming = (mark: string): ReadonlyArray<number> =>
  fs
    .readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => pid !== process.pid && commandLine(pid)?.includes(mark) === true)

/** The last lines of a log file, for error messages. */
export const logTail = (file: string, lines = 30) =>
  (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "").split("\n").slice(-lines).join("\n")
