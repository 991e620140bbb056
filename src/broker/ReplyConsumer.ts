/**
 * Consumes workers' replies and heartbeats and hands them to the engine. A reply is acknowledged only after the
 * transaction that applied it committed; one that cannot be processed (malformed JSON, wrong shape, unknown saga,
 * parked saga) is dead-lettered with the reason, and counted; during a database outage it is held, unacknowledged,
 * and retried in place until the database is back.
 *
 * Each delivery is handled in a consumer span that continues the worker's trace when the reply carries a
 * `traceparent`, so the engine's span for the reply, and the next task, join that trace.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { AppConfig } from "../Config.ts"
import {
  defaultMessageLimits,
  type Inbound,
  inbound,
  isHeartbeatRoutingKey,
  type MessageLimits,
  Queues
} from "../domain/Messages.ts"
import * as Metrics from "../observability/Metrics.ts"
import * as TraceContext from "../observability/TraceContext.ts"
import { Engine } from "../saga/Engine.ts"
import { Broker, type Delivery, Disposition } from "./Broker.ts"

/** Dead-letters with `reason` in the header; `kind` is the metric's label. */
const deadLetter = (kind: Metrics.DeadLetterReason, reason: string) =>
  Metrics.countDeadLettered(kind).pipe(
    Effect.andThen(Effect.annotateCurrentSpan({ "reply.dead_letter_reason": kind })),
    Effect.as(Disposition.deadLetter(reason))
  )

const consumerSpan = (delivery: Delivery) => ({
  kind: "consumer" as const,
  parent: TraceContext.parentFromHeaders(delivery.headers),
  attributes: {
    "messaging.system": "rabbitmq",
    "messaging.operation.type": "process",
    "messaging.destination.name": Queues.replies,
    "messaging.rabbitmq.destination.routing_key": delivery.routingKey,
    "messaging.message.id": delivery.messageId ?? "none",
    "messaging.message.conversation_id": delivery.correlationId ?? "none"
  }
})

/**
 * A heartbeat is no step: one that cannot count (unknown saga, a task no longer awaited, a parked saga, the database
 * unavailable) is acknowledged and forgotten — the next one, or the step's timeout, takes over. Only a malformed one
 * is dead-lettered: a worker's bug is worth seeing.
 */
const handleHeartbeat = (messages: Inbound, delivery: Delivery) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    const decoded = yield* Effect.result(messages.decodeHeartbeat(delivery.body))
    if (decoded._tag === "Failure") {
      return yield* deadLetter("malformed", `malformed heartbeat: ${decoded.failure.message}`)
    }
    const heartbeat = decoded.success
    const recorded = yield* engine
      .heartbeat(heartbeat)
      .pipe(Effect.catch((error) => Effect.logDebug("heartbeat not recorded", error.message).pipe(Effect.as(false))))
    if (!recorded) yield* Effect.logDebug("heartbeat for a task no longer awaited: ignored")
    return Disposition.ack
  }).pipe(Effect.withSpan("ReplyConsumer.heartbeat", consumerSpan(delivery)))

/** Between attempts to apply a reply while the database is unavailable: from 200 ms, doubling, at most 5 s. */
const holdSchedule = Schedule.exponential("200 millis").pipe(
  Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(5))))
)

/**
 * A reply the database cannot take now is held — unacknowledged, retried in place — not requeued: a requeue counts
 * as a delivery, and a quorum queue's delivery limit would dead-let the reply during a long outage. It stays held
 * until the database is back or the consumer stops (then RabbitMQ hands it out again, its count unchanged).
 */
const holdWhileUnavailable = (apply: ReturnType<Engine["Service"]["reply"]>) =>
  apply.pipe(
    Effect.tapError((error) =>
      error._tag === "StoreUnavailable"
        ? Effect.logWarning("reply held: database unavailable; retrying it in place", error.message)
        : Effect.void
    ),
    Effect.retry({ while: (error) => error._tag === "StoreUnavailable", schedule: holdSchedule }),
    // The schedule never ends: an outage cannot get past it.
    Effect.catchTag("StoreUnavailable", (error) => Effect.die(error))
  )

const handleReply = (messages: Inbound, delivery: Delivery) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    const decoded = yield* Effect.result(messages.decodeReply(delivery.body))
    if (decoded._tag === "Failure") {
      return yield* deadLetter("malformed", `malformed reply: ${decoded.failure.message}`)
    }
    const reply = decoded.success
    yield* Effect.annotateCurrentSpan({ "saga.id": reply.sagaId, "task.id": reply.taskId })
    return yield* engine.reply(reply).pipe(
      holdWhileUnavailable,
      Effect.as(Disposition.ack),
      Effect.catchTags({
        SagaNotFound: () => deadLetter("unknown_saga", `unknown saga ${reply.sagaId}`),
        UnknownDefinitionVersion: (e) => deadLetter("unknown_definition_version", e.message),
        CorruptProgress: (e) => deadLetter("corrupt_progress", e.message),
        ContextTooLarge: (e) => deadLetter("context_too_large", `reply rejected: ${e.message}`),
        InvalidSagaData: (e) => deadLetter("invalid_saga_data", `reply rejected: ${e.message}`),
        // Cannot happen without an expected version; taken again from the queue, it is decided afresh.
        VersionConflict: () => Effect.succeed(Disposition.requeue)
      }),
      Effect.annotateLogs({ sagaId: reply.sagaId, taskId: reply.taskId })
    )
  }).pipe(
    Effect.tap((disposition) => Effect.annotateCurrentSpan("reply.disposition", disposition._tag)),
    Effect.withSpan("ReplyConsumer.handle", consumerSpan(delivery)),
    Effect.annotateLogs({
      component: "reply-consumer",
      messageId: delivery.messageId ?? "none",
      ...(delivery.correlationId === undefined ? {} : { correlationId: delivery.correlationId })
    })
  )

/** A reply, or a heartbeat (routing key `<taskType>.heartbeat`), under the limits `messages` was made with. */
export const handle = (messages: Inbound) => (delivery: Delivery) => {
  const bytes = Buffer.byteLength(delivery.body, "utf8")
  const limit = messages.limits.bodyBytes
  if (bytes > limit) {
    return deadLetter("too_large", `message of ${bytes} bytes, over the limit of ${limit}`).pipe(
      Effect.withSpan("ReplyConsumer.handle", consumerSpan(delivery))
    )
  }
  return isHeartbeatRoutingKey(delivery.routingKey)
    ? handleHeartbeat(messages, delivery)
    : handleReply(messages, delivery)
}

export interface ConsumerSettings {
  readonly prefetch: number
  readonly limits: MessageLimits
}

export const defaultConsumerSettings: ConsumerSettings = { prefetch: 50, limits: defaultMessageLimits }

export const run = (settings: Partial<ConsumerSettings> = {}) => {
  const { prefetch, limits } = { ...defaultConsumerSettings, ...settings }
  const handler = handle(inbound(limits))
  return Effect.flatMap(Broker, (broker) =>
    Metrics.registerDeadLetterReasons.pipe(Effect.andThen(broker.consume(Queues.replies, handler, { prefetch })))
  )
}

/** Keeps consuming, under the configured limits: when the broker goes away it starts again once it is back. */
export const layer = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    Layer.effectDiscard(
      Effect.forkScoped(
        run({ limits: config.messageLimits }).pipe(
          Effect.tapError((error) => Effect.logWarning("reply consumer interrupted; resuming", error.message)),
          Effect.retry(Schedule.spaced("1 second"))
        )
      )
    )
  )
)
