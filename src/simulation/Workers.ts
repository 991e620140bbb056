/**
 * Simulated workers for the reference saga, for the embedded mode and for tests. They take every task
 * from `orchestrator.tasks` and reply as real workers would, with configurable latency, failures, duplicate and late
 * replies, or a scripted plan per task. Time is `Effect.sleep` and chance is the `Random` service, so `TestClock`
 * and a seed make a run reproducible.
 */
import { Context, type Duration, Effect, FiberSet, Layer, Random } from "effect"
import { Broker, type BrokerUnavailable, type Delivery, Disposition, type OutgoingMessage } from "../broker/Broker.ts"
import { MemoryBroker } from "../broker/MemoryBroker.ts"
import {
  type CancellationNotice,
  decodeCancellation,
  decodeTask,
  Exchanges,
  isCancellationRoutingKey,
  type ReplyMessage,
  type TaskError,
  type TaskMessage
} from "../domain/Messages.ts"

export type ReplyResult = NonNullable<ReplyMessage["result"]>

/** What a worker does with one task. `Silent`: it never replies, as a worker that lost the task. */
export type Outcome =
  | { readonly _tag: "Succeed"; readonly result?: ReplyResult | undefined }
  | { readonly _tag: "Fail"; readonly error: TaskError }
  | { readonly _tag: "Silent" }

export interface Plan {
  readonly outcome: Outcome
  /** Time from receiving the task to replying; default: the configured latency. */
  readonly latency?: Duration.Input | undefined
  /** Publish the reply twice with the same message id, as a publisher retrying after a lost confirm would. */
  readonly duplicate?: boolean | undefined
  /** Publish the reply once more, as a new message, this long after the first one. */
  readonly lateReplyAfter?: Duration.Input | undefined
}

export type PlanOptions = Omit<Plan, "outcome">

export const Plan = {
  /** Succeeds with `result`, or without it with the simulated references for the task type. */
  succeed: ({ result, ...options }: PlanOptions & { readonly result?: ReplyResult | undefined } = {}): Plan => ({
    ...options,
    outcome: { _tag: "Succeed", result }
  }),
  fail: ({
    retryable,
    code,
    message,
    ...options
  }: PlanOptions & { readonly retryable: boolean; readonly code?: string; readonly message?: string }): Plan => ({
    ...options,
    outcome: {
      _tag: "Fail",
      error: {
        code: code ?? (retryable ? "SIMULATED_TRANSIENT_FAILURE" : "SIMULATED_FATAL_FAILURE"),
        message: message ?? (retryable ? "simulated transient failure" : "simulated fatal failure"),
        retryable
      }
    }
  }),
  silent: (options: PlanOptions = {}): Plan => ({ ...options, outcome: { _tag: "Silent" } })
}

/** How workers behave when no script decides. Rates are probabilities in [0, 1]. */
export interface Behaviour {
  /** default 200 ms */
  readonly latency?: Duration.Input | undefined
  /** default 0 */
  readonly failureRate?: number | undefined
  /** Share of failures that are retryable; default 1 (a fatal failure must be asked for). */
  readonly retryableRate?: number | undefined
  /** default 0 */
  readonly duplicateRate?: number | undefined
  /** default 0 */
  readonly lateReplyRate?: number | undefined
  /** default 30 s */
  readonly lateReplyDelay?: Duration.Input | undefined
}

export interface Options extends Behaviour {
  /** The queue the workers bind to `orchestrator.tasks` with `#`; default `simulated.workers`. */
  readonly queue?: string | undefined
  /** Tasks handled at once; default 50. */
  readonly prefetch?: number | undefined
  /** Per task type, over the global behaviour. */
  readonly byTaskType?: Readonly<Record<string, Behaviour>> | undefined
  /** Decides a task's plan; `undefined` leaves it to the configured behaviour. */
  readonly script?: ((task: TaskMessage) => Plan | undefined) | undefined
  /** Seeds `Random` for the workers, so the same tasks get the same outcomes. */
  readonly seed?: string | number | undefined
}

/** One task delivery and what the workers did with it. */
export interface HandledTask {
  readonly messageId: string | undefined
  readonly redelivered: boolean
  /** undefined when the message was malformed (it was dead-lettered). */
  readonly task: TaskMessage | undefined
  /** `repeated`: the task id was done before, so its reply was sent again without doing the work again. */
  readonly outcome: "succeeded" | "failed" | "silent" | "repeated" | "malformed"
}

export interface SentReply {
  readonly messageId: string
  readonly reply: ReplyMessage
  /** `duplicate`: the same message again; `late`: a new message later; `repeat`: for a task received again. */
  readonly kind: "reply" | "duplicate" | "late" | "repeat"
}

/** What the simulated workers did, for assertions. */
export class Workers extends Context.Service<
  Workers,
  {
    /** Every task delivery, in the order handled, including redeliveries, duplicates and malformed ones. */
    readonly handled: Effect.Effect<ReadonlyArray<HandledTask>>
    /** Every reply published, in order. */
    readonly sent: Effect.Effect<ReadonlyArray<SentReply>>
    /** Every cancellation notice received, in order. */
    readonly cancellations: Effect.Effect<ReadonlyArray<CancellationNotice>>
  }
>()("saga-orchestrator/simulation/Workers") {}

export const defaultQueue = "simulated.workers"

const hex = (random: Random.Random, length: number) =>
  Array.from({ length }, () => Math.floor(random.nextDoubleUnsafe() * 16).toString(16)).join("")

const uuid = (random: Random.Random) =>
  `${hex(random, 8)}-${hex(random, 4)}-4${hex(random, 3)}-a${hex(random, 3)}-${hex(random, 12)}`

/** GitLab-style references, never data; `undefined` for a task type no simulated worker knows. */
const simulatedResult = (task: TaskMessage, random: Random.Random): ReplyResult | undefined => {
  switch (task.taskType) {
    case "gitlab.prepare_branch":
      return { branch: `calc/${task.sagaId.slice(0, 8)}`, commitSha: hex(random, 40) }
    case "geometry.mesh":
      return { meshRef: `meshes/${task.taskId}.msh` }
    case "solver.balance": {
      const runId = `run-${hex(random, 12)}`
      return { runId, resultsRef: `results/${runId}/balance.json` }
    }
    case "gitlab.publish_results":
      return { commitSha: hex(random, 40), resultsPath: `results/${task.sagaId}/balance.json` }
    case "gitlab.delete_branch":
    case "solver.discard_run":
      return {}
    default:
      return undefined
  }
}

const toReply = (task: TaskMessage, outcome: Exclude<Outcome, { _tag: "Silent" }>, random: Random.Random) => {
  const ids = { sagaId: task.sagaId, taskId: task.taskId }
  if (outcome._tag === "Fail") return { ...ids, outcome: "failed", error: outcome.error } satisfies ReplyMessage
  const result = outcome.result ?? simulatedResult(task, random)
  if (result === undefined) {
    const error = { code: "UNKNOWN_TASK_TYPE", message: `no worker for ${task.taskType}`, retryable: false }
    return { ...ids, outcome: "failed", error } satisfies ReplyMessage
  }
  return { ...ids, outcome: "succeeded", result } satisfies ReplyMessage
}

const traceHeaders = ["traceparent", "tracestate"]

export const make = Effect.fnUntraced(function* (options: Options = {}) {
  const broker = yield* Broker
  const handled: Array<HandledTask> = []
  const sent: Array<SentReply> = []
  const cancellations: Array<CancellationNotice> = []
  // Replies by task id: a task received again (redelivered, duplicated) gets the same answer, as from an
  // idempotent worker. Stored before publishing, so a reply that failed to go out is sent on redelivery.
  const done = new Map<string, ReplyMessage | "silent">()

  const behaviour = (taskType: string) => {
    const merged = { ...options, ...options.byTaskType?.[taskType] }
    return {
      latency: merged.latency ?? "200 millis",
      failureRate: merged.failureRate ?? 0,
      retryableRate: merged.retryableRate ?? 1,
      duplicateRate: merged.duplicateRate ?? 0,
      lateReplyRate: merged.lateReplyRate ?? 0,
      lateReplyDelay: merged.lateReplyDelay ?? "30 seconds"
    }
  }

  const randomPlan = (task: TaskMessage, random: Random.Random): Plan => {
    const b = behaviour(task.taskType)
    // Always four draws per task, so one task's outcome does not shift the draws of the next.
    const [fails, retryable, duplicate, late] = Array.from({ length: 4 }, () => random.nextDoubleUnsafe())
    const options: PlanOptions = {
      duplicate: (duplicate ?? 1) < b.duplicateRate,
      lateReplyAfter: (late ?? 1) < b.lateReplyRate ? b.lateReplyDelay : undefined
    }
    return (fails ?? 1) < b.failureRate
      ? Plan.fail({ ...options, retryable: (retryable ?? 1) < b.retryableRate })
      : Plan.succeed(options)
  }

  const publish = (
    task: TaskMessage,
    delivery: Delivery,
    reply: ReplyMessage,
    kind: SentReply["kind"],
    messageId: string
  ) => {
    const message: OutgoingMessage = {
      exchange: Exchanges.replies,
      routingKey: task.taskType,
      messageId,
      correlationId: delivery.correlationId ?? reply.sagaId,
      headers: Object.fromEntries(
        Object.entries(delivery.headers).filter(([name]) => traceHeaders.includes(name.toLowerCase()))
      ),
      body: JSON.stringify(reply)
    }
    return broker.publish([message]).pipe(Effect.tap(() => Effect.sync(() => sent.push({ messageId, reply, kind }))))
  }

  const perform = Effect.fnUntraced(function* (
    delivery: Delivery,
    task: TaskMessage,
    late: FiberSet.FiberSet<void, never>
  ): Effect.fn.Return<HandledTask["outcome"], BrokerUnavailable> {
    const random = yield* Random.Random
    const previous = done.get(task.taskId)
    if (previous !== undefined) {
      if (previous !== "silent") yield* publish(task, delivery, previous, "repeat", uuid(random))
      return "repeated"
    }
    const plan = options.script?.(task) ?? randomPlan(task, random)
    yield* Effect.sleep(plan.latency ?? behaviour(task.taskType).latency)
    if (plan.outcome._tag === "Silent") {
      done.set(task.taskId, "silent")
      return "silent"
    }
    const reply = toReply(task, plan.outcome, random)
    done.set(task.taskId, reply)
    const messageId = uuid(random)
    yield* publish(task, delivery, reply, "reply", messageId)
    if (plan.duplicate === true) yield* publish(task, delivery, reply, "duplicate", messageId)
    const lateAfter = plan.lateReplyAfter
    if (lateAfter !== undefined) {
      const lateId = uuid(random)
      yield* FiberSet.run(
        late,
        Effect.sleep(lateAfter).pipe(
          Effect.andThen(publish(task, delivery, reply, "late", lateId)),
          Effect.catch((error) => Effect.logWarning("simulated worker could not send a late reply", error.message))
        )
      )
    }
    return reply.outcome
  })

  /** A notice that a task was abandoned: simulated work has nothing to stop, so it is only recorded. */
  const cancelled = (delivery: Delivery) =>
    decodeCancellation(delivery.body).pipe(
      Effect.matchEffect({
        onFailure: (error) => Effect.succeed(Disposition.deadLetter(`malformed cancellation: ${error.message}`)),
        onSuccess: (notice) => Effect.sync(() => cancellations.push(notice)).pipe(Effect.as(Disposition.ack))
      })
    )

  const handle = (late: FiberSet.FiberSet<void, never>) => (delivery: Delivery) => {
    if (isCancellationRoutingKey(delivery.routingKey)) return cancelled(delivery)
    const record = (task: TaskMessage | undefined, outcome: HandledTask["outcome"]) =>
      Effect.sync(() =>
        handled.push({ messageId: delivery.messageId, redelivered: delivery.redelivered, task, outcome })
      )
    return decodeTask(delivery.body).pipe(
      Effect.matchEffect({
        onFailure: (error) =>
          record(undefined, "malformed").pipe(Effect.as(Disposition.deadLetter(`malformed task: ${error.message}`))),
        onSuccess: (task) =>
          perform(delivery, task, late).pipe(
            Effect.flatMap((outcome) => record(task, outcome)),
            Effect.as(Disposition.ack),
            // Back off before the task comes back, or an unavailable broker would make this a hot loop.
            Effect.catch((error) =>
              Effect.logWarning("simulated worker could not reply; requeueing the task", error.message).pipe(
                Effect.andThen(Effect.sleep("1 second")),
                Effect.as(Disposition.requeue)
              )
            )
          )
      })
    )
  }

  /** Consumes tasks from `queue` until interrupted; late replies still pending are dropped then. */
  const run = (queue: string): Effect.Effect<never, BrokerUnavailable> =>
    Effect.scoped(
      Effect.flatMap(FiberSet.make<void, never>(), (late) =>
        broker.consume(queue, handle(late), { prefetch: options.prefetch ?? 50 })
      )
    ).pipe((effect) => (options.seed === undefined ? effect : Random.withSeed(effect, options.seed)))

  const service = Workers.of({
    handled: Effect.sync(() => [...handled]),
    sent: Effect.sync(() => [...sent]),
    cancellations: Effect.sync(() => [...cancellations])
  })
  return { service, run }
})

/**
 * Simulated workers on the in-memory broker: binds their queue to `orchestrator.tasks` with `#` and consumes it in
 * the background for the life of the layer.
 */
export const layer = (options: Options = {}): Layer.Layer<Workers, BrokerUnavailable, Broker | MemoryBroker> =>
  Layer.effect(
    Workers,
    Effect.gen(function* () {
      const queue = options.queue ?? defaultQueue
      yield* MemoryBroker.use((memory) => memory.bind(queue, Exchanges.tasks, "#"))
      const { service, run } = yield* make(options)
      yield* run(queue).pipe(
        Effect.tapCause((cause) => Effect.logError("simulated workers stopped", cause)),
        Effect.forkScoped
      )
      return service
    })
  )
