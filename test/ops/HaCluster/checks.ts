/**
 * Asking the cluster's parts how they are: Patroni's REST API over HTTP, HAProxy's stats socket, and polling
 * until an answer is the one wanted.
 */
import * as net from "node:net"
import { Duration, Effect, Option, Schedule } from "effect"

/** One HTTP request: 1 s to answer, 30 s for a POST (a switchover answers once it is done). */
export const request = (url: string, init: RequestInit = {}) =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(url, {
        ...init,
        signal: AbortSignal.timeout(init.method === "POST" ? 30_000 : 1_000)
      })
      return { status: response.status, body: await response.text() }
    },
    catch: (error) => new Error(`${init.method ?? "GET"} ${url}: ${String(error)}`)
  })

/** Polls `check` every 100 ms until it yields a value; fails with `what` and `details()` after the deadline. */
export const poll = <A>(
  what: string,
  check: Effect.Effect<A | undefined, unknown>,
  timeout: Duration.Input,
  details: () => string
) =>
  check.pipe(
    Effect.catch(() => Effect.succeed(undefined)),
    Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (value) => value !== undefined }),
    Effect.timeoutOption(timeout),
    Effect.flatMap((value) =>
      Option.isSome(value) && value.value !== undefined
        ? Effect.succeed(value.value)
        : Effect.fail(new Error(`${what} within ${Duration.format(Duration.fromInputUnsafe(timeout))}\n${details()}`))
    )
  )

/** The status HAProxy gives each server (`UP`, `DOWN`, `UP 1/2` …), from `show stat` on its stats socket. */
export const haproxyServers = (socket: string) =>
  Effect.callback<ReadonlyMap<string, string>, Error>((resume) => {
    let text = ""
    const connection = net.createConnection(socket, () => connection.write("show stat\n"))
    connection.setTimeout(1_000, () => connection.destroy(new Error("no answer")))
    connection.on("data", (chunk) => {
      text += chunk.toString("utf8")
    })
    connection.on("error", (error) => resume(Effect.fail(new Error(`HAProxy stats socket: ${error.message}`))))
    connection.on("end", () => {
      const [header = "", ...rows] = text.split("\n").filter((line) => line.trim() !== "")
      const columns = header.replace(/^# /, "").split(",")
      const name = columns.indexOf("svname")
      const status = columns.indexOf("status")
      const servers = new Map<string, string>()
      for (const row of rows.map((line) => line.split(","))) servers.set(row[name] ?? "", row[status] ?? "")
      resume(Effect.succeed(servers))
    })
    return Effect.sync(() => connection.destroy())
  })
