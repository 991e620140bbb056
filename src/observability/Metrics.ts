/**
 * Prometheus metrics. Counters and the step-latency histogram live in Effect's metric registry and move
 * where things happen: the engine counts a transition once it committed (never a retried attempt), the reply
 * consumer counts what it dead-letters. Gauges of the store's state are read when Prometheus scrapes, so they are
 * never stale and never keep series of states no saga is in any more. `prometheusText` renders both.
 *
 * No label carries a saga id, correlation id, context value or anything secret: only saga types, statuses, states,
 * step names and reason kinds, all bounded by the definitions and this code.
 */
import { Context, Duration, Effect, Metric, Option } from "effect"
import { SqlClient } from "effect/sql"
import type { SagaStatus } from "../domain/Saga.ts"
import { SagaStore } from "../store/SagaStore.ts"
import { type Family, fromSnapshot, gaugeSamples, render } from "./Metrics/exposition.ts"

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

export const sagasStarted = counter("orchestrator_sagas_started_total", "Sagas started, by saga type.")
export const sagasCompleted = counter("orchestrator_sagas_completed_total", "Sagas that ended COMPLETED, by saga type.")
export const sagasFailed = counter(
  "orchestrator_sagas_failed_total",
  "Sagas that ended FAILED (after compensation), by saga type."
)
export const sagasCancelled = counter("orchestrator_sagas_cancelled_total", "Sagas that ended CANCELLED, by saga type.")

export const stepLatency = Metric.histogram("orchestrator_step_latency_seconds", {
  description:
    "From a worker's reply arriving to the commit of the transition it caused (the next task in the outbox, a " +
    "back-off, compensation or the end), by saga type and the step (or compensation) replied to.",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
})

export const purgedSagas = counter(
  "orchestrator_purged_sagas_total",
  "Finished sagas deleted by retention, with their history, timers and ignored events."
)
export const purgedIdempotencyKeys = counter(
  "orchestrator_purged_idempotency_keys_total",
  "Idempotency keys deleted by retention."
)

export const repliesDeadLettered = counter(
  "orchestrator_replies_dead_lettered_total",
  "Replies the reply consumer dead-lettered, by reason."
)

/** Why a reply was dead-lettered; the metric's `reason` label. */
export type DeadLetterReason =
  | "too_large"
  | "malformed"
  | "unknown_saga"
  | "unknown_definition_version"
  | "corrupt_progress"
  | "context_too_large"
  | "invalid_saga_data"

export const deadLetterReasons: ReadonlyArray<DeadLetterReason> = [
  "too_large",
  "malformed",
  "unknown_saga",
  "unknown_definition_version",
  "corrupt_progress",
  "context_too_large",
  "invalid_saga_data"
]

const bySagaType = (metric: Metric.Metric<number, unknown>, sagaType: string) =>
  Metric.withAttributes(metric, { saga_type: sagaType })

export const countStarted = (sagaType: string) => Metric.update(bySagaType(sagasStarted, sagaType), 1)

const finished: Partial<Record<SagaStatus, Metric.Metric<number, unknown>>> = {
  COMPLETED: sagasCompleted,
  FAILED: sagasFailed,
  CANCELLED: sagasCancelled
}

/** Counts a saga that reached a final status; any other status counts nothing. */
export const countFinished = (sagaType: string, status: SagaStatus) => {
  const metric = finished[status]
  return metric === undefined ? Effect.void : Metric.update(bySagaType(metric, sagaType), 1)
}

export const observeStepLatency = (sagaType: string, step: string, seconds: number) =>
  Metric.update(Metric.withAttributes(stepLatency, { saga_type: sagaType, step }), seconds)

export const countPurged = (sagas: number, idempotencyKeys: number) =>
  Effect.all([Metric.update(purgedSagas, sagas), Metric.update(purgedIdempotencyKeys, idempotencyKeys)], {
    discard: true
  })

export const countDeadLettered = (reason: DeadLetterReason) =>
  Metric.update(Metric.withAttributes(repliesDeadLettered, { reason }), 1)

/** A saga type's counters from 0, so that `rate()` and `increase()` see its first saga. */
export const registerSagaType = (sagaType: string) =>
  Effect.forEach([sagasStarted, sagasCompleted, sagasFailed, sagasCancelled], (metric) =>
    Metric.update(bySagaType(metric, sagaType), 0)
  ).pipe(Effect.asVoid)

/** The dead-letter counter from 0 for every reason. */
export const registerDeadLetterReasons = Effect.forEach(deadLetterReasons, (reason) =>
  Metric.update(Metric.withAttributes(repliesDeadLettered, { reason }), 0)
).pipe(Effect.asVoid)

/** How long an active saga may go without a change before it counts as stuck (`ORCH_STUCK_THRESHOLD`). */
export const StuckThreshold = Context.Reference<Duration.Duration>("saga-orchestrator/observability/StuckThreshold", {
  defaultValue: () => Duration.minutes(15)
})

/** The `application_name` of the service's database connections (store/Database.ts). */
const applicationName = "saga-orchestrator"

const gauge = (name: string, help: string, samples: Family["samples"]): Family => ({
  name,
  help,
  type: "gauge",
  samples
})

/** The store's state, read now; `orchestrator_store_up` says whether that worked. */
const storeFamilies = (stuckAfter: Duration.Duration) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const summary = yield* store.summary
    const active = yield* store.countActive(stuckAfter)
    const labels = (row: (typeof active)[number]) =>
      [
        ["saga_type", row.sagaType],
        ["status", row.status],
        ["state", row.state]
      ] as const
    return [
      gauge("orchestrator_store_up", "1 when the state store answered this scrape, else 0.", [
        { labels: [], value: 1 }
      ]),
      gauge(
        "orchestrator_sagas",
        "Sagas in the state store, by status.",
        gaugeSamples(
          Object.entries(summary.byStatus),
          ([status]) => [["status", status]],
          ([, count]) => count
        )
      ),
      gauge(
        "orchestrator_sagas_active",
        "Active sagas (RUNNING, COMPENSATING), by saga type, status and state.",
        gaugeSamples(active, labels, (row) => row.count)
      ),
      gauge(
        "orchestrator_sagas_stuck",
        `Active sagas without a change for longer than ${Duration.format(stuckAfter)}, by saga type, status and state.`,
        gaugeSamples(active, labels, (row) => row.stuck)
      ),
      gauge("orchestrator_outbox_pending_messages", "Committed outbox messages not yet confirmed by the broker.", [
        { labels: [], value: summary.outboxPending }
      ]),
      gauge("orchestrator_outbox_lag_seconds", "Age of the oldest unpublished outbox message; 0 when none waits.", [
        { labels: [], value: summary.outboxLagMillis / 1000 }
      ])
    ]
  }).pipe(
    Effect.catch((error) =>
      Effect.logWarning("metrics: the state store did not answer", error.message).pipe(
        Effect.as([
          gauge("orchestrator_store_up", "1 when the state store answered this scrape, else 0.", [
            { labels: [], value: 0 }
          ])
        ])
      )
    )
  )

/**
 * Connections to PostgreSQL by state. @effect/sql-pg does not expose its pool's counters, so they are read from
 * `pg_stat_activity` by application name: the connections of every instance of the service (use `max`, not `sum`,
 * across instances). Absent without a SQL client (the in-memory store) or when the query fails.
 */
const connectionFamilies = Effect.serviceOption(SqlClient.SqlClient).pipe(
  Effect.flatMap(
    Option.match({
      onNone: () => Effect.succeed([]),
      onSome: (sql) =>
        sql<{ state: string; count: number }>`
          SELECT COALESCE(state, 'unknown') AS state, count(*)::int AS count FROM pg_stat_activity
          WHERE application_name = ${applicationName} AND datname = current_database()
          GROUP BY 1`.pipe(
          Effect.map((rows) => [
            gauge(
              "orchestrator_db_connections",
              `Connections to PostgreSQL named ${applicationName} (all instances of the service), by state.`,
              gaugeSamples(
                rows,
                (row) => [["state", String(row.state)]],
                (row) => Number(row.count)
              )
            )
          ]),
          Effect.orElseSucceed(() => [])
        )
    })
  )
)

/**
 * The process itself, under the names Prometheus' client libraries use: resident memory, CPU time, the V8 heap, and
 * when it started (so that a restart shows).
 */
const processFamilies = Effect.sync((): ReadonlyArray<Family> => {
  const memory = process.memoryUsage()
  const cpu = process.cpuUsage()
  const single = (value: number) => [{ labels: [], value }]
  return [
    gauge("process_resident_memory_bytes", "Resident memory size in bytes.", single(memory.rss)),
    {
      name: "process_cpu_seconds_total",
      help: "User and system CPU time spent in seconds.",
      type: "counter",
      samples: single((cpu.user + cpu.system) / 1e6)
    },
    gauge(
      "process_start_time_seconds",
      "Start time of the process since the Unix epoch in seconds.",
      single(Math.round(performance.timeOrigin / 1000))
    ),
    gauge("nodejs_heap_size_total_bytes", "V8 heap reserved, in bytes.", single(memory.heapTotal)),
    gauge("nodejs_heap_size_used_bytes", "V8 heap in use, in bytes.", single(memory.heapUsed)),
    gauge("nodejs_external_memory_bytes", "Memory of C++ objects bound to JavaScript objects, in bytes.", [
      { labels: [], value: memory.external }
    ])
  ]
})

/** The whole `/metrics` page: Effect's metric registry plus the gauges read from the store at this scrape. */
export const prometheusText: Effect.Effect<string, never, SagaStore> = Effect.gen(function* () {
  const stuckAfter = yield* StuckThreshold
  const [store, connections] = yield* Effect.all([storeFamilies(stuckAfter), connectionFamilies], {
    concurrency: 2
  })
  const registered = fromSnapshot(yield* Metric.snapshot)
  return render([...registered, ...store, ...connections, ...(yield* processFamilies)])
  // A scrape every few seconds is not worth a trace.
}).pipe(Effect.withTracerEnabled(false))
