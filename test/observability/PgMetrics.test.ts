/**
 * The scrape-time gauges on PostgreSQL: active and stuck sagas from the store's query, outbox lag, and the
 * service's connections from `pg_stat_activity`.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { prometheusText, StuckThreshold } from "../../src/observability/Metrics.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"
import { parsePrometheus, sampleValue } from "./prometheus.ts"
import { layerMetricRegistry } from "./support.ts"

const mesh = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh", payload: {} }

layer(TestDatabase.layerStore().pipe(Layer.provideMerge(layerMetricRegistry)), {
  excludeTestServices: true,
  timeout: "60 seconds"
})("Metrics on PostgreSQL", (it) => {
  it.effect("reads active and stuck sagas, the outbox and the service's connections at scrape time", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const sagaType = `METRICS_${crypto.randomUUID().slice(0, 8).toUpperCase()}`
      yield* Effect.forEach([1, 2], () => store.create({ sagaType, state: "MESHING", context: {}, messages: [mesh] }))
      const labels = { saga_type: sagaType, status: "RUNNING", state: "MESHING" }

      const families = parsePrometheus(yield* prometheusText)
      assert.strictEqual(sampleValue(families, "orchestrator_store_up"), 1)
      assert.strictEqual(sampleValue(families, "orchestrator_sagas_active", labels), 2)
      assert.strictEqual(sampleValue(families, "orchestrator_sagas_stuck", labels), 0)
      assert.isAtLeast(sampleValue(families, "orchestrator_outbox_pending_messages") ?? 0, 2)
      assert.isAbove(sampleValue(families, "orchestrator_outbox_lag_seconds") ?? 0, 0)
      // The scrape's own query is running on one of the service's connections.
      assert.isAtLeast(sampleValue(families, "orchestrator_db_connections", { state: "active" }) ?? 0, 1)

      const immediately = parsePrometheus(
        yield* prometheusText.pipe(Effect.provideService(StuckThreshold, Duration.zero))
      )
      assert.strictEqual(sampleValue(immediately, "orchestrator_sagas_stuck", labels), 2)
    })
  )

  it.effect("reports the process: resident memory, CPU time, V8 heap and start time, as this process sees them", () =>
    Effect.gen(function* () {
      const families = parsePrometheus(yield* prometheusText)
      const memory = process.memoryUsage()
      const rss = sampleValue(families, "process_resident_memory_bytes") ?? 0
      // Read a moment apart: within a quarter of each other, and far from zero.
      assert.isAbove(rss, 10 * 1024 * 1024)
      assert.approximately(rss, memory.rss, memory.rss / 4)
      const heapUsed = sampleValue(families, "nodejs_heap_size_used_bytes") ?? 0
      assert.isAbove(heapUsed, 0)
      assert.isAtMost(heapUsed, sampleValue(families, "nodejs_heap_size_total_bytes") ?? 0)
      const cpuSeconds = sampleValue(families, "process_cpu_seconds_total") ?? 0
      const used = process.cpuUsage()
      assert.isAbove(cpuSeconds, 0)
      assert.isAtMost(cpuSeconds, (used.user + used.system) / 1e6)
      const started = sampleValue(families, "process_start_time_seconds") ?? 0
      assert.approximately(started, (Date.now() - process.uptime() * 1000) / 1000, 5)
    })
  )
})
