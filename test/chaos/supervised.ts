/**
 * A process the chaos run keeps running: started at once again after the run killed it, and after a short pause when
 * it ended on its own — typically a start that failed because PostgreSQL or RabbitMQ was down at that moment, which
 * is expected and logged, unlike a process that ends after it was up. Every start, readiness and exit is logged with
 * its time; the output of every generation is appended to the slot's log file when it ends.
 */
import { appendFileSync } from "node:fs"
import { Clock, Duration, Effect, Fiber, Option, Result, Schedule, Schema, type Scope } from "effect"
import { type RunningProcess, start } from "../utils/processes.ts"

export type Log = (line: string) => Effect.Effect<void>

export interface SlotOptions {
  readonly name: string
  readonly args: ReadonlyArray<string>
  readonly env: Record<string, string>
  /** The line that says the process is up. */
  readonly ready: RegExp
  readonly logFile: string
  readonly log: Log
  /** A start that is not up by then is killed and counted as failed. Default 60 s. */
  readonly readyTimeout?: Duration.Input | undefined
  /** Before starting again after the process ended on its own. Default 1 s. */
  readonly restartDelay?: Duration.Input | undefined
}

export interface SlotStats {
  readonly starts: number
  /** Ended before it was up: a server was down, say. */
  readonly failedStarts: number
  /** Ended on its own after it was up: a process that does not ride through an outage. */
  readonly crashes: number
  readonly kills: number
  /** Errors the process logged while it was up, by message, with how often. */
  readonly errors: ReadonlyMap<string, number>
}

export interface Slot {
  readonly name: string
  readonly stats: () => SlotStats
  readonly isUp: () => boolean
  /** SIGKILLs the running process (it is started again at once); says what it killed, or undefined for nothing. */
  readonly kill: Effect.Effect<string | undefined>
  /** Waits until the process is up, failing after `timeout`. */
  readonly awaitUp: (timeout: Duration.Input) => Effect.Effect<void, Error>
  /** Stops supervising, ends the process with SIGTERM (SIGKILL after 10 s) and returns that generation's output. */
  readonly stop: Effect.Effect<string>
}

/** A JSON log line of the service: its level and message. */
const jsonEntry = Schema.decodeUnknownOption(
  Schema.fromJsonString(Schema.Struct({ level: Schema.String, message: Schema.String }))
)

/** The messages of the lines logged at ERROR level, JSON or Effect's default format. */
export const errorLines = (output: string): ReadonlyArray<string> =>
  output.split("\n").flatMap((line) => {
    const entry = line.startsWith("{") ? jsonEntry(line) : Option.none()
    if (Option.isSome(entry)) return entry.value.level === "ERROR" ? [entry.value.message] : []
    const plain = /^\[[^\]]*\] ERROR \(#\d+\): (.*)$/.exec(line)
    return plain === null ? [] : [plain[1] ?? ""]
  })

/** Why a process ended, from its output: the first error logged and the innermost cause printed with it. */
const reasonOf = (output: string) => {
  const lines = output.split("\n")
  const error = errorLines(output)[0]
  const cause = lines
    .filter((line) => /^\s*\[cause\]: /.test(line))
    .at(-1)
    ?.replace(/^\s*\[cause\]: /, "")
  const last = lines.filter((line) => line.trim() !== "").at(-1)
  const reason = error === undefined ? (last ?? "(no output)") : cause === undefined ? error : `${error} (${cause})`
  return reason.slice(0, 300)
}

const exitOf = (running: RunningProcess) => running.child.exitCode ?? running.child.signalCode ?? undefined

/** Ends the process with `signal`, then SIGKILL if it is still there after `grace`; waits for it to be gone. */
const terminate = (running: RunningProcess, signal: NodeJS.Signals, grace: Duration.Input) =>
  Effect.gen(function* () {
    if (exitOf(running) !== undefined) return
    running.child.kill(signal)
    yield* running.exited.pipe(
      Effect.timeoutOrElse({
        duration: grace,
        orElse: () => Effect.sync(() => running.child.kill("SIGKILL")).pipe(Effect.andThen(running.exited))
      })
    )
  })

export const supervise = Effect.fnUntraced(function* (
  options: SlotOptions
): Effect.fn.Return<Slot, never, Scope.Scope> {
  const { name, log } = options
  const readyTimeout = Duration.fromInputUnsafe(options.readyTimeout ?? "60 seconds")
  const restartDelay = options.restartDelay ?? "1 second"
  const stats = { starts: 0, failedStarts: 0, crashes: 0, kills: 0 }
  const errors = new Map<string, number>()
  const collectErrors = (output: string) => {
    for (const message of errorLines(output)) errors.set(message, (errors.get(message) ?? 0) + 1)
  }
  let current: RunningProcess | undefined
  let upSince: number | undefined
  let killed = false

  const generation = Effect.gen(function* () {
    stats.starts += 1
    killed = false
    upSince = undefined
    const running = start(options.args, options.env)
    current = running
    const pid = running.child.pid ?? 0
    const startedAt = yield* Clock.currentTimeMillis
    const ready = yield* running.waitFor(options.ready, Duration.toMillis(readyTimeout)).pipe(Effect.result)
    if (Result.isSuccess(ready)) {
      upSince = yield* Clock.currentTimeMillis
      yield* log(`${name} up (pid ${pid}, start #${stats.starts}, ${((upSince - startedAt) / 1000).toFixed(1)} s)`)
    } else if (exitOf(running) === undefined) {
      yield* log(`${name} not up within ${Duration.format(readyTimeout)}: killing it (pid ${pid})`)
      running.child.kill("SIGKILL")
    }
    const code = yield* running.exited
    const wasUp = upSince !== undefined
    current = undefined
    upSince = undefined
    appendFileSync(
      options.logFile,
      `----- ${name} pid ${pid} start #${stats.starts}: exit ${code}${killed ? " (killed by the chaos run)" : ""}\n` +
        `${running.output()}\n`
    )
    if (wasUp) collectErrors(running.output())
    if (killed) return
    if (wasUp) {
      stats.crashes += 1
      yield* log(`${name} EXITED ON ITS OWN after it was up (pid ${pid}, ${code}): ${reasonOf(running.output())}`)
    } else {
      stats.failedStarts += 1
      yield* log(`${name} failed to start (pid ${pid}, ${code}): ${reasonOf(running.output())}; starting it again`)
    }
    yield* Effect.sleep(restartDelay)
  })

  const fiber = yield* Effect.forkScoped(Effect.forever(generation))

  // Whatever happens to the run, no process outlives it.
  yield* Effect.addFinalizer(() =>
    Fiber.interrupt(fiber).pipe(
      Effect.andThen(
        Effect.suspend(() => (current === undefined ? Effect.void : terminate(current, "SIGKILL", "5 seconds")))
      )
    )
  )

  return {
    name,
    stats: () => ({ ...stats, errors: new Map(errors) }),
    isUp: () => upSince !== undefined,
    kill: Effect.gen(function* () {
      const running = current
      if (running === undefined || exitOf(running) !== undefined) return undefined
      const now = yield* Clock.currentTimeMillis
      const what = upSince === undefined ? "while starting" : `up for ${((now - upSince) / 1000).toFixed(1)} s`
      killed = true
      stats.kills += 1
      running.child.kill("SIGKILL")
      return `${name} (pid ${running.child.pid ?? 0}, ${what})`
    }),
    awaitUp: (timeout) =>
      Effect.sync(() => upSince !== undefined).pipe(
        Effect.repeat({ until: (up) => up, schedule: Schedule.spaced("100 millis") }),
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () =>
            Effect.fail(new Error(`${name} is not up after ${Duration.format(Duration.fromInputUnsafe(timeout))}`))
        }),
        Effect.asVoid
      ),
    stop: Effect.gen(function* () {
      yield* Fiber.interrupt(fiber)
      const running = current
      if (running === undefined) return ""
      yield* terminate(running, "SIGTERM", "10 seconds")
      if (upSince !== undefined) collectErrors(running.output())
      appendFileSync(options.logFile, `----- ${name} pid ${running.child.pid ?? 0}: stopped\n${running.output()}\n`)
      return running.output()
    })
  }
})
