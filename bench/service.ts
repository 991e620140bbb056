/**
 * Sections (3) and (5): the service (`node src/main.ts`) and the test worker (test/worker/worker.ts) as processes on
 * the bench database and vhost, replying at once. Sagas are started through the engine in this process; steps/s
 * come from `saga_transitions` timestamps, latency from the service's step-latency histogram (reply received →
 * transition committed) and from consecutive transitions of one saga (commit → task relayed and confirmed → worker →
 * reply → next commit, an upper bound). The service's RSS is read from /proc with the sagas active.
 */
import { join } from "node:path"
import { Effect, Layer, References } from "effect"
import * as Engine from "../src/saga/Engine.ts"
import { SagaRegistry } from "../src/saga/Registry.ts"
import { definitions } from "../src/sagas/index.ts"
import { runtimeClient } from "../src/store/Database.ts"
import * as PgSagaStore from "../src/store/PgSagaStore.ts"
import { SagaStore } from "../src/store/SagaStore.ts"
import { type BenchEnv, cpuPer, cpuSnapshot, nodeProcess, percentile, rssMb, serviceEnvironment } from "./env.ts"

export interface ServiceResult {
  readonly sagas: number
  readonly rssIdleMb: number
  readonly rssActiveMb: number
  readonly activeSagas: number
  readonly peak: {
    readonly steps: number
    readonly seconds: number
    readonly stepsPerSecond: number
    readonly sagasPerSecond: number
    /** Milliseconds of CPU per reply step, by process (starting and signalling the sagas included). */
    readonly cpuMsPerStep: Readonly<Record<string, number>>
    /** PostgreSQL transactions committed in the bench database per reply step (all processes). */
    readonly commitsPerStep: number
  }
  readonly halfRate?: {
    readonly targetSagasPerSecond: number
    readonly stepsPerSecond: number
    readonly replyToCommitMs: { readonly p50: number; readonly p95: number; readonly p99: number }
    readonly commitToNextCommitMs: { readonly p50: number; readonly p95: number; readonly p99: number }
  }
}

const httpPort = 18_000 + (process.pid % 1000)

const input = (n: number, label: string) => ({
  repo: `bench/ok/${label}${n}`,
  baseBranch: "main",
  inputRef: `inputs/${label}${n}.yaml`,
  requestedBy: "bench"
})

/** Cumulative step-latency buckets, summed over labels: le → count. */
const latencyBuckets = Effect.promise(() =>
  fetch(`http://127.0.0.1:${httpPort}/metrics`)
    .then((r) => r.text())
    .catch(() => "")
).pipe(
  Effect.map((text) => {
    const buckets = new Map<number, number>()
    for (const m of text.matchAll(
      /orchestrator_step_latency_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\d+(?:\.\d+)?)/g
    )) {
      const le = m[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[1])
      buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]))
    }
    return buckets
  })
)

/** Upper bucket bound (ms) holding quantile q of the observations between two scrapes. */
const bucketQuantile = (before: Map<number, number>, after: Map<number, number>, q: number) => {
  const les = [...after.keys()].sort((a, b) => a - b)
  const total = (after.get(Number.POSITIVE_INFINITY) ?? 0) - (before.get(Number.POSITIVE_INFINITY) ?? 0)
  for (const le of les) {
    if ((after.get(le) ?? 0) - (before.get(le) ?? 0) >= q * total) return le * 1000
  }
  return Number.NaN
}

const waitUntil = (check: Effect.Effect<boolean>, timeoutMs: number) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (!(yield* check) && Date.now() < deadline) yield* Effect.sleep("200 millis")
  })

export interface ServiceOptions {
  readonly sagas: number
  readonly halfRateSeconds: number
  /** A directory for the service's V8 CPU profile (`--cpu-prof`), written when it stops. */
  readonly cpuProfileDir?: string | undefined
}

export const run = (env: BenchEnv, options: ServiceOptions) =>
  Effect.gen(function* () {
    const engine = yield* Engine.Engine
    const store = yield* SagaStore
    const count = (where: string) =>
      env
        .superuser(
          `SELECT count(*) FROM orchestrator.saga_instances WHERE saga_type = 'BALANCE_CALCULATION' AND context->>'requestedBy' = 'bench' AND ${where}`
        )
        .pipe(Effect.map(Number))
    // Committed transactions in the bench database so far, all processes (the statistics lag by up to a second).
    const commits = Effect.sleep("1 second").pipe(
      Effect.andThen(env.superuser(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`)),
      Effect.map(Number)
    )
    const service = yield* nodeProcess(
      ["src/main.ts"],
      { ...serviceEnvironment(env, httpPort), ORCH_LOG_LEVEL: "Warning" },
      options.cpuProfileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`]
    )
    yield* service.waitFor(/consuming queue 'orchestrator.replies'/, 60_000)
    const worker = yield* nodeProcess(
      [
        "test/worker/worker.ts",
        env.amqpUrl,
        join(env.secrets, "amqp_password"),
        join(env.secrets, "effects.jsonl"),
        "200"
      ],
      {}
    )
    yield* worker.waitFor(/consuming queue 'test.worker.tasks'/, 60_000)
    yield* Effect.sleep("1 second")
    const rssIdleMb = yield* rssMb(service.pid)

    const cpuGroups = {
      service: { pids: [service.pid] },
      worker: { pids: [worker.pid] },
      bench: { pids: [process.pid] },
      postgresql: { user: "postgres" },
      rabbitmq: { user: "rabbitmq" }
    }
    const cpuBefore = yield* cpuSnapshot(cpuGroups)
    const commitsBefore = yield* commits

    // Peak: all sagas at once; each runs start → prepare → mesh, and waits (active) for condenser input.
    const begin = new Date()
    yield* Effect.forEach(
      Array.from({ length: options.sagas }, (_, n) => n),
      (n) => engine.start("BALANCE_CALCULATION", input(n, "peak")),
      { concurrency: 16, discard: true }
    )
    yield* waitUntil(
      Effect.map(count(`current_state = 'AWAITING_CONDENSER_INPUT'`), (n) => n >= options.sagas),
      180_000
    )
    const activeSagas = yield* count(`status = 'RUNNING'`)
    yield* Effect.sleep("2 seconds")
    const rssActiveMb = yield* rssMb(service.pid)
    // Release them: condenser input for all; solver and publish follow, and the sagas complete.
    const waiting = (yield* env.superuser(
      `SELECT id FROM orchestrator.saga_instances WHERE current_state = 'AWAITING_CONDENSER_INPUT'`
    ))
      .split("\n")
      .filter(Boolean)
    yield* Effect.forEach(
      waiting,
      (id) =>
        engine.signal(id as never, "condenser_input", { condenserDataRef: `condenser/${id}.json` }).pipe(Effect.ignore),
      { concurrency: 16, discard: true }
    )
    yield* waitUntil(
      Effect.map(count(`status = 'COMPLETED'`), (n) => n >= options.sagas),
      180_000
    )
    // Steps the service took (worker replies), between the first and the last of them.
    const stats = (yield* env.superuser(`
      SELECT count(*), extract(epoch FROM max(at) - min(at))
      FROM orchestrator.saga_transitions
      WHERE at >= '${begin.toISOString()}' AND event NOT IN ('SagaStarted') AND event NOT ILIKE '%signal%'`)).split("|")
    const steps = Number(stats[0])
    const seconds = Number(stats[1])
    const completed = yield* count(`status = 'COMPLETED'`)
    const cpuMsPerStep = cpuPer(cpuBefore, yield* cpuSnapshot(cpuGroups), steps)
    const commitsPerStep = ((yield* commits) - commitsBefore) / steps
    const peak = {
      steps,
      seconds,
      stepsPerSecond: steps / seconds,
      sagasPerSecond: completed / seconds,
      cpuMsPerStep,
      commitsPerStep
    }
    yield* Effect.logWarning("end-to-end peak", peak, { rssIdleMb, rssActiveMb, activeSagas })

    if (options.halfRateSeconds <= 0) return { sagas: options.sagas, rssIdleMb, rssActiveMb, activeSagas, peak }

    // Half of the peak: sagas started at a steady rate (4 reply steps each), condenser input given as they wait.
    const targetSagasPerSecond = Math.max(1, peak.stepsPerSecond / 2 / 4)
    const before = yield* latencyBuckets
    const halfBegin = new Date()
    const total = Math.ceil(targetSagasPerSecond * options.halfRateSeconds)
    const engineer = Effect.gen(function* () {
      while (true) {
        const page = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
        yield* Effect.forEach(
          page.items,
          (saga) => engine.signal(saga.id, "condenser_input", { condenserDataRef: "c/x.json" }).pipe(Effect.ignore),
          { concurrency: 8, discard: true }
        )
        yield* Effect.sleep("20 millis")
      }
    }).pipe(Effect.ignore, Effect.forkScoped)
    yield* engineer
    const startAt = performance.now()
    for (let n = 0; n < total; n++) {
      const due = startAt + (n * 1000) / targetSagasPerSecond
      const wait = due - performance.now()
      if (wait > 0) yield* Effect.sleep(wait)
      yield* Effect.forkScoped(engine.start("BALANCE_CALCULATION", input(n, "half")))
    }
    yield* waitUntil(
      Effect.map(count(`status = 'COMPLETED'`), (n) => n >= options.sagas + total),
      60_000
    )
    const after = yield* latencyBuckets
    const gaps = (yield* env.superuser(`
      SELECT extract(epoch FROM at - lag(at) OVER (PARTITION BY saga_id ORDER BY lock_version)) * 1000
      FROM orchestrator.saga_transitions t
      WHERE at >= '${halfBegin.toISOString()}'`))
      .split("\n")
      .filter((line) => line !== "")
      .map(Number)
      .sort((a, b) => a - b)
    const halfStats = (yield* env.superuser(`
      SELECT count(*), extract(epoch FROM max(at) - min(at)) FROM orchestrator.saga_transitions
      WHERE at >= '${halfBegin.toISOString()}' AND event NOT IN ('SagaStarted') AND event NOT ILIKE '%signal%'`)).split(
      "|"
    )
    const halfRate = {
      targetSagasPerSecond,
      stepsPerSecond: Number(halfStats[0]) / Number(halfStats[1]),
      replyToCommitMs: {
        p50: bucketQuantile(before, after, 0.5),
        p95: bucketQuantile(before, after, 0.95),
        p99: bucketQuantile(before, after, 0.99)
      },
      commitToNextCommitMs: { p50: percentile(gaps, 50), p95: percentile(gaps, 95), p99: percentile(gaps, 99) }
    }
    yield* Effect.logWarning("end-to-end half rate", halfRate)
    return { sagas: options.sagas, rssIdleMb, rssActiveMb, activeSagas, peak, halfRate } satisfies ServiceResult
  }).pipe(
    Effect.scoped,
    // The engine here only starts and signals sagas: its per-saga info logs would cost this process CPU the
    // service needs (the machine's cores are shared); the bench's own results are logged at warning.
    Effect.provideService(References.MinimumLogLevel, "Warn"),
    Effect.provide(
      Engine.layer.pipe(
        Layer.provideMerge(SagaRegistry.layer(definitions)),
        Layer.provideMerge(PgSagaStore.layerNoDeps().pipe(Layer.provide(runtimeClient(env.config, 16))))
      )
    ),
    Effect.orDie
  )
