/**
 * The store under real concurrency on PostgreSQL. The contract suite runs concurrent fibers on one pool; here the
 * row lock and the versioned write must hold across OS processes and connection pools, as they must when several
 * orchestrator instances share one database.
 */

import { fileURLToPath } from "node:url"
import { NodeServices } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Option, Schedule, Schema, Stream } from "effect"
import { FileSystem } from "effect/FileSystem"
import { Path } from "effect/Path"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import type { DatabaseConfig } from "../../src/Config.ts"
import type { SagaId, SagaInstance } from "../../src/domain/Saga.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"
import { passwords } from "../utils/postgres.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"

const workerScript = fileURLToPath(new URL("./incrementer.ts", import.meta.url))
const workers = 2
const fibersPerWorker = 8
const incrementsPerWorker = 500
const total = workers * incrementsPerWorker
/** Each worker gives up by itself after this long, well inside the test's own 60 s. */
const workerDeadlineSeconds = 40

const WorkerLine = Schema.Union([
  Schema.Struct({ type: Schema.Literal("ready"), pid: Schema.Int }),
  Schema.Struct({
    type: Schema.Literal("summary"),
    pid: Schema.Int,
    done: Schema.Int,
    failures: Schema.Int,
    errors: Schema.Array(Schema.String),
    millis: Schema.Number
  })
])
const decodeLine = Schema.decodeUnknownOption(Schema.fromJsonString(WorkerLine))
const decodeDetail = Schema.decodeUnknownOption(Schema.Struct({ by: Schema.Int }))

/**
 * The secrets directory a worker reads its password from, as the service does: the password never goes through
 * the environment or the command line.
 */
const secretsDirectory = Effect.gen(function* () {
  const fs = yield* FileSystem
  const path = yield* Path
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "orch-concurrency-secrets-" })
  yield* fs.writeFileString(path.join(directory, "db_password"), passwords.app, { mode: 0o600 })
  return directory
})

const output = (result: { readonly pid: number; readonly stdout: ReadonlyArray<string>; readonly stderr: string }) =>
  `\n--- worker ${result.pid} stdout:\n${result.stdout.join("\n")}\n--- stderr:\n${result.stderr}`

/**
 * Starts a worker that increments the saga once `go` completes. Its stdin stays open until then; the worker is
 * killed (SIGTERM, then SIGKILL after 2 s) if the test's scope closes while it still runs.
 */
const startWorker = Effect.fnUntraced(function* (
  db: DatabaseConfig,
  secretsDir: string,
  sagaId: SagaId,
  go: Deferred.Deferred<void>
) {
  const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
  const args = [
    workerScript,
    sagaId,
    String(incrementsPerWorker),
    String(fibersPerWorker),
    String(workerDeadlineSeconds)
  ]
  const handle = yield* spawner.spawn(
    ChildProcess.make(process.execPath, args, {
      env: {
        ORCH_DB_HOST: db.host,
        ORCH_DB_PORT: String(db.port),
        ORCH_DB_NAME: db.database,
        ORCH_DB_USER: db.user,
        ORCH_SECRETS_DIR: secretsDir
      },
      stdin: Stream.fromEffect(Deferred.await(go)).pipe(
        Stream.map(() => "go\n"),
        Stream.encodeText
      ),
      forceKillAfter: "2 seconds"
    })
  )
  const ready = yield* Deferred.make<void>()
  const stdout = yield* handle.stdout.pipe(
    Stream.decodeText(),
    Stream.splitLines,
    Stream.tap((line) =>
      Option.exists(decodeLine(line), (parsed) => parsed.type === "ready")
        ? Deferred.succeed(ready, undefined)
        : Effect.void
    ),
    Stream.runCollect,
    Effect.forkScoped
  )
  const stderr = yield* Effect.forkScoped(Stream.mkString(Stream.decodeText(handle.stderr)))
  const pid = Number(handle.pid)
  const finished = Effect.all({
    pid: Effect.succeed(pid),
    code: handle.exitCode,
    stdout: Fiber.join(stdout),
    stderr: Fiber.join(stderr)
  })
  /** Ready (connected, saga found, waiting for `go`), or a defect with the worker's output if it exited first. */
  const awaitReady = Effect.raceFirst(
    Deferred.await(ready),
    Effect.flatMap(finished, (result) =>
      Effect.die(`worker exited with ${result.code} before it was ready${output(result)}`)
    )
  )
  return { pid, awaitReady, finished }
})

/** A runtime pool of its own and a store on it, closed with the test's scope. */
const separateStore = (db: DatabaseConfig) =>
  Layer.build(PgSagaStore.layerDatabase(db, { maxConnections: 1 })).pipe(
    Effect.map((context) => ({ store: Context.get(context, SagaStore), sql: Context.get(context, PgClient.PgClient) }))
  )

const backendPid = (sql: PgClient.PgClient) =>
  Effect.map(sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`, (rows) => rows[0]?.pid)

const moveTo = (state: string, by: string) => (saga: SagaInstance) =>
  Effect.succeed(
    StepOutcome.Advance({
      state,
      status: "RUNNING",
      context: { ...saga.context, by },
      event: `To${state}`,
      detail: { by }
    })
  )

layer(Layer.mergeAll(TestDatabase.layerStore(), NodeServices.layer), {
  excludeTestServices: true,
  timeout: "60 seconds"
})("SagaStore concurrency on PostgreSQL", (it) => {
  it.effect(
    "serialises 1,000 increments from 2 processes × 8 fibers: version 1000, consecutive history, no lost update",
    () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const db = yield* TestDatabase.TestDatabase
        const { saga } = yield* store.create({ sagaType: "CONCURRENCY_TEST", state: "COUNTING", context: { n: 0 } })
        const secretsDir = yield* secretsDirectory
        const go = yield* Deferred.make<void>()
        const started = yield* Effect.forEach(Array.from({ length: workers }), () =>
          startWorker(db.config, secretsDir, saga.id, go)
        )
        const results = yield* Effect.gen(function* () {
          // Both connected and waiting: releasing them together makes their transactions really overlap.
          yield* Effect.forEach(started, (worker) => worker.awaitReady, { concurrency: "unbounded" })
          yield* Deferred.succeed(go, undefined)
          return yield* Effect.forEach(started, (worker) => worker.finished, { concurrency: "unbounded" })
        }).pipe(Effect.timeout(`${workerDeadlineSeconds + 10} seconds`))

        const pids = started.map((worker) => worker.pid)
        for (const result of results) {
          assert.strictEqual(result.code, 0, `worker failed${output(result)}`)
          const summary = result.stdout
            .flatMap((line) => Option.toArray(decodeLine(line)))
            .find((line) => line.type === "summary")
          assert.deepInclude(summary, { type: "summary", pid: result.pid, done: incrementsPerWorker, failures: 0 })
        }

        const final = yield* store.get(saga.id)
        assert.strictEqual(final.lockVersion, total)
        assert.strictEqual(final.context.n, total)
        assert.include(pids, final.context.lastBy)

        const history = yield* store.history(saga.id)
        assert.deepStrictEqual(
          history.map((t) => [t.lockVersion, t.event]),
          [[0, "SagaStarted"], ...Array.from({ length: total }, (_, i) => [i + 1, "Incremented"])]
        )
        const writers = history.slice(1).map((t) => Option.getOrUndefined(decodeDetail(t.detail))?.by)
        assert.deepStrictEqual(
          Object.fromEntries(pids.map((pid) => [pid, writers.filter((by) => by === pid).length])),
          Object.fromEntries(pids.map((pid) => [pid, incrementsPerWorker]))
        )
        // The writers alternate along the history: the two processes ran at the same time, not one after the other.
        const handOvers = writers.filter((by, i) => i > 0 && by !== writers[i - 1]).length
        assert.isAtLeast(handOvers, 2, `the workers did not overlap: ${handOvers} hand-overs`)
      }),
    60_000
  )

  it.effect(
    "refuses a write at a version another pool has moved past, and changes nothing",
    () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        const a = yield* separateStore(db.config)
        const b = yield* separateStore(db.config)
        assert.notStrictEqual(yield* backendPid(a.sql), yield* backendPid(b.sql))
        const { saga } = yield* a.store.create({ sagaType: "CONCURRENCY_STALE", state: "PREPARING", context: {} })
        yield* a.store.transact(saga.id, moveTo("MESHING", "a"))
        const seen = yield* a.store.get(saga.id)
        const moved = yield* b.store.transact(saga.id, moveTo("SOLVING", "b"))
        let stepRan = false
        const error = yield* Effect.flip(
          a.store.transact(
            saga.id,
            (s) => Effect.sync(() => (stepRan = true)).pipe(Effect.andThen(moveTo("LOST", "a")(s))),
            { expectedVersion: seen.lockVersion }
          )
        )
        assert.deepInclude(error, { _tag: "VersionConflict", sagaId: saga.id, expected: 1, actual: 2 })
        assert.isFalse(stepRan)
        for (const { store } of [a, b]) {
          assert.deepStrictEqual(yield* store.get(saga.id), moved)
          assert.deepStrictEqual(
            (yield* store.history(saga.id)).map((t) => [t.lockVersion, t.toState]),
            [
              [0, "PREPARING"],
              [1, "MESHING"],
              [2, "SOLVING"]
            ]
          )
        }
      }),
    60_000
  )

  it.effect(
    "checks the expected version after waiting for the lock another pool holds",
    () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase.TestDatabase
        const a = yield* separateStore(db.config)
        const b = yield* separateStore(db.config)
        const { saga } = yield* a.store.create({ sagaType: "CONCURRENCY_LOCKED", state: "PREPARING", context: {} })
        const aLocked = yield* Deferred.make<void>()
        const releaseA = yield* Deferred.make<void>()
        const first = yield* Effect.forkScoped(
          a.store.transact(saga.id, (s) =>
            Deferred.succeed(aLocked, undefined).pipe(
              Effect.andThen(Deferred.await(releaseA)),
              Effect.andThen(moveTo("MESHING", "a")(s))
            )
          )
        )
        yield* Deferred.await(aLocked)
        let bStepRan = false
        const second = yield* Effect.forkScoped(
          b.store.transact(
            saga.id,
            (s) => Effect.sync(() => (bStepRan = true)).pipe(Effect.andThen(moveTo("LOST", "b")(s))),
            { expectedVersion: 0 }
          )
        )
        // B must really be queued on A's row lock before A commits, or this would only repeat the test above.
        yield* db
          .superuser(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
          )
          .pipe(
            Effect.repeat({ until: (waiting) => Number(waiting) >= 1, schedule: Schedule.spaced("20 millis") }),
            Effect.timeoutOrElse({
              duration: "10 seconds",
              orElse: () => Effect.die("the second transaction never waited for the row lock the first one holds")
            })
          )
        yield* Deferred.succeed(releaseA, undefined)
        const committed = yield* Fiber.join(first)
        assert.strictEqual(committed.lockVersion, 1)
        const error = yield* Effect.flip(Fiber.join(second))
        assert.deepInclude(error, { _tag: "VersionConflict", sagaId: saga.id, expected: 0, actual: 1 })
        assert.isFalse(bStepRan)
        assert.deepStrictEqual(yield* b.store.get(saga.id), committed)
        assert.strictEqual((yield* b.store.history(saga.id)).length, 2)
      }),
    60_000
  )
})
