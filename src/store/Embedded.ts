/**
 * Embedded mode's database: PGlite (PostgreSQL compiled to WebAssembly) served over the PostgreSQL wire protocol on
 * a loopback port, so the service runs the very same client, migrations and SQL as in production. PGlite has one
 * backend: the pools on it must hold a single connection, and its data lives in memory only.
 */
import { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { Effect, Option, Redacted } from "effect"
import type { DatabaseConfig } from "../Config.ts"

/** Starts the embedded database for the lifetime of the scope; returns how to reach it. */
export const start = Effect.gen(function* () {
  const db = yield* Effect.acquireRelease(
    Effect.promise(() => PGlite.create()),
    (db) => Effect.promise(() => db.close())
  )
  yield* Effect.promise(() => db.exec("CREATE SCHEMA IF NOT EXISTS orchestrator"))
  const server = yield* Effect.acquireRelease(
    Effect.promise(async () => {
      const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 2 })
      await server.start()
      return server
    }),
    // Stopping waits for every client socket to end; one still queued for a connection (the server takes two at
    // a time) never does when the service stops mid-startup. The process is ending: a second is enough.
    (server) => Effect.promise(() => server.stop()).pipe(Effect.timeout("1 second"), Effect.ignore)
  )
  const port = Number(server.getServerConn().split(":").at(-1))
  const password = Redacted.make("embedded")
  return {
    host: "127.0.0.1",
    port,
    database: "postgres",
    user: "postgres",
    password,
    ssl: "disable",
    migration: Option.some({ user: "postgres", password })
  } satisfies DatabaseConfig
})
