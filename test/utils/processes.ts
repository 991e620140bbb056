/**
 * The service as an OS process, for tests that need real process boundaries: several instances at once, exit
 * codes, signals. Output is collected so a test can wait for a line (with a deadline) instead of sleeping.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { inject } from "vitest"

export const projectRoot = new URL("../..", import.meta.url).pathname

export interface RunningProcess {
  readonly child: ChildProcess
  readonly output: () => string
  /** Resolves once the output matches, fails when the process exits first or the deadline passes. */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Effect.Effect<string, Error>
  /** Resolves with the exit code (or the signal's name) once the process has ended. */
  readonly exited: Effect.Effect<number | string>
}

export const start = (args: ReadonlyArray<string>, env: Record<string, string>): RunningProcess => {
  const child = spawn(process.execPath, args, {
    cwd: projectRoot,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    output += chunk.toString("utf8")
    for (const listener of listeners) listener()
  }
  child.stdout?.on("data", onData)
  child.stderr?.on("data", onData)
  const exit = new Promise<number | string>((resolve) =>
    child.on("exit", (code, signal) => {
      for (const listener of listeners) listener()
      resolve(code ?? signal ?? "unknown")
    })
  )
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) =>
    Effect.callback<string, Error>((resume) => {
      // Settling stops the timer too: a pending timer would keep the test process alive until it fires.
      const settle = (effect: Effect.Effect<string, Error>) => {
        clearTimeout(timer)
        listeners.delete(check)
        resume(effect)
      }
      const check = () => {
        const match = pattern.exec(output)
        if (match) settle(Effect.succeed(match[0]))
        else if (child.exitCode !== null || child.signalCode !== null) {
          settle(Effect.fail(new Error(`process exited before printing ${pattern}:\n${output}`)))
        }
      }
      const timer = setTimeout(
        () => settle(Effect.fail(new Error(`no ${pattern} within ${timeoutMs} ms:\n${output}`))),
        timeoutMs
      )
      listeners.add(check)
      check()
      return Effect.sync(() => {
        clearTimeout(timer)
        listeners.delete(check)
      })
    })
  return { child, output: () => output, waitFor, exited: Effect.promise(() => exit) }
}

/** Starts a process for the scope's lifetime; killed (SIGKILL) if still running when the scope closes. */
export const startScoped = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => start(args, env)),
    (running) =>
      Effect.sync(() => {
        if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill("SIGKILL")
      })
  )

export const secretsPrefix = "orch-secrets-"

/**
 * The test runner's pid: secrets directories carry it, so the runner removes them when it ends (vitest workers
 * may be stopped before their exit hooks run) and a later run removes those of runners that are gone.
 */
const runnerPid = (): string => {
  try {
    return inject("templateDatabase").split("_")[2] ?? String(process.pid)
  } catch {
    return String(process.pid)
  }
}

/**
 * A secrets directory holding the given files, as the service expects them in ORCH_SECRETS_DIR (each with the
 * trailing newline an editor leaves). Removed when the test process exits.
 */
export const secretsDirectory = (files: Record<string, string>): string => {
  const dir = mkdtempSync(join(tmpdir(), `${secretsPrefix}${runnerPid()}-`))
  process.once("exit", () => rmSync(dir, { recursive: true, force: true }))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), `${content}\n`, { mode: 0o600 })
  return dir
}

export const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
