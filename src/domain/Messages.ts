/**
 * The RabbitMQ contract (DESIGN §5): the bodies of task and reply messages, and the names of the topology.
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
  payload: JsonObject
})
export type TaskMessage = typeof TaskMessage.Type

/** The routing key of the cancellation notices of a task type, on the tasks exchange. */
export const cancellationRoutingKey = (taskType: string) => `${taskType}.cancel`
export const isCancellationRoutingKey = (routingKey: string) => routingKey.endsWith(".cancel")

/**
 * Why the service stopped waiting for a task: the saga was cancelled, the attempt timed out, or an operator retried
 * the step (a new attempt, with a new task id, replaces it).
 */
export const CancellationReason = Schema.Literals(["saga_cancelled", "timed_out", "superseded"])
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

/** Decodes a reply from the raw message body (JSON text). */
export const decodeReply = Schema.decodeUnknownEffect(Schema.fromJsonString(ReplyMessage))
export const decodeTask = Schema.decodeUnknownEffect(Schema.fromJsonString(TaskMessage))
export const decodeCancellation = Schema.decodeUnknownEffect(Schema.fromJsonString(CancellationNotice))
