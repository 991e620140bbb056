/**
 * Section (4): the store's queries with `rows` sagas in `saga_instances`, 5% of them active (each with a timer, a
 * tenth of those due): their latency through the store, and which indexes their plans use (EXPLAIN ANALYZE).
 */
import { DateTime, Duration, Effect } from "effect"
import * as PgSagaStore from "../src/store/PgSagaStore.ts"
import { SagaStore } from "../src/store/SagaStore.ts"
import { type BenchEnv, percentile } from "./env.ts"

export interface QueryResult {
  readonly query: string
  readonly p50Ms: number
  readonly p95Ms: number
  readonly maxMs: number
  readonly planMs: number
  readonly indexes: ReadonlyArray<string>
  readonly seqScans: ReadonlyArray<string>
}

export interface ScaleResult {
  readonly rows: number
  readonly active: number
  readonly populateSeconds: number
  readonly queries: ReadonlyArray<QueryResult>
}

const populate = (env: BenchEnv, rows: number) =>
  env
    .superuser(`
    INSERT INTO orchestrator.saga_instances
      (id, saga_type, current_state, status, context, progress, correlation_id, lock_version, created_at, updated_at)
    SELECT gen_random_uuid(), 'BALANCE_CALCULATION',
           CASE WHEN n % 20 = 0 THEN 'MESHING_GEOMETRY' ELSE 'PUBLISHING_RESULTS' END,
           CASE WHEN n % 20 = 0 THEN 'RUNNING' WHEN n % 7 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
           jsonb_build_object('repo', 'scale/ok/' || n, 'baseBranch', 'main', 'inputRef', 'inputs/' || n || '.yaml',
                              'requestedBy', 'user' || (n % 50)),
           '{}', 'corr-' || n, 5, now() - (n % 43200) * interval '1 minute', now() - (n % 43200) * interval '1 minute'
    FROM generate_series(1, ${rows}) n;
    INSERT INTO orchestrator.saga_timers (saga_id, due_at, awaiting, lock_version)
    SELECT id, CASE WHEN random() < 0.1 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END,
           '{"_tag":"Reply","taskId":"t","taskType":"geometry.mesh"}'::jsonb, lock_version
    FROM orchestrator.saga_instances WHERE status = 'RUNNING'
    ON CONFLICT DO NOTHING`)
    .pipe(
      Effect.andThen(env.superuser("VACUUM ANALYZE orchestrator.saga_instances")),
      Effect.andThen(env.superuser("VACUUM ANALYZE orchestrator.saga_timers"))
    )

const sagaColumns =
  "id, saga_type, current_state, status, context, correlation_id, lock_version, created_at, updated_at"

/** The statements the store sends, with literals, for EXPLAIN. */
const explained: Record<string, string> = {
  findStuck: `
    SELECT s.id, s.saga_type, s.current_state, s.status, s.context, s.correlation_id, s.lock_version,
           s.created_at, s.updated_at, t.due_at AS timer_due_at, t.awaiting AS timer_awaiting
    FROM orchestrator.saga_instances s LEFT JOIN orchestrator.saga_timers t ON t.saga_id = s.id
    WHERE s.status IN ('RUNNING', 'COMPENSATING') AND s.updated_at <= now() - 3600000 * interval '1 millisecond'
    ORDER BY s.updated_at LIMIT 100`,
  contextContains: `
    SELECT ${sagaColumns} FROM orchestrator.saga_instances
    WHERE context @> '{"repo":"scale/ok/123457"}' ORDER BY id DESC LIMIT 51`,
  listByStatusAndType: `
    SELECT ${sagaColumns} FROM orchestrator.saga_instances
    WHERE status = 'RUNNING' AND saga_type = 'BALANCE_CALCULATION' ORDER BY id DESC LIMIT 51`,
  claimDue: `
    WITH due AS (
      SELECT saga_id, due_at FROM orchestrator.saga_timers WHERE due_at <= now()
      ORDER BY due_at LIMIT 100 FOR UPDATE SKIP LOCKED
    )
    UPDATE orchestrator.saga_timers t SET due_at = now() + interval '1 minute'
    FROM due WHERE t.saga_id = due.saga_id
    RETURNING t.saga_id, t.lock_version, due.due_at, t.awaiting`
}

const plan = (env: BenchEnv, query: string) =>
  env.superuser(`BEGIN; EXPLAIN (ANALYZE, BUFFERS) ${query}; ROLLBACK`).pipe(
    Effect.map((text) => ({
      text,
      planMs: Number(/Execution Time: ([\d.]+)/.exec(text)?.[1] ?? 0),
      indexes: [
        ...new Set(
          [...text.matchAll(/(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\S+)/g)].map(
            (m) => m[1] ?? ""
          )
        )
      ],
      seqScans: [...new Set([...text.matchAll(/Seq Scan on (\S+)/g)].map((m) => m[1] ?? ""))]
    }))
  )

const time = <A, E, R>(iterations: number, body: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    for (let i = 0; i < 3; i++) yield* body
    const samples: Array<number> = []
    for (let i = 0; i < iterations; i++) {
      const begin = performance.now()
      yield* body
      samples.push(performance.now() - begin)
    }
    return samples.sort((a, b) => a - b)
  })

export const run = (env: BenchEnv, options: { readonly rows: number; readonly iterations: number }) =>
  Effect.gen(function* () {
    const existing = Number(yield* env.superuser("SELECT count(*) FROM orchestrator.saga_instances"))
    const begin = performance.now()
    yield* populate(env, Math.max(0, options.rows - existing))
    const populateSeconds = (performance.now() - begin) / 1000
    const total = Number(yield* env.superuser("SELECT count(*) FROM orchestrator.saga_instances"))
    const active = Number(
      yield* env.superuser("SELECT count(*) FROM orchestrator.saga_instances WHERE status = 'RUNNING'")
    )
    const store = yield* SagaStore
    const bodies: Record<string, Effect.Effect<unknown, unknown>> = {
      findStuck: store.findStuck(Duration.hours(1), { limit: 100 }),
      contextContains: store.find({ context: { repo: "scale/ok/123457" } }),
      listByStatusAndType: store.find({ status: "RUNNING", sagaType: "BALANCE_CALCULATION", limit: 50 }),
      claimDue: Effect.flatMap(DateTime.now, (now) => store.claimDue(now, 100))
    }
    const queries: Array<QueryResult> = []
    for (const [query, body] of Object.entries(bodies)) {
      const samples = yield* time(options.iterations, body)
      const explain = yield* plan(env, explained[query] ?? "")
      const result: QueryResult = {
        query,
        p50Ms: percentile(samples, 50),
        p95Ms: percentile(samples, 95),
        maxMs: samples.at(-1) ?? 0,
        planMs: explain.planMs,
        indexes: explain.indexes,
        seqScans: explain.seqScans
      }
      yield* Effect.logInfo("scale", result)
      queries.push(result)
    }
    // The sections after this one measure the service, whose own queries (and the bench's polling) would pay for
    // a million rows they have nothing to do with, and for the vacuuming that follows.
    yield* env.superuser(
      "TRUNCATE orchestrator.saga_instances, orchestrator.saga_timers, orchestrator.saga_transitions, orchestrator.saga_outbox, orchestrator.saga_idempotency_keys, orchestrator.saga_ignored_events"
    )
    return { rows: total, active, populateSeconds, queries } satisfies ScaleResult
  }).pipe(Effect.provide(PgSagaStore.layerDatabase(env.config, { maxConnections: 4 })), Effect.orDie)
