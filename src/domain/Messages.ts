/**
 * The RabbitMQ contract: the bodies of tasks, replies, heartbeats and cancellation notices, and the names of the topology.
 * External workers rely on these exact shapes.
 */
import { Schema, SchemaTransformation } from "effect"
import { maxJsonDepth, StorableString, storableWithin } from "./Storable.ts"

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

/** What names one attempt of one task, in a task and in its cancellation notice. */
const taskAttempt = {
  sagaId: Schema.String,
  sagaType: Schema.String,
  taskId: Schema.String,
  taskType: Schema.String,
  stepKey: Schema.String,
  attempt: Schema.Int
}

/**
 * Sent to a worker, routing key = `taskType`. `taskId` is new for every attempt: a reply names it, and only a reply to
 * the awaited task id counts. `stepKey` is the same for every attempt of one step of one saga (and another for the
 * step's compensation): workers make side effects idempotent by it, so a retried attempt finds the work it already did.
 */
export const TaskMessage = Schema.Struct({
  ...taskAttempt,
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
export const CancellationNotice = Schema.Struct({ ...taskAttempt, reason: CancellationReason })
export type CancellationNotice = typeof CancellationNotice.Type

/** Limits on what workers send: ids and codes are short; a long error message is kept, shortened, never refused. */
export interface MessageLimits {
  /** A reply's or heartbeat's body, in bytes. */
  readonly bodyBytes: number
  /** Saga ids, task ids, error codes: characters. */
  readonly idLength: number
  /** Error messages: characters kept; the rest is cut and the cut marked. */
  readonly errorMessageLength: number
  /** How deep a result may nest. */
  readonly jsonDepth: number
}

/**
 * The defaults (each configurable, see README): a body up to RabbitMQ 4's own default limit, room for a long error
 * message, which is shortened, not refused — a result must fit the saga's context limit anyway.
 */
export const defaultMessageLimits: MessageLimits = {
  bodyBytes: 16 * 1024 * 1024,
  idLength: 255,
  errorMessageLength: 2_000,
  jsonDepth: maxJsonDepth
}

/** Cuts `text` to `limit` characters (never inside a surrogate pair), saying how long it was. */
export const truncate = (text: string, limit: number): string => {
  if (text.length <= limit) return text
  const end = /[\ud800-\udbff]/.test(text.charAt(limit - 1)) ? limit - 1 : limit
  return `${text.slice(0, end)}… [truncated from ${text.length} characters]`
}

/** How far a worker is, in its own words: both optional. */
export const TaskProgress = Schema.Struct({
  percent: Schema.optionalKey(Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 100 }))),
  message: Schema.optionalKey(StorableString.check(Schema.isMaxLength(500)))
})
export type TaskProgress = typeof TaskProgress.Type

/**
 * The messages workers send, under `limits`. Everything in them is something PostgreSQL can store: anything else is
 * malformed, and dead-lettered.
 */
export const inbound = (limits: MessageLimits) => {
  /** An id or code from a worker: text PostgreSQL can store, of bounded length. */
  const Id = StorableString.check(Schema.isMaxLength(limits.idLength))

  /** A worker's error message: a long one is shortened (and says so) rather than refused. */
  const ErrorMessage = StorableString.pipe(
    Schema.decodeTo(
      Schema.String,
      SchemaTransformation.transform({
        decode: (text) => truncate(text, limits.errorMessageLength),
        encode: (text) => text
      })
    )
  )

  const TaskError = Schema.Struct({ code: Id, message: ErrorMessage, retryable: Schema.Boolean })

  /** A worker's answer to one task, published to `orchestrator.replies` with routing key = the task type. */
  const ReplyMessage = Schema.Struct({
    sagaId: Id,
    taskId: Id,
    outcome: Schema.Literals(["succeeded", "failed"]),
    result: Schema.optionalKey(Schema.Record(Schema.String, Schema.Json).check(storableWithin(limits.jsonDepth))),
    error: Schema.optionalKey(TaskError)
  })

  /**
   * A sign of life from a worker for a task it is working on, routing key `<taskType>.heartbeat` on the replies
   * exchange. It keeps an attempt whose step expects heartbeats from timing out, and its progress shows in the API.
   * It is not a step: it changes neither the saga's state nor its history, and one for a task no longer awaited is
   * ignored.
   */
  const HeartbeatMessage = Schema.Struct({ sagaId: Id, taskId: Id, progress: Schema.optionalKey(TaskProgress) })

  return {
    limits,
    TaskError,
    ReplyMessage,
    HeartbeatMessage,
    /** A reply from the raw message body (JSON text). */
    decodeReply: Schema.decodeUnknownEffect(Schema.fromJsonString(ReplyMessage)),
    decodeHeartbeat: Schema.decodeUnknownEffect(Schema.fromJsonString(HeartbeatMessage))
  }
}
export type Inbound = ReturnType<typeof inbound>

const defaultInbound = inbound(defaultMessageLimits)

export const TaskError = defaultInbound.TaskError
export type TaskError = typeof TaskError.Type

export const ReplyMessage = defaultInbound.ReplyMessage
export type ReplyMessage = typeof ReplyMessage.Type

/** The routing key of a task type's heartbeats, on the replies exchange. */
export const heartbeatRoutingKey = (taskType: string) => `${taskType}.heartbeat`
export const isHeartbeatRoutingKey = (routingKey: string) => routingKey.endsWith(".heartbeat")

export const HeartbeatMessage = defaultInbound.HeartbeatMessage
export type HeartbeatMessage = typeof HeartbeatMessage.Type

/** Decodes a reply from the raw message body (JSON text), under the default limits. */
export const decodeReply = defaultInbound.decodeReply
export const decodeTask = Schema.decodeUnknownEffect(Schema.fromJsonString(TaskMessage))
export const decodeCancellation = Schema.decodeUnknownEffect(Schema.fromJsonString(CancellationNotice))
export const decodeHeartbeat = defaultInbound.decodeHeartbeat
