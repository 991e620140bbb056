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

/** Sent to a worker, routing key = `taskType`. `taskId` is new for every attempt: workers deduplicate by it. */
export const TaskMessage = Schema.Struct({
  sagaId: Schema.String,
  sagaType: Schema.String,
  taskId: Schema.String,
  taskType: Schema.String,
  attempt: Schema.Int,
  replyTo: Schema.Literal(Queues.replies),
  payload: JsonObject
})
export type TaskMessage = typeof TaskMessage.Type

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
