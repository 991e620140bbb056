/**
 * Backups and restores (TR-DB-2) as an operator runs them, with the scripts of docker/backup on a private
 * PostgreSQL 15 cluster that archives its WAL through pgBackRest (the repository, its config and every copy live in
 * a temp workspace). Sagas move through the real PgSagaStore and Engine between the steps, so what a restore must
 * bring back — and must not — is known row by row:
 * - point in time: a full and an incremental backup, a target instant between two known transitions, more
 *   transitions after it; restore.sh into a new data directory, started on another port, holds exactly the history
 *   rows committed before the target;
 * - logical: dump.sh of the orchestrator schema, dump-restore.sh into a fresh cluster (roles created by
 *   bootstrap.sql); the copy equals the original table by table, with the same schema, ownership and grants, and the
 *   service runs on it: the schema check and the least-privilege check pass, a saga runs to COMPLETED, the outbox
 *   trigger notifies, and the service process picks up a saga the dump caught mid-flight.
 */

import * as fs from "node:fs"
import * as path from "node:path"
import { NodeServices } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Option, Queue, Redacted, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql/SqlError"
import type { DatabaseConfig } from "../../src/Config.ts"
import { decodeTask } from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import * as EngineLayer from "../../src/saga/Engine.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import { checkLeastPrivilege, checkSchemaCurrent, migrate } from "../../src/store/Database.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { input, reply, results, succeeded, takeTasks } from "../saga/harness.ts"
import { freePort } from "../utils/freePort.ts"
import * as PrivateCluster from "../utils/PrivateCluster.ts"
import { type PgServer, passwords, psql } from "../utils/postgres.ts"
import { startScoped } from "../utils/processes.ts"
import { shippedMigrations } from "../utils/TestDatabase.ts"
import {
  backupScripts,
  initdb,
  layerWorkspace,
  postgresqlSettings,
  renderConfig,
  type ScriptResult,
  schemaDump,
  startServer,
  Workspace
} from "./backups.ts"

const archiving = postgresqlSettings(path.join(backupScripts, "postgresql-archiving.conf"))
const templateConfigPath = "/etc/pgbackrest/pgbackrest.conf"

/**
 * The source cluster archives with the template's settings, but its archive_command stays empty (WAL is kept, not
 * archived) until pgbackrest.conf exists, which needs the cluster's data directory and port.
 */
const sourceCluster = PrivateCluster.layerStore({ postgresql: { ...archiving, archive_command: "''" } })

/** pgbackrest.conf from the template, pointed at the workspace and the source cluster; archiving switched on. */
const archivingOn = Layer.effectDiscard(
  Effect.gen(function* () {
    const workspace = yield* Workspace
    const cluster = yield* PrivateCluster.PrivateCluster
    const config = renderConfig(path.join(backupScripts, "pgbackrest.conf"), {
      "repo1-path": path.join(workspace.root, "repo"),
      "log-path": path.join(workspace.root, "log"),
      "lock-path": path.join(workspace.root, "lock"),
      "pg1-path": path.join(cluster.directory, "data"),
      "pg1-port": String(cluster.server.port),
      "pg1-socket-path": cluster.directory
    })
    fs.writeFileSync(workspace.pgbackrestConf, config, { mode: 0o644 })
    const command = archiving.archive_command ?? ""
    assert.include(command, `--config=${templateConfigPath}`, "the template's archive_command names the config")
    yield* cluster.superuser(
      `ALTER SYSTEM SET archive_command = ${command.replace(templateConfigPath, workspace.pgbackrestConf)}`
    )
    yield* cluster.superuser("SELECT pg_reload_conf()")
  })
)

const testLayer = EngineLayer.layer.pipe(
  Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
  Layer.provideMerge(archivingOn),
  Layer.provideMerge(sourceCluster),
  Layer.provideMerge(layerWorkspace)
)

// --- driving sagas ------------------------------------------------------------------------------------------------

const startSagas = (count: number, label: string) =>
  Effect.flatMap(Engine, (engine) =>
    Effect.forEach(Array.from({ length: count }), (_, i) =>
      engine
        .start("BALANCE_CALCULATION", { ...input, inputRef: `inputs/${label}-${i}.yaml` })
        .pipe(Effect.map(({ saga }) => saga.id))
    )
  )

/** Answers every task waiting in the outbox successfully: each saga waiting for a reply moves one step. */
const answerAll = Effect.gen(function* () {
  const tasks = yield* takeTasks
  yield* Effect.forEach(tasks, (task) => reply(succeeded(task, results[task.taskType])))
  return tasks.length
})

const supplyCondenserInput = (ids: ReadonlyArray<SagaId>) =>
  Effect.flatMap(Engine, (engine) =>
    Effect.forEach(ids, (id) => engine.signal(id, "condenser_input", { condenserDataRef: `condenser/${id}.json` }))
  )

/** The saga's newest task, read from the outbox and left there (as the relay would find it). */
const newestTask = (id: SagaId) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ readonly payload: unknown }>`
      SELECT payload FROM orchestrator.saga_outbox WHERE saga_id = ${id} ORDER BY id DESC LIMIT 1`
    return yield* decodeTask(JSON.stringify(rows[0]?.payload ?? null))
  }).pipe(Effect.orDie)

const answerNewest = (id: SagaId) =>
  Effect.flatMap(newestTask(id), (task) => reply(succeeded(task, results[task.taskType])))

/** Runs one saga from its start to COMPLETED, answering only its own tasks. */
const runToCompletion = Effect.gen(function* () {
  const [id] = yield* startSagas(1, "complete")
  if (id === undefined) return yield* Effect.die("no saga started")
  yield* answerNewest(id) // prepare_branch
  yield* answerNewest(id) // mesh
  yield* supplyCondenserInput([id])
  yield* answerNewest(id) // solver
  return yield* answerNewest(id) // publish
})

// --- reading the databases ----------------------------------------------------------------------------------------

const query = (server: PgServer, sql: string) => Effect.promise(() => psql("orchestrator", ["-At", "-c", sql], server))

const lines = (output: string) => output.split("\n").filter((line) => line !== "")

/** Every history row as `saga_id:lock_version`, sorted. */
const transitions = (server: PgServer) =>
  query(server, "SELECT saga_id || ':' || lock_version FROM orchestrator.saga_transitions ORDER BY 1").pipe(
    Effect.map(lines)
  )

const tables = [
  "effect_sql_migrations",
  "saga_instances",
  "saga_transitions",
  "saga_outbox",
  "saga_timers",
  "saga_idempotency_keys",
  "saga_ignored_events"
]

/** Each table's row count and a digest of all its rows, one line per table. */
const contents = (server: PgServer) =>
  Effect.forEach(tables, (table) =>
    query(
      server,
      `SELECT '${table} ' || count(*) || ' ' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '-')
       FROM orchestrator.${table} t`
    ).pipe(Effect.map((output) => output.trim()))
  )

/**
 * `pg_dump -s` of the schema, owners and grants included, minus what differs between any two dumps: the
 * \restrict key, and how PostgreSQL prints `IN (…)` over varchar again after a round trip (the casts move into
 * the array, with parentheses; the expression is the same).
 */
const normalizedSchema = (server: PgServer) =>
  schemaDump(server).pipe(
    Effect.map((dump) =>
      lines(dump)
        .filter((line) => !/^\\(un)?restrict /.test(line))
        .map((line) => line.replaceAll(/::(character varying|text)(\[\])?|[()]/g, ""))
        .join("\n")
    )
  )

const ok = (result: ScriptResult, what: string) =>
  assert.strictEqual(result.code, 0, `${what} failed:\n${result.stdout}\n${result.stderr}`)

// --- the store and engine on another database ---------------------------------------------------------------------

/** The engine on `config`'s database. Fresh: the memoized engine of the test layer is bound to the source store. */
const onDatabase = (config: DatabaseConfig) =>
  Layer.fresh(EngineLayer.layer).pipe(
    Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
    Layer.provideMerge(PgSagaStore.layerDatabase(config, { maxConnections: 4 })),
    Layer.provideMerge(NodeServices.layer)
  )

/** The SQLSTATE of a failed statement (42501: insufficient_privilege). */
const sqlState = (error: SqlError) => {
  const cause = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
}

layer(testLayer, { excludeTestServices: true, timeout: "120 seconds" })("Backups (docker/backup)", (it) => {
  it.effect(
    "restores to a point in time into a new data directory, with exactly the transitions committed before it",
    () =>
      Effect.gen(function* () {
        const workspace = yield* Workspace
        const cluster = yield* PrivateCluster.PrivateCluster
        const pgbackrest = { PGBACKREST_CONFIG: workspace.pgbackrestConf }
        const asPostgres = { asPostgres: true, env: pgbackrest }

        // Run as root, the repository would get files archive_command (the postgres user) cannot write.
        assert.strictEqual((yield* workspace.script("backup.sh", [], { asPostgres: false, env: pgbackrest })).code, 3)

        const first = yield* startSagas(3, "first")
        yield* answerAll
        ok(yield* workspace.script("backup.sh", ["--init", "--type", "full"], asPostgres), "full backup")

        const second = yield* startSagas(2, "second")
        yield* answerAll // first: AWAITING_CONDENSER_INPUT, second: MESHING_GEOMETRY
        ok(yield* workspace.script("backup.sh", ["--type", "incr"], asPostgres), "incremental backup")
        yield* supplyCondenserInput(first) // first: RUNNING_SOLVER

        // The target: after every commit so far, before every later one (same clock, a few ms either side).
        const beforeTarget = yield* transitions(cluster.server)
        yield* Effect.sleep("50 millis")
        const target = (yield* query(cluster.server, "SELECT clock_timestamp()")).trim()
        yield* Effect.sleep("50 millis")

        yield* answerAll // first: PUBLISHING_RESULTS, second: AWAITING_CONDENSER_INPUT
        yield* startSagas(1, "third")
        yield* answerAll // first: COMPLETED, third: MESHING_GEOMETRY
        yield* supplyCondenserInput(second)
        const all = yield* transitions(cluster.server)
        const after = all.filter((row) => !beforeTarget.includes(row))
        assert.isAbove(beforeTarget.length, 10)
        assert.isAtLeast(after.length, 8)

        // Archive the WAL up to now (switch segment, wait for the archiver), then restore next to the running cluster.
        ok(yield* workspace.script("verify.sh", ["live", "--timeout", "30"], asPostgres), "verify live")
        const sourceData = path.join(cluster.directory, "data")
        const overSource = yield* workspace.script(
          "restore.sh",
          ["--to", sourceData, "--target-time", target],
          asPostgres
        )
        assert.strictEqual(overSource.code, 3, overSource.stderr)
        assert.include(overSource.stderr, "restore into a new one")

        const restoredData = path.join(workspace.root, "restored")
        const port = yield* freePort
        const restore = yield* workspace.script(
          "restore.sh",
          ["--to", restoredData, "--target-time", target, "--port", String(port)],
          asPostgres
        )
        ok(restore, "restore")
        assert.include(restore.stdout, `-c port=${port} -c archive_mode=off`)
        const again = yield* workspace.script("restore.sh", ["--to", restoredData, "--latest"], asPostgres)
        assert.strictEqual(again.code, 3, "a restore never goes over files")

        const restored = yield* startServer(restoredData, port)
        const verified = yield* workspace.script("verify.sh", ["restored", "--target-time", target], {
          asPostgres: false,
          env: { PGHOST: restored.host, PGPORT: String(restored.port) }
        })
        ok(verified, "verify restored")
        assert.include(verified.stdout, `no transition after ${target}`)

        assert.deepStrictEqual(yield* transitions(restored), beforeTarget)
        // Each saga is at the last version it had before the target; none of the third batch exists.
        const versions = (rows: ReadonlyArray<string>) => {
          const latest = new Map<string, number>()
          for (const [id, version] of rows.map((row) => row.split(":"))) {
            latest.set(id ?? "", Math.max(latest.get(id ?? "") ?? 0, Number(version)))
          }
          return [...latest].map(([id, version]) => `${id}:${version}`).sort()
        }
        assert.deepStrictEqual(
          lines(yield* query(restored, "SELECT id || ':' || lock_version FROM orchestrator.saga_instances ORDER BY 1")),
          versions(beforeTarget)
        )
        assert.strictEqual(
          (yield* query(
            restored,
            "SELECT string_agg(DISTINCT current_state, ',') FROM orchestrator.saga_instances"
          )).trim(),
          "MESHING_GEOMETRY,RUNNING_SOLVER"
        )
        assert.strictEqual(versions(beforeTarget).length, first.length + second.length)
        // The copy is promoted (writable) and archives nothing into the repository it came from.
        assert.strictEqual((yield* query(restored, "SELECT pg_is_in_recovery()")).trim(), "f")
        assert.strictEqual((yield* query(restored, "SHOW archive_mode")).trim(), "off")

        // To the end of the archive: everything committed before `verify.sh live` archived the WAL.
        const latestData = path.join(workspace.root, "latest")
        ok(yield* workspace.script("restore.sh", ["--to", latestData, "--latest"], asPostgres), "restore --latest")
        const latest = yield* startServer(latestData, yield* freePort)
        ok(
          yield* workspace.script("verify.sh", ["restored"], {
            asPostgres: false,
            env: { PGHOST: latest.host, PGPORT: String(latest.port) }
          }),
          "verify latest"
        )
        assert.deepStrictEqual(yield* transitions(latest), all)

        ok(yield* workspace.script("verify.sh", ["repo"], asPostgres), "verify repo")
      }).pipe(Effect.scoped)
  )

  it.effect("round-trips the orchestrator schema through pg_dump into a fresh cluster the service runs on", () =>
    Effect.gen(function* () {
      const workspace = yield* Workspace
      const cluster = yield* PrivateCluster.PrivateCluster
      const store = yield* SagaStore

      // Something in every table: sagas mid-flight with tasks in the outbox and armed timers, an idempotency key,
      // an ignored duplicate reply.
      const engine = yield* Engine
      const keyed = yield* engine.start("BALANCE_CALCULATION", input, { idempotencyKey: "backup-test-key" })
      const task = yield* newestTask(keyed.saga.id)
      yield* reply(succeeded(task, results[task.taskType]))
      yield* reply(succeeded(task, results[task.taskType])) // a duplicate: recorded and ignored
      assert.lengthOf(yield* store.ignoredEvents(keyed.saga.id), 1)
      const [pending] = yield* startSagas(1, "pending")
      if (pending === undefined) return yield* Effect.die("no saga")

      const dumpFile = path.join(workspace.root, "orchestrator.dump")
      const source = { PGHOST: cluster.server.host, PGPORT: String(cluster.server.port), PGUSER: "postgres" }
      const dumped = yield* workspace.script("dump.sh", ["-f", dumpFile], { asPostgres: false, env: source })
      ok(dumped, "dump")
      assert.match(dumped.stdout, /^dumped .*orchestrator\.dump: \d+ entries/)

      // A cluster of its own, without the orchestrator's roles: bootstrap.sql creates them.
      const freshData = path.join(workspace.root, "fresh")
      yield* initdb(freshData)
      const fresh = yield* startServer(freshData, yield* freePort)
      const secrets = path.join(workspace.root, "secrets")
      fs.mkdirSync(secrets, { mode: 0o700 })
      fs.writeFileSync(path.join(secrets, "db_password"), `${passwords.app}\n`, { mode: 0o600 })
      fs.writeFileSync(path.join(secrets, "db_migration_password"), `${passwords.owner}\n`, { mode: 0o600 })
      fs.writeFileSync(path.join(secrets, "api_tokens"), "backup-test-token\n", { mode: 0o600 })
      assert.strictEqual(
        (yield* Effect.promise(() =>
          psql("postgres", ["-At", "-c", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^orchestrator_'"], fresh)
        )).trim(),
        "0"
      )
      const target = { PGHOST: fresh.host, PGPORT: String(fresh.port), PGUSER: "postgres" }
      const restoreArgs = ["-f", dumpFile, "-d", "orchestrator", "--secrets-dir", secrets]
      const restored = yield* workspace.script("dump-restore.sh", [...restoreArgs, "--create"], {
        asPostgres: false,
        env: target
      })
      ok(restored, "dump-restore")
      assert.include(restored.stdout, "privileges checked")
      for (const args of [restoreArgs, [...restoreArgs, "--create"]]) {
        const refused = yield* workspace.script("dump-restore.sh", args, { asPostgres: false, env: target })
        assert.strictEqual(refused.code, 3, `never over an existing copy: ${refused.stderr}`)
      }

      // The same schema (owners, grants, default privileges, triggers) and the same rows, table by table.
      assert.strictEqual(yield* normalizedSchema(fresh), yield* normalizedSchema(cluster.server))
      assert.deepStrictEqual(yield* contents(fresh), yield* contents(cluster.server))

      const freshConfig: DatabaseConfig = {
        ...cluster.config,
        host: fresh.host,
        port: fresh.port,
        migration: Option.some({ user: "orchestrator_owner", password: Redacted.make(passwords.owner) })
      }
      // The owner finds every migration applied (it owns the migrations table it must lock).
      assert.deepStrictEqual(yield* migrate(freshConfig).pipe(Effect.provide(NodeServices.layer), Effect.orDie), [])

      yield* Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const pg = yield* PgClient.PgClient
        // What the service checks before it serves.
        assert.strictEqual(yield* checkSchemaCurrent, Math.max(...shippedMigrations.map(([id]) => id)))
        yield* checkLeastPrivilege(false)
        // The runtime role: DML only.
        const create = yield* Effect.flip(sql`CREATE TABLE orchestrator.intruder (id int)`)
        assert.strictEqual(sqlState(create), "42501")
        const alter = yield* Effect.flip(sql`ALTER TABLE orchestrator.saga_instances ADD COLUMN intruder int`)
        assert.strictEqual(sqlState(alter), "42501")
        const migrations = yield* Effect.flip(sql`DELETE FROM orchestrator.effect_sql_migrations`)
        assert.strictEqual(sqlState(migrations), "42501")

        // A step's commit on the copy is announced to the relays (this process has none of its own). New outbox
        // rows take ids after the restored ones (the identity sequence came along too, or the inserts would collide).
        const notifications = yield* pg.listen("orchestrator_outbox")
        const completed = yield* runToCompletion
        assert.strictEqual(completed.status, "COMPLETED")
        assert.strictEqual(completed.lockVersion, 5)
        yield* Queue.take(notifications).pipe(Effect.timeout("5 seconds"), Effect.orDie)
      }).pipe(Effect.scoped, Effect.provide(onDatabase(freshConfig)))

      // The service itself starts on the copy (schema and privilege checks pass) and moves on the saga the dump
      // caught with its first task in the outbox: relay, simulated worker, reply consumer.
      const httpPort = yield* freePort
      const service = yield* startScoped(["src/main.ts"], {
        ORCH_DB_HOST: fresh.host,
        ORCH_DB_PORT: String(fresh.port),
        ORCH_DB_NAME: "orchestrator",
        ORCH_SECRETS_DIR: secrets,
        ORCH_HTTP_PORT: String(httpPort)
      })
      yield* service.waitFor(/state store healthy/, 30_000)
      const reached = yield* query(
        fresh,
        `SELECT current_state FROM orchestrator.saga_instances WHERE id = '${pending}'`
      ).pipe(
        Effect.map((state) => state.trim()),
        Effect.repeat({
          schedule: Schedule.spaced("100 millis"),
          until: (state) => state === "AWAITING_CONDENSER_INPUT"
        }),
        Effect.timeoutOption("15 seconds")
      )
      assert.deepStrictEqual(reached, Option.some("AWAITING_CONDENSER_INPUT"), service.output())
      service.child.kill("SIGTERM")
      assert.strictEqual(yield* service.exited, 0, service.output())
    }).pipe(Effect.scoped)
  )
})
