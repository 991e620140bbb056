/**
 * A stop at any moment of startup is a clean stop: SIGTERMs at moments drawn over the first 5 seconds of the service's
 * life — loading, starting the embedded database, migrating, connecting, serving — and every process exits 0 within
 * 10 s of its signal, in embedded mode and against PostgreSQL and RabbitMQ.
 */
import { assert, layer } from "@effect/vitest"
import { Clock, Duration, Effect, Layer, Random } from "effect"
import { freePort } from "../utils/freePort.ts"
import { passwords } from "../utils/postgres.ts"
import { type RunningProcess, secretsDirectory, start } from "../utils/processes.ts"
import { amqpUrl, guest, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { TestDatabase, layer as testDatabase } from "../utils/TestDatabase.ts"

const secrets = secretsDirectory({
  db_password: passwords.app,
  db_migration_password: passwords.owner,
  amqp_password: guest.password,
  api_tokens: "shutdown-test-token"
})

/** Moments (ms) spread over the first 5 s, the same every run. */
const moments = (count: number, seed: string) =>
  Effect.forEach(Array.from({ length: count }), () => Random.nextBetween(200, 5_000)).pipe(Random.withSeed(seed))

/** Starts one service per moment, signals each at its moment, and returns how each ended and how long it took. */
const stopAt = (delays: ReadonlyArray<number>, env: (port: number) => Record<string, string>) =>
  Effect.forEach(
    delays,
    (delay) =>
      Effect.gen(function* () {
        const service: RunningProcess = start(["src/main.ts"], env(yield* freePort))
        yield* Effect.sleep(Duration.millis(delay))
        service.child.kill("SIGTERM")
        const signalled = yield* Clock.currentTimeMillis
        const code = yield* service.exited.pipe(
          Effect.timeoutOrElse({
            duration: "10 seconds",
            orElse: () =>
              Effect.sync(() => {
                service.child.kill("SIGKILL")
                return "still running after 10 s"
              })
          })
        )
        const took = (yield* Clock.currentTimeMillis) - signalled
        return { delay: Math.round(delay), code, took, tail: service.output().split("\n").slice(-3).join("\n") }
      }),
    { concurrency: "unbounded" }
  )

const assertAllStoppedCleanly = (ended: ReadonlyArray<{ readonly code: number | string; readonly delay: number }>) =>
  assert.deepStrictEqual(
    ended.filter((run) => run.code !== 0),
    [],
    `every stop exits 0: ${JSON.stringify(ended.map(({ delay, code }) => [delay, code]))}`
  )

layer(Layer.mergeAll(testDatabase({ migrated: false }), testVhost()), {
  excludeTestServices: true,
  timeout: "120 seconds"
})("stopping during startup", (it) => {
  it.effect("exits 0 within 10 s after a SIGTERM at any moment of an embedded service's first 5 s", () =>
    Effect.gen(function* () {
      const delays = yield* moments(10, "embedded")
      const ended = yield* stopAt(delays, (port) => ({ ORCH_HTTP_PORT: String(port) }))
      assertAllStoppedCleanly(ended)
    })
  )

  it.effect(
    "exits 0 within 10 s after a SIGTERM at any moment of a service's first 5 s on PostgreSQL and RabbitMQ",
    () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase
        const vhost = yield* TestVhost
        const delays = yield* moments(10, "external")
        const ended = yield* stopAt(delays, (port) => ({
          ORCH_HTTP_PORT: String(port),
          ORCH_DB_HOST: db.config.host,
          ORCH_DB_PORT: String(db.config.port),
          ORCH_DB_NAME: db.name,
          ORCH_DB_MIGRATION_USER: "orchestrator_owner",
          ORCH_AMQP_URL: amqpUrl(vhost.name),
          ORCH_SECRETS_DIR: secrets
        }))
        assertAllStoppedCleanly(ended)
      })
  )
})
