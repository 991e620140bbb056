/**
 * Latency at half rate, from two sides: the service's step-latency histogram (reply received → transition committed)
 * and the test worker's timings file (its reply confirmed → the saga's next task delivered to it).
 */
import { existsSync, readFileSync } from "node:fs"
import { Effect } from "effect"
import type { ReplyTiming } from "../test/worker/worker.ts"
import { percentile } from "./env.ts"

export interface Quantiles {
  readonly p50: number
  readonly p95: number
  readonly p99: number
}

export const quantiles = (values: ReadonlyArray<number>): Quantiles => {
  const sorted = [...values].sort((a, b) => a - b)
  return { p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99) }
}

/** Cumulative step-latency buckets of the service on `port`, summed over labels: le → count. */
export const latencyBuckets = (port: number) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}/metrics`)
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

export const bucketQuantiles = (before: Map<number, number>, after: Map<number, number>): Quantiles => ({
  p50: bucketQuantile(before, after, 0.5),
  p95: bucketQuantile(before, after, 0.95),
  p99: bucketQuantile(before, after, 0.99)
})

/** The worker's timings of the sagas in `sagaIds`: saga → task type → the first timing of that task. */
export const readTimings = (file: string, sagaIds: ReadonlySet<string>) =>
  Effect.sync(() => {
    const bySaga = new Map<string, Map<string, ReplyTiming>>()
    const text = existsSync(file) ? readFileSync(file, "utf8") : ""
    for (const line of text.split("\n")) {
      if (line === "") continue
      const timing = JSON.parse(line) as ReplyTiming
      if (!sagaIds.has(timing.sagaId)) continue
      const tasks = bySaga.get(timing.sagaId) ?? new Map<string, ReplyTiming>()
      if (!tasks.has(timing.taskType)) tasks.set(timing.taskType, timing)
      bySaga.set(timing.sagaId, tasks)
    }
    return bySaga
  })

export const taskCount = (bySaga: ReadonlyMap<string, ReadonlyMap<string, ReplyTiming>>) =>
  [...bySaga.values()].reduce((sum, tasks) => sum + tasks.size, 0)

/**
 * Consecutive tasks of a BALANCE_CALCULATION saga where the reply to the first leads straight to the second. Not
 * mesh → solver: between them the saga waits for condenser input.
 */
const followsReply = [
  ["gitlab.prepare_branch", "geometry.mesh"],
  ["solver.balance", "gitlab.publish_results"]
] as const

/**
 * Milliseconds from the worker's reply being confirmed to the saga's next task reaching the worker: the orchestrator
 * receiving the reply, committing the step, relaying the task with a confirm, plus RabbitMQ's two deliveries. An
 * upper bound of reply received → next task confirmed.
 */
export const replyToNextTaskMs = (bySaga: ReadonlyMap<string, ReadonlyMap<string, ReplyTiming>>) =>
  [...bySaga.values()].flatMap((tasks) =>
    followsReply.flatMap(([first, next]) => {
      const replied = tasks.get(first)
      const delivered = tasks.get(next)
      return replied === undefined || delivered === undefined ? [] : [delivered.deliveredAt - replied.repliedAt]
    })
  )
