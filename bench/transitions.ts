/**
 * Sections (1) and (2): one saga step's transaction — locked read, versioned update, outbox insert, history insert,
 * commit — driven as fast as possible at several concurrencies: by pgbench with prepared statements (the database's
 * ceiling), by the same Node client without the engine, and by `SagaStore.transact` as the engine calls it.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as v8 from "node:v8"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { SagaId } from "../src/domain/Saga.ts"
import { runtimeClient } from "../src/store/Database.ts"
import * as PgSagaStore from "../src/store/PgSagaStore.ts"
import { SagaStore, StepOutcome } from "../src/store/SagaStore.ts"
import { type BenchEnv, pgbench } from "./env.ts"

export interface TransitionsResult {
  readonly concurrency: number
  readonly pgbenchPrepared: number
  readonly pgbenchSimple: number
  readonly nodeClient: number
  readonly store: number
  /** This process's CPU (user + system) per step, in microseconds: what the client and the store cost in Node. */
  readonly nodeClientCpuMicros: number
  readonly storeCpuMicros: number
}

const context = { repo: "bench/ok/1", baseBranch: "main", inputRef: "inputs/bench.yaml", requestedBy: "bench-seed" }
/** The engine's bookkeeping as a step writes it beside the context. */
const progress = {
  version: 1,
  step: 1,
  attempt: 1,
  awaiting: { _tag: "Reply", taskId: "t", taskType: "geometry.mesh" },
  deadline: "2030-01-01T00:00:00.000Z",
  completed: ["prepareBranch"]
}
const task = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh" }
const payload = { taskId: "00000000-0000-4000-8000-000000000000", taskType: "geometry.mesh", attempt: 1 }

/** A valid (version 4, RFC variant) UUID made from n, which pgbench computes the same way. */
const sagaIdOf = (n: string) => `overlay(overlay(md5('b' || ${n}) placing '4' from 13) placing '8' from 17)::uuid`

/** `count` RUNNING sagas with ids sagaIdOf(n), n = 1..count, which pgbench computes the same way. */
export const seed = (env: BenchEnv, count: number) =>
  env.superuser(`
    INSERT INTO orchestrator.saga_instances (id, saga_type, current_state, status, context, progress, correlation_id)
    SELECT ${sagaIdOf("n")}, 'BALANCE_CALCULATION', 'PREPARING_BRANCH', 'RUNNING',
           '${JSON.stringify(context)}'::jsonb, '{}'::jsonb, md5('b' || n)
    FROM generate_series(1, ${count}) n;
    ANALYZE orchestrator.saga_instances`)

const reset = (env: BenchEnv) =>
  env.superuser(`TRUNCATE orchestrator.saga_outbox, orchestrator.saga_transitions; CHECKPOINT`)

const columns =
  "id, saga_type, current_state, status, context, progress, correlation_id, lock_version, created_at, updated_at"

export const pgbenchScript = (sagas: number) => `\\set n random(1, ${sagas})
BEGIN;
SELECT ${columns} FROM orchestrator.saga_instances WHERE id = ${sagaIdOf(":n")} FOR UPDATE \\gset
UPDATE orchestrator.saga_instances
  SET current_state = 'MESHING_GEOMETRY', status = 'RUNNING', context = '${JSON.stringify(context)}'::jsonb,
      progress = '${JSON.stringify(progress)}'::jsonb, lock_version = lock_version + 1
  WHERE id = ${sagaIdOf(":n")} AND lock_version = :lock_version
  RETURNING ${columns};
INSERT INTO orchestrator.saga_transitions
  (saga_id, lock_version, from_state, to_state, status, event, detail, transition_id, at)
  VALUES (${sagaIdOf(":n")}, :lock_version + 1, 'PREPARING_BRANCH', 'MESHING_GEOMETRY', 'RUNNING',
          'TaskSucceeded', '{"taskId":"t"}'::jsonb, gen_random_uuid(), now());
INSERT INTO orchestrator.saga_outbox (message_id, saga_id, correlation_id, exchange, routing_key, headers, payload)
  VALUES (gen_random_uuid(), ${sagaIdOf(":n")}, 'c', '${task.exchange}', '${task.routingKey}', '{}'::jsonb,
          '${JSON.stringify(payload)}'::jsonb);
END;
`

const runPgbench = (env: BenchEnv, scriptFile: string, mode: "prepared" | "simple", clients: number, secs: number) =>
  pgbench(env.database, [
    "-n",
    "-M",
    mode,
    "-c",
    String(clients),
    "-j",
    String(Math.min(clients, 2)),
    "-T",
    String(secs),
    "-f",
    scriptFile
  ]).pipe(Effect.map((out) => Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? 0)))

/** Runs `body` in `concurrency` fibers until `seconds` pass; returns completions per second and CPU per completion. */
export const drive = <E, R>(concurrency: number, seconds: number, body: (i: number) => Effect.Effect<unknown, E, R>) =>
  Effect.gen(function* () {
    let done = 0
    const cpuBefore = process.cpuUsage()
    const begin = performance.now()
    const end = begin + seconds * 1000
    yield* Effect.forEach(
      Array.from({ length: concurrency }, (_, worker) => worker),
      (worker) =>
        Effect.gen(function* () {
          let i = worker
          while (performance.now() < end) {
            yield* body(i)
            i += concurrency
            done += 1
          }
        }),
      { concurrency: "unbounded", discard: true }
    )
    const perSecond = done / ((performance.now() - begin) / 1000)
    const cpu = process.cpuUsage(cpuBefore)
    return { perSecond, cpuMicros: (cpu.user + cpu.system) / done }
  })

const pick = (ids: ReadonlyArray<string>) => ids[Math.floor(Math.random() * ids.length)] as SagaId

/** The step's SQL through @effect/sql-pg, no store or engine around it. */
export const nodeClientStep = (ids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const json = JSON.stringify(context)
    const progressJson = JSON.stringify(progress)
    const detail = JSON.stringify({ taskId: "t" })
    const body = JSON.stringify(payload)
    return () => {
      const id = pick(ids)
      return sql.withTransaction(
        Effect.gen(function* () {
          const rows = yield* sql<{ lock_version: number }>`
            SELECT ${sql.literal(columns)} FROM orchestrator.saga_instances WHERE id = ${id} FOR UPDATE`
          const version = rows[0]?.lock_version ?? 0
          yield* sql`
            UPDATE orchestrator.saga_instances
            SET current_state = ${"MESHING_GEOMETRY"}, status = ${"RUNNING"}, context = ${json}::jsonb,
                progress = ${progressJson}::jsonb, lock_version = lock_version + 1
            WHERE id = ${id} AND lock_version = ${version}
            RETURNING ${sql.literal(columns)}`
          yield* sql`
            INSERT INTO orchestrator.saga_transitions
              (saga_id, lock_version, from_state, to_state, status, event, detail, transition_id, at)
            VALUES (${id}, ${version + 1}, ${"PREPARING_BRANCH"}, ${"MESHING_GEOMETRY"}, ${"RUNNING"},
                    ${"TaskSucceeded"}, ${detail}::jsonb, ${crypto.randomUUID()}, ${new Date()})`
          yield* sql`
            INSERT INTO orchestrator.saga_outbox
              (message_id, saga_id, correlation_id, exchange, routing_key, headers, payload)
            VALUES (${crypto.randomUUID()}, ${id}, ${"c"}, ${task.exchange}, ${task.routingKey}, ${"{}"}::jsonb,
                    ${body}::jsonb)`
        })
      )
    }
  })

/** The same step as the engine takes it: `SagaStore.transact` with an Advance that sends the next task. */
export const storeStep = (ids: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    return () =>
      store.transact(pick(ids), (saga) =>
        Effect.succeed(
          StepOutcome.Advance({
            state: "MESHING_GEOMETRY",
            status: "RUNNING",
            context: { ...saga.context },
            progress,
            event: "TaskSucceeded",
            detail: { taskId: "t" },
            messages: [{ ...task, payload }]
          })
        )
      )
  })

export const run = (env: BenchEnv, options: { readonly seconds: number; readonly sagas: number }) =>
  Effect.gen(function* () {
    yield* seed(env, options.sagas)
    const scriptFile = join(env.secrets, "step.sql")
    writeFileSync(scriptFile, pgbenchScript(options.sagas))
    const ids = (yield* env.superuser(`SELECT id FROM orchestrator.saga_instances WHERE status = 'RUNNING'`))
      .split("\n")
      .filter(Boolean)
    const results: Array<TransitionsResult> = []
    for (const concurrency of [1, 8, 32]) {
      yield* reset(env)
      const pgbenchPrepared = yield* runPgbench(env, scriptFile, "prepared", concurrency, options.seconds)
      yield* reset(env)
      const pgbenchSimple = yield* runPgbench(env, scriptFile, "simple", concurrency, options.seconds)
      const client = runtimeClient(env.config, concurrency)
      yield* reset(env)
      const nodeClient = yield* Effect.flatMap(nodeClientStep(ids), (step) =>
        drive(concurrency, options.seconds, step)
      ).pipe(Effect.provide(client), Effect.orDie)
      yield* reset(env)
      const store = yield* Effect.flatMap(storeStep(ids), (step) => drive(concurrency, options.seconds, step)).pipe(
        Effect.provide(PgSagaStore.layerDatabase(env.config, { maxConnections: concurrency })),
        Effect.orDie
      )
      const result = {
        concurrency,
        pgbenchPrepared,
        pgbenchSimple,
        nodeClient: nodeClient.perSecond,
        store: store.perSecond,
        nodeClientCpuMicros: nodeClient.cpuMicros,
        storeCpuMicros: store.cpuMicros
      }
      yield* Effect.logInfo("transitions", result)
      results.push(result)
    }
    yield* reset(env)
    return results
  })

/** Bytes allocated on the V8 heap per `SagaStore.transact` step (garbage collected + retained), at concurrency 8. */
export const allocationsPerStep = (env: BenchEnv, steps: number) =>
  Effect.gen(function* () {
    const ids = (yield* env.superuser(
      `SELECT id FROM orchestrator.saga_instances WHERE status = 'RUNNING' LIMIT 10000`
    ))
      .split("\n")
      .filter(Boolean)
    return yield* Effect.gen(function* () {
      const step = yield* storeStep(ids)
      const batch = (n: number) =>
        Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          () => step(),
          { concurrency: 8, discard: true }
        )
      yield* batch(500)
      const profiler = new v8.GCProfiler()
      const usedBefore = v8.getHeapStatistics().used_heap_size
      profiler.start()
      yield* batch(steps)
      const report = profiler.stop()
      const usedAfter = v8.getHeapStatistics().used_heap_size
      const collected = (report?.statistics ?? []).reduce(
        (sum, gc) =>
          sum + Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - gc.afterGC.heapStatistics.usedHeapSize),
        0
      )
      return { steps, bytesPerStep: (collected + usedAfter - usedBefore) / steps, gcs: report?.statistics.length ?? 0 }
    }).pipe(Effect.provide(PgSagaStore.layerDatabase(env.config, { maxConnections: 8 })), Effect.orDie)
  })
