/**
 * The RabbitMQ contract: the bodies of tasks, replies, heartbeats and cancellation notices, and the names of the topology.
 * External workers rely on these exact shapes.
 */
import { Schema } from "effect"

export const Exchanges = {
  tasks: "orchestrator.tasks",
  replies: "orchestrator.replies",
  deadLetter: "orchestrator.dlx"
} as const

export const Queues = {
  replies: "orchestrator.replies",
  deadLetters: "orchestrator.replies.dlq"
} as const

/** Header carrying why a message was dead-lettered. */
export const deadLetterReasonHeader = "x-orchestrator-reason"

const JsonObject = Schema.Record(Schema.String, Schema.Json)

/**
 * Sent to a worker, routing key = `taskType`. `taskId` is new for every attempt: a reply names it, and only a reply to
 * the awaited task id counts. `stepKey` is the same for every attempt of one step of one saga (and another for the
 * step's compensation): workers make side effects idempotent by it, so a retried attempt finds the work it already did.
 */
export const TaskMessage = Schema.Struct({
  sagaId: Schema.String,
  sagaType: Schema.String,
  taskId: Schema.String,
  taskType: Schema.String,
  stepKey: Schema.String,
  attempt: Schema.Int,
  replyTo: Schema.Literal(Queues.replies),
  /**
   * Present when the step expects heartbeats: an attempt with no heartbeat (or reply) for this long is given up as
   * timed out. Send one at least every third of it.
   */
  heartbeatTimeoutMs: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  payload: JsonObject
})
export type TaskMessage = typeof TaskMessage.Type

/** The routing key of the cancellation notices of a task type, on the tasks exchange. */
export const cancellationRoutingKey = (taskType: string) => `${taskType}.cancel`
export const isCancellationRoutingKey = (routingKey: string) => routingKey.endsWith(".cancel")

/**
 * Why the service stopped waiting for a task: the saga was cancelled, the attempt timed out or missed its heartbeat,
 * or an operator retried the step (a new attempt, with a new task id, replaces it).
 */
export const CancellationReason = Schema.Literals(["saga_cancelled", "timed_out", "heartbeat_missed", "superseded"])
export type CancellationReason = typeof CancellationReason.Type

/**
 * Sent when the service abandons a task it was waiting for, routing key `<taskType>.cancel` on the tasks exchange:
 * a worker still working on it may stop. A reply for it is ignored from then on. Best effort, like any message: a
 * worker must not rely on receiving it.
 */
export const CancellationNotice = Schema.Struct({
  sagaId: Schema.String,
  sagaType: Schema.String,
  taskId: Schema.String,
  taskType: Schema.String,
  stepKey: Schema.String,
  attempt: Schema.Int,
  reason: CancellationReason
})
export type CancellationNotice = typeof CancellationNotice.Type

export const TaskError = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean
})
export type TaskError = typeof TaskError.Type

/** A worker's answer to one task, published to `orchestrator.replies` with routing key = the task type. */
export const ReplyMessage = Schema.Struct({
  sagaId: Schema.String,
  taskId: Schema.String,
  outcome: Schema.Literals(["succeeded", "failed"]),
  result: Schema.optionalKey(JsonObject),
  error: Schema.optionalKey(TaskError)
})
export type ReplyMessage = typeof ReplyMessage.Type

/** The routing key of a task type's heartbeats, on the replies exchange. */
export const heartbeatRoutingKey = (taskType: string) => `${taskType}.heartbeat`
export const isHeartbeatRoutingKey = (routingKey: string) => routingKey.endsWith(".heartbeat")

/** How far a worker is, in its own words: both optional. */
export const TaskProgress = Schema.Struct({
  percent: Schema.optionalKey(Schema.Number.check(Schema.isBetween({ minimum: 0, maximum: 100 }))),
  message: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(500)))
})
export type TaskProgress = typeof TaskProgress.Type

/**
 * A sign of life from a worker for a task it is working on, routing key `<taskType>.heartbeat` on the replies
 * exchange. It keeps an attempt whose step expects heartbeats from timing out, and its progress shows in the API. It
 * is not a step: it changes neither the saga's state nor its history, and one for a task no longer awaited is ignored.
 */
export const HeartbeatMessage = Schema.Struct({
  sagaId: Schema.String,
  taskId: Schema.String,
  progress: Schema.optionalKey(TaskProgress)
})
export type HeartbeatMessage = typeof HeartbeatMessage.Type

/** Decodes a reply from the raw message body (JSON text). */
export const decodeReply = Schema.decodeUnknownEffect(Schema.fromJsonString(ReplyMessage))
export const decodeTask = Schema.decodeUnknownEffect(Schema.fromJsonString(TaskMessage))
export const decodeCancellation = Schema.decodeUnknownEffect(Schema.fromJsonString(CancellationNotice))
export const decodeHeartbeat = Schema.decodeUnknownEffect(Schema.fromJsonString(HeartbeatMessage))
