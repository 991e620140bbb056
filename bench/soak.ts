/**
 * `npm run soak -- --minutes N [--rate S]`: steady load for N minutes (default 10) through RabbitMQ and the test worker,
 * on a database and vhost of its own: S sagas a second (default 20, about 100 steps a second) are started and
 * signalled as they wait, as clients and engineers would. Every 10 s it samples the service's resident memory, V8 heap
 * in use, step latency p99 over the interval, outbox lag and database connections, and prints them.
 *
 * It fails (exit 1) when, after a warm-up of a fifth of the run (at least a minute), resident memory grows by more
 * than 10% from the warm-up's end to the run's end, or the outbox lag keeps growing (every sample of the last
 * quarter above the one before, and the last one over 10 s) — a leak, or a service falling behind for good.
 */
import { join } from "node:path"
import { Effect, Layer, References } from "effect"
import { runMain } from "../src/runMain.ts"
import * as Engine from "../src/saga/Engine.ts"
import { SagaRegistry } from "../src/saga/Registry.ts"
import { definitions } from "../src/sagas/index.ts"
import * as PgSagaStore from "../src/store/PgSagaStore.ts"
import { freePort } from "../test/utils/freePort.ts"
import { acquire, type BenchEnv, nodeProcess, rssMb, serviceEnvironment } from "./env.ts"
import { bucketQuantiles, latencyBuckets } from "./latency.ts"
import { signalWaiting } from "./service.ts"

const flag = (name: string, fallback: number) => {
  const at = process.argv.indexOf(`--${name}`)
  const value = at === -1 ? Number.NaN : Number(process.argv[at + 1])
  return Number.isFinite(value) && value > 0 ? value : fallback
}

const minutes = flag("minutes", 10)
const rate = flag("rate", 20)
const sampleEverySeconds = 10

interface Sample {
  readonly second: number
  readonly rssMb: number
  readonly heapMb: number
  readonly p99Ms: number
  readonly outboxLagSeconds: number
  readonly dbConnections: number
  readonly completed: number
}

/** A gauge's value (summed over its labels) from the service's /metrics text. */
const gauge = (text: string, name: string) =>
  [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))].reduce((sum, m) => sum + Number(m[1]), 0)

const metricsText = (port: number) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/metrics`)
      .then((r) => r.text())
      .catch(() => "")
  )

const soak = (env: BenchEnv) =>
  Effect.gen(function* () {
    const engine = yield* Engine.Engine
    const worker = yield* nodeProcess(
      ["test/worker/worker.ts", env.amqpUrl, join(env.secrets, "amqp_password"), join(env.secrets, "effects.jsonl")],
      {}
    )
    yield* worker.waitFor(/consuming queue 'test.worker.tasks'/, 60_000)
    const port = yield* freePort
    const service = yield* nodeProcess(["src/main.ts"], serviceEnvironment(env, port))
    yield* service.waitFor(/consuming queue 'orchestrator.replies'/, 60_000)
    console.log(`soak: ${minutes} min at ${rate} sagas/s (about ${rate * 5} steps/s), service pid ${service.pid}`)

    yield* Effect.forkScoped(signalWaiting("200 millis"))

    // The clients: sagas at a steady rate.
    const begin = performance.now()
    yield* Effect.gen(function* () {
      for (let n = 0; ; n++) {
        const wait = begin + (n * 1000) / rate - performance.now()
        if (wait > 0) yield* Effect.sleep(wait)
        const input = {
          repo: `soak/ok/${n}`,
          baseBranch: "main",
          inputRef: `inputs/soak-${n}.yaml`,
          requestedBy: "soak"
        }
        yield* Effect.forkScoped(engine.start("BALANCE_CALCULATION", input).pipe(Effect.ignore))
      }
    }).pipe(Effect.forkScoped)

    const samples: Array<Sample> = []
    let buckets = yield* latencyBuckets(port)
    console.log("second  rss MB  heap MB  p99 ms  outbox lag s  db conns  completed")
    for (let second = sampleEverySeconds; second <= minutes * 60; second += sampleEverySeconds) {
      yield* Effect.sleep(begin + second * 1000 - performance.now())
      const text = yield* metricsText(port)
      const next = yield* latencyBuckets(port)
      const sample: Sample = {
        second,
        rssMb: yield* rssMb(service.pid),
        heapMb: gauge(text, "nodejs_heap_size_used_bytes") / 2 ** 20,
        p99Ms: bucketQuantiles(buckets, next).p99,
        outboxLagSeconds: gauge(text, "orchestrator_outbox_lag_seconds"),
        dbConnections: gauge(text, "orchestrator_db_connections"),
        completed: gauge(text, "orchestrator_sagas_completed_total")
      }
      buckets = next
      samples.push(sample)
      console.log(
        [
          String(sample.second).padStart(6),
          sample.rssMb.toFixed(0).padStart(6),
          sample.heapMb.toFixed(0).padStart(7),
          sample.p99Ms.toFixed(0).padStart(6),
          sample.outboxLagSeconds.toFixed(2).padStart(12),
          String(sample.dbConnections).padStart(8),
          String(sample.completed).padStart(10)
        ].join("  ")
      )
    }

    const warmUp = Math.max(60, (minutes * 60) / 5)
    const steady = samples.filter((s) => s.second >= warmUp)
    const first = steady[0]
    const last = steady.at(-1)
    const failures: Array<string> = []
    if (first !== undefined && last !== undefined && last.rssMb > first.rssMb * 1.1) {
      failures.push(`resident memory grew from ${first.rssMb.toFixed(0)} to ${last.rssMb.toFixed(0)} MB after warm-up`)
    }
    const lastQuarter = samples.slice(-Math.max(2, Math.floor(samples.length / 4)))
    const lagGrows = lastQuarter.every(
      (s, i) => i === 0 || s.outboxLagSeconds > (lastQuarter[i - 1]?.outboxLagSeconds ?? 0)
    )
    if (lagGrows && (lastQuarter.at(-1)?.outboxLagSeconds ?? 0) > 10) failures.push("the outbox lag kept growing")
    console.log(failures.length === 0 ? "soak passed" : `soak FAILED: ${failures.join("; ")}`)
    if (failures.length > 0) process.exitCode = 1
  }).pipe(
    Effect.provide(
      Engine.layer.pipe(
        Layer.provideMerge(SagaRegistry.layer(definitions)),
        Layer.provideMerge(PgSagaStore.layerDatabase(env.config, { maxConnections: 8 }))
      )
    )
  )

const program = Effect.flatMap(acquire, soak).pipe(Effect.provideService(References.MinimumLogLevel, "Warn"))

Effect.scoped(program).pipe(runMain)
