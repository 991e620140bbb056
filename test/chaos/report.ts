/**
 * What the chaos run reads back at the end, besides the sagas themselves: queue depths (through an admin connection
 * to the private node), outbox and timer rows and saga durations (as the superuser of the private cluster), and the
 * report it prints from all that.
 */
import { Effect, Schedule } from "effect"
import { Queues } from "../../src/domain/Messages.ts"
import { PrivateCluster } from "../utils/PrivateCluster.ts"
import { PrivateRabbit } from "../utils/PrivateRabbit.ts"
import { adminConnection } from "../utils/rabbit.ts"
import { queue as workerQueue } from "../worker/worker.ts"
import { type Check, formatChecks } from "./verify.ts"

export const seconds = (millis: number) => `${(millis / 1000).toFixed(1)} s`

/** Ready messages in the queues that must end empty. */
export const queueDepths = Effect.scoped(
  Effect.gen(function* () {
    const rabbit = yield* PrivateRabbit
    const connection = yield* adminConnection("/", rabbit.server)
    return yield* Effect.promise(async () => {
      const channel = await connection.createChannel()
      const depth = async (queue: string) => (await channel.checkQueue(queue)).messageCount
      const depths = {
        deadLetters: await depth(Queues.deadLetters),
        replies: await depth(Queues.replies),
        tasks: await depth(workerQueue)
      }
      await channel.close()
      return depths
    })
  })
)

export const count = (query: string) =>
  Effect.flatMap(PrivateCluster, (cluster) => cluster.superuser(query)).pipe(Effect.map((out) => Number(out.trim())))

/** After the last saga ended: until the outbox and the queues are empty (30 s at most), then the late copies. */
export const quiesce = Effect.gen(function* () {
  const outboxEmpty = count("SELECT count(*) FROM orchestrator.saga_outbox").pipe(Effect.map((n) => n === 0))
  const drained = queueDepths.pipe(Effect.map((d) => d.replies === 0 && d.tasks === 0))
  yield* Effect.all([outboxEmpty, drained]).pipe(
    Effect.repeat({ until: ([outbox, queues]) => outbox && queues, schedule: Schedule.spaced("250 millis") }),
    Effect.timeoutOption("30 seconds")
  )
  // The `late` plan sends its copies 2 s after the reply.
  yield* Effect.sleep("2500 millis")
})

/** Throughput and saga durations, as the database recorded them. */
export const sagaTimings = Effect.gen(function* () {
  const cluster = yield* PrivateCluster
  const row = yield* cluster.superuser(`
    SELECT count(*), extract(epoch FROM max(updated_at) - min(created_at)),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - created_at)),
           max(extract(epoch FROM updated_at - created_at))
    FROM orchestrator.saga_instances`)
  const [total = 0, span = 0, p50 = 0, p95 = 0, max = 0] = row.trim().split("|").map(Number)
  return { total, span, p50, p95, max }
})

export interface Report {
  readonly sagas: string
  readonly kills: number
  readonly rabbitDown: number
  readonly postgresDown: number
  readonly postgresStop: string
  readonly orchestratorStarts: number
  readonly failedStarts: number
  readonly workerStarts: number
  readonly workerRepeated: number | undefined
  readonly depths: { readonly deadLetters: number; readonly replies: number; readonly tasks: number }
  readonly setup: number
  readonly chaosSeconds: number
  readonly drain: number
  readonly timings: Effect.Success<typeof sagaTimings>
  readonly checks: ReadonlyArray<Check>
}

export const formatReport = (r: Report): string => {
  const { total, span, p50, p95, max } = r.timings
  return [
    "",
    "== chaos report",
    `  sagas         ${total} (${r.sagas})`,
    `  chaos         ${r.kills} orchestrator SIGKILLs; RabbitMQ down ${seconds(r.rabbitDown)}; ` +
      `PostgreSQL (${r.postgresStop}) down ${seconds(r.postgresDown)}`,
    `  processes     ${r.orchestratorStarts} orchestrator starts, ${r.failedStarts} of them failed while a server ` +
      `was down (and were retried); the worker started ${r.workerStarts} time(s)`,
    `  redelivered   the worker received ${r.workerRepeated ?? "?"} task(s) again and applied none twice`,
    `  queues        dead letters ${r.depths.deadLetters}, replies ${r.depths.replies}, tasks ${r.depths.tasks}`,
    `  timings       setup ${seconds(r.setup)}, chaos ${r.chaosSeconds} s, last saga ended ${seconds(r.drain)} ` +
      `after it; saga duration p50 ${p50.toFixed(1)} s, p95 ${p95.toFixed(1)} s, max ${max.toFixed(1)} s`,
    "",
    formatChecks(r.checks),
    "",
    `  throughput    ${total} sagas in ${span.toFixed(1)} s (first start to last end): ` +
      `${(total / Math.max(span, 0.001)).toFixed(2)} sagas/s`,
    ""
  ].join("\n")
}
