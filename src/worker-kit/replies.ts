/** Building replies and publishing them with publisher confirms. */
import type * as Amqp from "amqplib"
import type { ReplyMessage, TaskError, TaskMessage } from "../domain/Messages.ts"
import { type AbortReason, TaskFailed } from "./types.ts"

/** Where a reply or heartbeat goes, and the task's properties it carries on. */
export interface PublishTarget {
  readonly taskType: string
  readonly correlationId: string | undefined
  readonly traceparent: string | undefined
}

const isJsonObject = (value: unknown): value is NonNullable<ReplyMessage["result"]> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** A handler's value as the reply's `result`: an object, or none; anything else is not a result the service takes. */
export const resultReply = (task: TaskMessage, result: unknown): ReplyMessage => {
  const ids = { sagaId: task.sagaId, taskId: task.taskId }
  if (result === undefined || result === null) return { ...ids, outcome: "succeeded" }
  if (isJsonObject(result)) return { ...ids, outcome: "succeeded", result }
  const message = `the handler returned ${Array.isArray(result) ? "an array" : typeof result}, not an object`
  return { ...ids, outcome: "failed", error: { code: "invalid_result", message, retryable: false } }
}

/** A `TaskFailed` as chosen; a `TaskError`-shaped value as given; any other error as a retryable `handler_error`. */
export const errorReply = (task: TaskMessage, error: unknown): ReplyMessage => ({
  sagaId: task.sagaId,
  taskId: task.taskId,
  outcome: "failed",
  error: toTaskError(error)
})

const toTaskError = (error: unknown): TaskError => {
  if (error instanceof TaskFailed) return { code: error.code, message: error.message, retryable: error.retryable }
  if (
    typeof error === "object" &&
    error !== null &&
    "code" in error &&
    "message" in error &&
    "retryable" in error &&
    typeof error.code === "string" &&
    typeof error.message === "string" &&
    typeof error.retryable === "boolean" &&
    !(error instanceof Error)
  ) {
    return { code: error.code, message: error.message, retryable: error.retryable }
  }
  return { code: "handler_error", message: error instanceof Error ? error.message : String(error), retryable: true }
}

const abortReasons: ReadonlyArray<AbortReason> = [
  "saga_cancelled",
  "timed_out",
  "heartbeat_missed",
  "superseded",
  "shutdown",
  "connection_lost"
]

export const abortReason = (signal: AbortSignal): AbortReason | undefined =>
  signal.aborted ? abortReasons.find((reason) => reason === signal.reason) : undefined

/** Resolves once RabbitMQ confirmed the message; rejects on a nack or when the channel closes first. */
export const publishConfirmed = (
  channel: Amqp.ConfirmChannel,
  exchange: string,
  routingKey: string,
  body: unknown,
  target: PublishTarget,
  messageId: string
) =>
  new Promise<void>((resolve, reject) => {
    const options: Amqp.Options.Publish = {
      persistent: true,
      contentType: "application/json",
      messageId,
      headers: target.traceparent === undefined ? {} : { traceparent: target.traceparent }
    }
    if (target.correlationId !== undefined) options.correlationId = target.correlationId
    try {
      channel.publish(exchange, routingKey, Buffer.from(JSON.stringify(body), "utf8"), options, (error) =>
        error === null || error === undefined
          ? resolve()
          : reject(error instanceof Error ? error : new Error(String(error)))
      )
    } catch (error) {
      reject(error)
    }
  })
