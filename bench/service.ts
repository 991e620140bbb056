/**
 * Sections (3) and (5): the service (`node src/main.ts`) and the test worker (test/worker/worker.ts) as processes on
 * the bench database and vhost, the worker replying at once. This process starts and signals sagas through an engine
 * of its own, and does so while no service runs, so that the measured windows hold the orchestrator's work alone:
 *
 * 1. Idle: a service on a database with no sagas; its RSS.
 * 2. One process: N sagas are started (their first tasks wait in the outbox); a service starts and drains them to
 *    AWAITING_CONDENSER_INPUT, 2 reply steps each. Its RSS is read with the N sagas waiting there; it stops. The N
 *    sagas are signalled (their solver tasks wait in the outbox); a service starts again and drains them to
 *    COMPLETED, 2 more reply steps each.
 * 3. Latency, on that service: sagas started at a steady quarter, then half, of its peak saga rate and signalled as
 *    they wait (their starts and signals, by this process, come on top of the reply steps).
 * 2b. Memory-bounded: the first drain of 2. on a fresh batch of N, by one service with its V8 heap bounded
 *    (`memoryBoundedNodeOptions`); its RSS with the N sagas waiting, and its rate.
 * 4. Two processes: the two drains of 2. on a fresh batch of N, each with two services sharing the work.
 *
 * A drain's window runs from its first reply step to its last (`saga_transitions` timestamps). CPU by process group
 * and PostgreSQL write transactions are counted from the moment the services, already up, may relay the batch until
 * it is drained: the outbox is held while they start (see `holdingOutbox`). Latency at half rate comes from the
 * service's step-latency histogram (reply received → transition committed), from the worker's timings (its reply
 * confirmed → the saga's next task delivered to it: an upper bound of reply received → next task confirmed) and from
 * consecutive transitions of one saga (commit → task relayed and confirmed → worker → reply → next commit).
 */
import { join } from "node:path"
import { type Duration, Effect, Layer, References } from "effect"
import { SqlClient } from "effect/sql"
import type { SagaId } from "../src/domain/Saga.ts"
import * as Engine from "../src/saga/Engine.ts"
import { SagaRegistry } from "../src/saga/Registry.ts"
import { definitions } from "../src/sagas/index.ts"
import { channel as outboxChannel } from "../src/store/OutboxNotifications.ts"
import * as PgSagaStore from "../src/store/PgSagaStore.ts"
import { SagaStore } from "../src/store/SagaStore.ts"
import { timingsFileOf } from "../test/worker/worker.ts"
import { type BenchEnv, type Child, cpuPer, cpuSnapshot, nodeProcess, rssMb, serviceEnvironment } from "./env.ts"
import {
  bucketQuantiles,
  latencyBuckets,
  type Quantiles,
  quantiles,
  readTimings,
  replyToNextTaskMs,
  taskCount
} from "./latency.ts"

/** Reply steps the service(s) took in one drain, from the first to the last. */
export interface Drain {
  readonly steps: number
  readonly seconds: number
}

/** One batch of sagas drained twice by `processes` services. */
export interface Peak {
  readonly processes: number
  /** To AWAITING_CONDENSER_INPUT, then (signalled while no service ran) to COMPLETED. */
  readonly drains: ReadonlyArray<Drain>
  readonly steps: number
  readonly seconds: number
  readonly stepsPerSecond: number
  readonly sagasPerSecond: number
  /** Milliseconds of CPU per reply step, by process group, in the drains' windows only. */
  readonly cpuMsPerStep: Readonly<Record<string, number>>
  /** PostgreSQL transactions that wrote, per reply step (the whole cluster's, so other users' too). */
  readonly writeTransactionsPerStep: number
}

export interface ServiceResult {
  readonly sagas: number
  readonly rssIdleMb: number
  /** The one-process service with `activeSagas` waiting for condenser input. */
  readonly rssActiveMb: number
  /** Its V8 heap in use then (garbage not yet collected included). */
  readonly heapUsedActiveMb: number
  readonly activeSagas: number
  /** The same drain (to the signal wait) by a service whose V8 heap is bounded. */
  readonly memoryBounded: {
    readonly nodeOptions: ReadonlyArray<string>
    readonly activeSagas: number
    readonly rssActiveMb: number
    readonly heapUsedMb: number
    readonly stepsPerSecond: number
    readonly cpuMsPerStep: Readonly<Record<string, number>>
  }
  readonly oneProcess: Peak
  readonly twoProcesses: Peak
  /** At fractions of the one-process peak: a quarter, and half (the rate the latency target is set at). */
  readonly latency: ReadonlyArray<{
    readonly fractionOfPeak: number
    readonly targetSagasPerSecond: number
    readonly stepsPerSecond: number
    readonly replyToCommitMs: Quantiles
    /** Consecutive tasks of one saga where the reply to the first leads straight to the second. */
    readonly replyConfirmedToNextTaskMs: Quantiles & { readonly pairs: number }
    readonly commitToNextCommitMs: Quantiles
  }>
}

export interface ServiceOptions {
  readonly sagas: number
  /** How long sagas are started at each rate of the latency phase. */
  readonly latencySeconds: number
  /** A directory for the services' V8 CPU profiles (`--cpu-prof`), one per service process, written as each stops. */
  readonly cpuProfileDir?: string | undefined
}

/** A drain's window, with what the processes used in it. */
interface Window extends Drain {
  readonly cpuMs: Readonly<Record<string, number>>
  readonly writeTransactions: number
}

/**
 * V8 settings that bound the service's heap: a smaller young generation (8 MB semi-spaces instead of 16) and a cap
 * on the old one. The live heap is a few tens of MB whatever the number of sagas (the service holds no saga in
 * memory); by default V8 lets garbage grow the heap to several times that under load before it collects. The cap
 * must stay above the largest response the API builds (a page of 500 sagas with contexts at the size limit).
 */
export const memoryBoundedNodeOptions = ["--max-semi-space-size=8", "--max-old-space-size=128"]

/** Each service gets an HTTP port of its own, from here on. */
const firstHttpPort = 18_000 + (process.pid % 1000)

const replySteps = 4

const input = (n: number, label: string) => ({
  repo: `bench/ok/${label}${n}`,
  baseBranch: "main",
  inputRef: `inputs/${label}${n}.yaml`,
  requestedBy: "bench"
})

/**
 * The engineers, for as long as the scope lasts: condenser data for every saga that waits for it, looked for every
 * `every`. Signals that come too late (the saga moved on) are ignored.
 */
export const signalWaiting = (every: Duration.Input) =>
  Effect.gen(function* () {
    const engine = yield* Engine.Engine
    const store = yield* SagaStore
    while (true) {
      const page = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
      yield* Effect.forEach(
        page.items,
        (saga) => engine.signal(saga.id, "condenser_input", { condenserDataRef: "c/x.json" }).pipe(Effect.ignore),
        { concurrency: 8, discard: true }
      )
      yield* Effect.sleep(every)
    }
  }).pipe(Effect.ignore)

const sum = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0)

/** Polls until `done` holds for what `poll` returns, and returns that; dies past the deadline. */
const waitUntil = <A, E>(poll: Effect.Effect<A, E>, done: (value: A) => boolean, timeoutMs: number, what: string) =>
  Effect.gen(function* () {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const value = yield* poll
      if (done(value)) return value
      if (Date.now() > deadline) return yield* Effect.die(new Error(`gave up waiting for ${what}`))
      yield* Effect.sleep("200 millis")
    }
  })

/**
 * Runs `prepare` with every outbox row locked, then wakes the relays. The relays claim with SKIP LOCKED, so the
 * services started in `prepare` find nothing to publish until the commit: their start-up stays out of the window,
 * the relaying of the batch's first tasks falls in it. The notification, delivered at the commit, saves the relays
 * their polling delay.
 */
const holdingOutbox = <A, E, R>(prepare: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.withTransaction(
      sql`SELECT 1 FROM orchestrator.saga_outbox FOR UPDATE`.pipe(
        Effect.andThen(prepare),
        Effect.tap(() => sql`SELECT pg_notify(${outboxChannel}, ${"bench"})`)
      )
    )
  })

/** The V8 heap in use of the service on `port`, in MB, from its /metrics. */
const heapUsedMb = (port: number) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/metrics`)
      .then((r) => r.text())
      .catch(() => "")
  ).pipe(Effect.map((text) => Number(/^nodejs_heap_size_used_bytes (\S+)$/m.exec(text)?.[1] ?? Number.NaN) / 2 ** 20))

/** Resident set size of the service processes together, in MB. */
const rssOf = (services: ReadonlyArray<Child>) =>
  Effect.forEach(services, (service) => rssMb(service.pid)).pipe(Effect.map(sum))

const peakOf = (processes: number, sagas: number, windows: ReadonlyArray<Window>): Peak => {
  const steps = sum(windows.map((w) => w.steps))
  const seconds = sum(windows.map((w) => w.seconds))
  const groups = Object.keys(windows[0]?.cpuMs ?? {})
  return {
    processes,
    drains: windows.map(({ steps, seconds }) => ({ steps, seconds })),
    steps,
    seconds,
    stepsPerSecond: steps / seconds,
    sagasPerSecond: sagas / seconds,
    cpuMsPerStep: Object.fromEntries(
      groups.map((group) => [group, sum(windows.map((w) => w.cpuMs[group] ?? 0)) / steps])
    ),
    writeTransactionsPerStep: sum(windows.map((w) => w.writeTransactions)) / steps
  }
}

export const run = (env: BenchEnv, options: ServiceOptions) =>
  Effect.gen(function* () {
    const engine = yield* Engine.Engine
    const sql = yield* SqlClient.SqlClient
    // Through this process's pool rather than psql: the polling runs inside the measured windows.
    const countIn = (label: string, state: string) =>
      sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM orchestrator.saga_instances
        WHERE saga_type = 'BALANCE_CALCULATION' AND context->>'repo' LIKE ${`bench/ok/${label}%`}
          AND current_state = ${state}`.pipe(Effect.map((rows) => rows[0]?.n ?? 0))
    const allIn = (label: string, state: string, sagas: number) =>
      waitUntil(countIn(label, state), (n) => n >= sagas, 300_000, `the ${label} batch to reach ${state}`)
    // Transaction ids assigned so far in the whole cluster: one per transaction that wrote, committed or not (a
    // read-only one gets none). Unlike pg_stat_database's counters, which an idle backend reports up to 10 s late,
    // it is current at once.
    const writeTransactions = sql<{ readonly xmax: string }>`
      SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax`.pipe(Effect.map((rows) => Number(rows[0]?.xmax)))
    // Reply steps since `since`: every transition but a saga's start and a signal's.
    const stepsSince = (since: Date) =>
      env
        .superuser(`
          SELECT count(*), coalesce(extract(epoch FROM max(at) - min(at)), 0) FROM orchestrator.saga_transitions
          WHERE at >= '${since.toISOString()}' AND event <> 'SagaStarted' AND event NOT ILIKE '%signal%'`)
        .pipe(
          Effect.map((row) => {
            const [steps, seconds] = row.split("|").map(Number)
            return { steps: steps ?? 0, seconds: seconds ?? 0 }
          })
        )

    const effectsFile = join(env.secrets, "effects.jsonl")
    const worker = yield* nodeProcess(
      ["test/worker/worker.ts", env.amqpUrl, join(env.secrets, "amqp_password"), effectsFile, "200"],
      {}
    )
    // Before any service: the worker binds its queue, without which the first tasks relayed would be dropped.
    yield* worker.waitFor(/consuming queue 'test.worker.tasks'/, 60_000)

    const startService = (httpPort: number, nodeOptions: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        const service = yield* nodeProcess(["src/main.ts"], serviceEnvironment(env, httpPort), [
          ...nodeOptions,
          ...(options.cpuProfileDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`])
        ])
        yield* service.waitFor(/consuming queue 'orchestrator.replies'/, 60_000)
        return service
      })
    const startServices = (processes: number, nodeOptions: ReadonlyArray<string> = []) =>
      Effect.forEach(
        Array.from({ length: processes }, (_, i) => firstHttpPort + i),
        (port) => startService(port, nodeOptions),
        { concurrency: "unbounded" }
      )

    /** N sagas started while no service runs: each one's first task waits in the outbox. */
    const startBatch = (label: string) =>
      Effect.forEach(
        Array.from({ length: options.sagas }, (_, n) => n),
        (n) => engine.start("BALANCE_CALCULATION", input(n, label)).pipe(Effect.map((created) => created.saga.id)),
        { concurrency: 16 }
      )
    /** Condenser input for each saga, while no service runs: each one's solver task waits in the outbox. */
    const signalBatch = (ids: ReadonlyArray<SagaId>) =>
      Effect.forEach(ids, (id) => engine.signal(id, "condenser_input", { condenserDataRef: `condenser/${id}.json` }), {
        concurrency: 16,
        discard: true
      })

    /**
     * Starts `processes` services on the batch waiting in the outbox and lets them drain it until `drained`; the
     * services run on until the scope closes.
     */
    const drain = <E>(processes: number, drained: Effect.Effect<unknown, E>, nodeOptions: ReadonlyArray<string> = []) =>
      Effect.gen(function* () {
        const ready = yield* holdingOutbox(
          Effect.gen(function* () {
            const services = yield* startServices(processes, nodeOptions)
            const groups = {
              services: { pids: services.map((service) => service.pid) },
              worker: { pids: [worker.pid] },
              bench: { pids: [process.pid] },
              postgresql: { user: "postgres" },
              rabbitmq: { user: "rabbitmq" }
            }
            const writesBefore = yield* writeTransactions
            const cpuBefore = yield* cpuSnapshot(groups)
            return { services, groups, writesBefore, cpuBefore, since: new Date() }
          })
        )
        yield* drained
        const cpuMs = cpuPer(ready.cpuBefore, yield* cpuSnapshot(ready.groups), 1)
        const window: Window = {
          ...(yield* stepsSince(ready.since)),
          cpuMs,
          writeTransactions: (yield* writeTransactions) - ready.writesBefore
        }
        yield* Effect.logWarning(`drained with ${processes} service(s)`, window)
        return { services: ready.services, window }
      })

    /**
     * Sagas started at `sagasPerSecond` on the running service (its HTTP port given) and signalled as they wait.
     * The starts and signals go through this process's engine, as a client's would go through the API.
     */
    const atRate = (httpPort: number, label: string, sagasPerSecond: number) =>
      Effect.gen(function* () {
        const before = yield* latencyBuckets(httpPort)
        const since = new Date()
        const total = Math.ceil(sagasPerSecond * options.latencySeconds)
        yield* Effect.forkScoped(signalWaiting("20 millis"))
        const startAt = performance.now()
        for (let n = 0; n < total; n++) {
          const due = startAt + (n * 1000) / sagasPerSecond
          const wait = due - performance.now()
          if (wait > 0) yield* Effect.sleep(wait)
          yield* Effect.forkScoped(engine.start("BALANCE_CALCULATION", input(n, label)))
        }
        yield* allIn(label, "COMPLETED", total)
        const after = yield* latencyBuckets(httpPort)
        const sagaIds = new Set(
          (yield* sql<{ readonly id: string }>`
            SELECT id FROM orchestrator.saga_instances WHERE context->>'repo' LIKE ${`bench/ok/${label}%`}`).map(
            (row) => row.id
          )
        )
        // The worker writes a timing once its reply is confirmed, which may come after the saga moved on.
        const timings = yield* waitUntil(
          readTimings(timingsFileOf(effectsFile), sagaIds),
          (bySaga) => taskCount(bySaga) >= replySteps * total,
          10_000,
          `the worker's timings of the ${label} sagas`
        )
        // Each reply step's transition after the one that sent its task; not the signal's, after the wait for it.
        const gaps = (yield* env.superuser(`
          SELECT gap FROM (
            SELECT event,
              extract(epoch FROM at - lag(at) OVER (PARTITION BY saga_id ORDER BY lock_version)) * 1000 AS gap
            FROM orchestrator.saga_transitions WHERE at >= '${since.toISOString()}') t
          WHERE gap IS NOT NULL AND event NOT ILIKE '%signal%'`))
          .split("\n")
          .filter((line) => line !== "")
          .map(Number)
        const replyToNextTask = replyToNextTaskMs(timings)
        const result = {
          targetSagasPerSecond: sagasPerSecond,
          stepsPerSecond: yield* Effect.map(stepsSince(since), ({ steps, seconds }) => steps / seconds),
          replyToCommitMs: bucketQuantiles(before, after),
          replyConfirmedToNextTaskMs: { ...quantiles(replyToNextTask), pairs: replyToNextTask.length },
          commitToNextCommitMs: quantiles(gaps)
        }
        yield* Effect.logWarning("end-to-end half rate", result)
        return result
      }).pipe(Effect.scoped)

    // 1. Idle footprint.
    const rssIdleMb = yield* Effect.scoped(
      Effect.gen(function* () {
        const services = yield* startServices(1)
        yield* Effect.sleep("1 second")
        return yield* rssOf(services)
      })
    )

    // 2. One process.
    const oneIds = yield* startBatch("one")
    const oneWaiting = yield* Effect.scoped(
      Effect.gen(function* () {
        const { services, window } = yield* drain(1, allIn("one", "AWAITING_CONDENSER_INPUT", options.sagas))
        // All of them active: each waits for its condenser input.
        const activeSagas = yield* countIn("one", "AWAITING_CONDENSER_INPUT")
        yield* Effect.sleep("2 seconds")
        return {
          window,
          activeSagas,
          rssActiveMb: yield* rssOf(services),
          heapUsedMb: yield* heapUsedMb(firstHttpPort)
        }
      })
    )
    yield* signalBatch(oneIds)
    const oneCompleted = yield* Effect.scoped(
      Effect.gen(function* () {
        const { window } = yield* drain(1, allIn("one", "COMPLETED", options.sagas))
        const peak = peakOf(1, options.sagas, [oneWaiting.window, window])
        yield* Effect.logWarning("end-to-end, one process", peak)
        // 3. Latency at a quarter and at half of that peak, on the service still up (warm).
        if (options.latencySeconds <= 0) return { peak, latency: [] }
        const latency = yield* Effect.forEach([0.25, 0.5], (fraction) =>
          atRate(
            firstHttpPort,
            `rate${fraction * 100}-`,
            Math.max(1, (peak.stepsPerSecond * fraction) / replySteps)
          ).pipe(Effect.map((result) => ({ fractionOfPeak: fraction, ...result })))
        )
        return { peak, latency }
      })
    )

    // 2b. One process, memory-bounded: its first drain, and its footprint with the batch waiting.
    yield* startBatch("bounded")
    const memoryBounded = yield* Effect.scoped(
      Effect.gen(function* () {
        const { services, window } = yield* drain(
          1,
          allIn("bounded", "AWAITING_CONDENSER_INPUT", options.sagas),
          memoryBoundedNodeOptions
        )
        const activeSagas = yield* countIn("bounded", "AWAITING_CONDENSER_INPUT")
        yield* Effect.sleep("2 seconds")
        const drained = peakOf(1, options.sagas, [window])
        return {
          nodeOptions: memoryBoundedNodeOptions,
          activeSagas,
          rssActiveMb: yield* rssOf(services),
          heapUsedMb: yield* heapUsedMb(firstHttpPort),
          stepsPerSecond: drained.stepsPerSecond,
          cpuMsPerStep: drained.cpuMsPerStep
        }
      })
    )
    yield* Effect.logWarning("end-to-end, one memory-bounded process", memoryBounded)

    // 4. Two processes.
    const twoIds = yield* startBatch("two")
    const twoWaiting = yield* Effect.scoped(drain(2, allIn("two", "AWAITING_CONDENSER_INPUT", options.sagas)))
    yield* signalBatch(twoIds)
    const twoCompleted = yield* Effect.scoped(drain(2, allIn("two", "COMPLETED", options.sagas)))
    const twoProcesses = peakOf(2, options.sagas, [twoWaiting.window, twoCompleted.window])
    yield* Effect.logWarning("end-to-end, two processes", twoProcesses)

    return {
      sagas: options.sagas,
      rssIdleMb,
      rssActiveMb: oneWaiting.rssActiveMb,
      heapUsedActiveMb: oneWaiting.heapUsedMb,
      activeSagas: oneWaiting.activeSagas,
      memoryBounded,
      oneProcess: oneCompleted.peak,
      twoProcesses,
      latency: oneCompleted.latency
    } satisfies ServiceResult
  }).pipe(
    Effect.scoped,
    // The engine here only starts and signals sagas: its per-saga info logs would cost this process CPU the
    // service needs (the machine's cores are shared); the bench's own results are logged at warning.
    Effect.provideService(References.MinimumLogLevel, "Warn"),
    Effect.provide(
      Engine.layer.pipe(
        Layer.provideMerge(SagaRegistry.layer(definitions)),
        Layer.provideMerge(PgSagaStore.layerDatabase(env.config, { maxConnections: 16 }))
      )
    ),
    Effect.orDie
  )
