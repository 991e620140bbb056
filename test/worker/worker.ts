/**
 * A test worker, run as its own process: consumes tasks from `orchestrator.tasks` on RabbitMQ, applies each task's
 * effect once — recorded by task id in an append-only file, so a redelivered or duplicated task is detected and not
 * applied again — and replies as its scripted plan says. The plan is read from the task's `repo`, which every
 * BALANCE_CALCULATION task carries: `<prefix>/<plan>/<n>` with plan one of
 *
 *   ok              every task succeeds
 *   retry-<step>    the first attempt of that step fails retryably, later ones succeed
 *   fatal-<step>    that step fails for good (the saga compensates)
 *   duplicate       every reply is published twice (same message id) and once more as a new message
 *   late            every reply is published again 2 s later
 *   hang-<step>     that step's task is taken and never answered (as a worker still working on it)
 *
 * with <step> one of prepare, mesh, solver, publish.
 *
 * Cancellation notices (routing key `<task type>.cancel`) are appended, one JSON line each, to
 * `<effects file>.cancellations`.
 *
 * Once a reply's publish is confirmed, a line of `ReplyTiming` is appended to `<effects file>.timings` (the bench
 * measures the orchestrator's turnaround from it). It is a file of its own because the effects line must be written
 * before the reply goes out, when the confirm has not happened yet.
 *
 * Usage: node test/worker/worker.ts <amqp url without password> <password file> <effects file> [prefetch]
 * It stops on SIGTERM / SIGINT.
 */
import { appendFileSync, existsSync, readFileSync } from "node:fs"
import * as Amqp from "amqplib"
import { Effect, Redacted } from "effect"
import * as AmqpBroker from "../../src/broker/AmqpBroker.ts"
import { Broker, type Delivery, Disposition } from "../../src/broker/Broker.ts"
import {
  decodeCancellation,
  decodeTask,
  Exchanges,
  isCancellationRoutingKey,
  type ReplyMessage,
  type TaskMessage
} from "../../src/domain/Messages.ts"
import { runMain } from "../../src/runMain.ts"

export const queue = "test.worker.tasks"

const steps: Record<string, string> = {
  prepare: "gitlab.prepare_branch",
  mesh: "geometry.mesh",
  solver: "solver.balance",
  publish: "gitlab.publish_results"
}

/** One line of the effects file: a task whose effect was applied. */
export interface AppliedEffect {
  readonly taskId: string
  readonly sagaId: string
  readonly taskType: string
  readonly attempt: number
  readonly outcome: "succeeded" | "failed"
}

/** One line of the timings file: when a task reached the worker, and when RabbitMQ confirmed its reply. */
export interface ReplyTiming {
  readonly taskId: string
  readonly sagaId: string
  readonly taskType: string
  /** Epoch milliseconds, sub-millisecond precision. */
  readonly deliveredAt: number
  readonly repliedAt: number
}

export const timingsFileOf = (effectsFile: string) => `${effectsFile}.timings`
export const cancellationsFileOf = (effectsFile: string) => `${effectsFile}.cancellations`

const epochMillis = () => performance.timeOrigin + performance.now()

const planOf = (task: TaskMessage) => {
  const repo = typeof task.payload.repo === "string" ? task.payload.repo : ""
  return repo.split("/")[1] ?? "ok"
}

/** `hang-<step>`: the task of that step is never answered. */
const hangs = (task: TaskMessage) => {
  const [kind, step] = planOf(task).split("-")
  return kind === "hang" && step !== undefined && steps[step] === task.taskType
}

const resultFor = (task: TaskMessage): Record<string, string> => {
  const short = task.sagaId.slice(-12)
  switch (task.taskType) {
    case "gitlab.prepare_branch":
      return { branch: `calc/${short}`, commitSha: "c".repeat(40) }
    case "geometry.mesh":
      return { meshRef: `meshes/${short}.msh` }
    case "solver.balance":
      return { runId: `run-${short}`, resultsRef: `results/${short}/` }
    case "gitlab.publish_results":
      return { commitSha: "d".repeat(40) }
    default:
      return {}
  }
}

/** The reply the plan calls for; the same for the same task every time it is asked. */
export const replyFor = (task: TaskMessage): ReplyMessage => {
  const plan = planOf(task)
  const [kind, step] = plan.split("-")
  const ids = { sagaId: task.sagaId, taskId: task.taskId }
  if (step !== undefined && steps[step] === task.taskType) {
    if (kind === "fatal") {
      return { ...ids, outcome: "failed", error: { code: "scripted_fatal", message: plan, retryable: false } }
    }
    if (kind === "retry" && task.attempt === 1) {
      return { ...ids, outcome: "failed", error: { code: "scripted_retry", message: plan, retryable: true } }
    }
  }
  return { ...ids, outcome: "succeeded", result: resultFor(task) }
}

interface Arguments {
  readonly url: string
  readonly password: Redacted.Redacted
  readonly effectsFile: string
  readonly prefetch: number
}

const run = ({ url, password, effectsFile, prefetch }: Arguments) =>
  Effect.gen(function* () {
    // Declares this worker's queue, bound to every task type, before consuming (the exchange may not exist yet).
    yield* Effect.promise(async () => {
      const target = new URL(url)
      target.password = encodeURIComponent(Redacted.value(password))
      const connection = await Amqp.connect(target.toString(), { noDelay: true })
      const channel = await connection.createChannel()
      await channel.assertExchange(Exchanges.tasks, "topic", { durable: true })
      await channel.assertQueue(queue, { durable: true, arguments: { "x-queue-type": "quorum" } })
      await channel.bindQueue(queue, Exchanges.tasks, "#")
      await connection.close()
    })

    // Task ids whose effect was applied, from this run and earlier ones (the worker may have been restarted).
    const applied = new Set<string>(
      existsSync(effectsFile)
        ? readFileSync(effectsFile, "utf8")
            .split("\n")
            .filter(Boolean)
            .map((line) => (JSON.parse(line) as AppliedEffect).taskId)
        : []
    )
    let repeated = 0
    const broker = yield* Broker

    const send = (task: TaskMessage, delivery: Delivery, reply: ReplyMessage, messageId: string) =>
      broker.publish([
        {
          exchange: Exchanges.replies,
          routingKey: task.taskType,
          messageId,
          correlationId: delivery.correlationId ?? task.sagaId,
          headers: delivery.headers.traceparent === undefined ? {} : { traceparent: delivery.headers.traceparent },
          body: JSON.stringify(reply)
        }
      ])

    const handle = (delivery: Delivery) =>
      Effect.gen(function* () {
        const deliveredAt = epochMillis()
        if (isCancellationRoutingKey(delivery.routingKey)) {
          const notice = yield* Effect.result(decodeCancellation(delivery.body))
          if (notice._tag === "Failure") return Disposition.deadLetter(`malformed notice: ${notice.failure.message}`)
          appendFileSync(cancellationsFileOf(effectsFile), `${JSON.stringify(notice.success)}\n`)
          return Disposition.ack
        }
        const decoded = yield* Effect.result(decodeTask(delivery.body))
        if (decoded._tag === "Failure") return Disposition.deadLetter(`malformed task: ${decoded.failure.message}`)
        const task = decoded.success
        if (hangs(task)) return Disposition.ack
        const reply = replyFor(task)
        if (applied.has(task.taskId)) {
          repeated += 1
        } else {
          // The effect is recorded before the reply goes out: a crash in between replies again, never applies again.
          const line: AppliedEffect = {
            taskId: task.taskId,
            sagaId: task.sagaId,
            taskType: task.taskType,
            attempt: task.attempt,
            outcome: reply.outcome
          }
          appendFileSync(effectsFile, `${JSON.stringify(line)}\n`)
          applied.add(task.taskId)
        }
        const messageId = `reply-${task.taskId}`
        yield* send(task, delivery, reply, messageId)
        const timing: ReplyTiming = {
          taskId: task.taskId,
          sagaId: task.sagaId,
          taskType: task.taskType,
          deliveredAt,
          repliedAt: epochMillis()
        }
        appendFileSync(timingsFileOf(effectsFile), `${JSON.stringify(timing)}\n`)
        const plan = planOf(task)
        if (plan === "duplicate") {
          yield* send(task, delivery, reply, messageId)
          yield* send(task, delivery, reply, `${messageId}-again`)
        }
        if (plan === "late") {
          yield* Effect.forkDetach(
            send(task, delivery, reply, `${messageId}-late`).pipe(Effect.delay("2 seconds"), Effect.ignore)
          )
        }
        return Disposition.ack
      }).pipe(Effect.catch(() => Effect.succeed(Disposition.requeue)))

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => console.log(JSON.stringify({ applied: applied.size, repeated })))
    )
    return yield* broker.consume(queue, handle, { prefetch })
  })

if (import.meta.main) {
  const [url, passwordFile, effectsFile, prefetch] = process.argv.slice(2)
  if (url === undefined || passwordFile === undefined || effectsFile === undefined) {
    console.error("usage: worker.ts <amqp url without password> <password file> <effects file> [prefetch]")
    process.exit(2)
  }
  const args: Arguments = {
    url,
    password: Redacted.make(readFileSync(passwordFile, "utf8").trim()),
    effectsFile,
    prefetch: Number(prefetch ?? 50)
  }
  const broker = AmqpBroker.layerConfig({
    url,
    password: args.password,
    connectionName: "test-worker",
    reconnectInitialDelay: "100 millis",
    reconnectMaxDelay: "1 second"
  })
  Effect.scoped(run(args)).pipe(Effect.provide(broker), runMain)
}
