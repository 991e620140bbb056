/**
 * A worker on amqplib: consumes the worker's task queue, runs the handler of each task's type and replies.
 *
 * Invariants, each easy to break:
 * - A task is acknowledged only after RabbitMQ confirmed its reply. A crash or a lost connection in between leaves
 *   the task unacknowledged: RabbitMQ delivers it again, and the worker answers again (at least once).
 * - A reply whose publish failed is not lost either: the task is rejected with requeue (after a delay) and comes back.
 * - The replies of recent tasks are kept by task id, so a task delivered again is answered with the same reply
 *   without running its handler twice in this process. Across processes, handlers deduplicate by `stepKey`.
 * - Cancellation notices arrive on a queue of each connection's own (see session.ts), so a notice reaches whichever
 *   instance runs the task, even when it is busy with `prefetch` tasks.
 */
import { randomUUID } from "node:crypto"
import type * as Amqp from "amqplib"
import { Exit, Schema } from "effect"
import {
  CancellationNotice,
  Exchanges,
  heartbeatRoutingKey,
  type ReplyMessage,
  TaskMessage,
  type TaskProgress
} from "../domain/Messages.ts"
import { abortReason, errorReply, type PublishTarget, publishConfirmed, resultReply } from "./replies.ts"
import { openSession, type Session, type SessionSettings, wait } from "./session.ts"
import type { AbortReason, Logger, TaskContext, TaskHandler, Worker, WorkerOptions } from "./types.ts"

const decodeTask = Schema.decodeUnknownExit(Schema.fromJsonString(TaskMessage))
const decodeNotice = Schema.decodeUnknownExit(Schema.fromJsonString(CancellationNotice))

const defaultLog: Logger = (level, message, fields) =>
  process.stderr.write(`${level} ${message}${fields === undefined ? "" : ` ${JSON.stringify(fields)}`}\n`)

interface Running {
  readonly controller: AbortController
  readonly done: Promise<void>
}

/** Replies of recent tasks by task id, the oldest forgotten first. */
const recentLimit = 10_000

export const startWorker = (options: WorkerOptions): Worker => {
  const log = options.log ?? defaultLog
  const prefetch = options.prefetch ?? 10
  const initialDelay = options.reconnect?.initialDelayMs ?? 200
  const maxDelay = options.reconnect?.maxDelayMs ?? 10_000
  const grace = options.shutdownGraceMs ?? 30_000
  const replyRetryDelay = options.replyRetryDelayMs ?? 1000
  const taskTypes = Object.keys(options.handlers)
  const settings: SessionSettings = {
    url: options.url,
    queue: options.queue,
    taskTypes,
    prefetch,
    connectionName: options.connectionName ?? `worker ${options.queue}`,
    log
  }

  const running = new Map<string, Running>()
  const recent = new Map<string, ReplyMessage>()
  const stopping = new AbortController()
  const whenStopping = new Promise<string>((resolve) =>
    stopping.signal.addEventListener("abort", () => resolve("stopping"))
  )
  let session: Session | undefined
  let stopped: Promise<void> | undefined
  let markReady: () => void = () => undefined
  const ready = new Promise<void>((resolve) => {
    markReady = resolve
  })

  const remember = (reply: ReplyMessage) => {
    recent.set(reply.taskId, reply)
    if (recent.size > recentLimit) recent.delete(recent.keys().next().value ?? "")
  }

  /** Connects, and connects again with back-off whenever the connection is lost, until the worker stops. */
  const supervise = async () => {
    let delay = initialDelay
    while (!stopping.signal.aborted) {
      try {
        const { session: current, closed } = await openSession(settings, { onTask, onNotice })
        session = current
        delay = initialDelay
        log("info", `consuming queue '${options.queue}'`, { taskTypes, prefetch })
        markReady()
        const reason = await Promise.race([closed, whenStopping])
        if (reason !== "stopping") {
          current.open = false
          session = undefined
          for (const task of running.values()) task.controller.abort("connection_lost" satisfies AbortReason)
          log("warn", `lost the connection: ${reason}; reconnecting`)
        } else {
          // `stop` has let the handlers finish (or given up on them): close.
          current.open = false
          session = undefined
          // The task channel first, gracefully: closing the connection at once can lose the last acks sent on it.
          await current.tasks.close().catch(() => undefined)
          await current.connection.close().catch(() => undefined)
        }
      } catch (error) {
        log("warn", `cannot connect or set up: ${String(error)}; retrying in ${delay} ms`)
        await wait(delay, stopping.signal)
        delay = Math.min(delay * 2, maxDelay)
      }
    }
  }

  /** Replies and heartbeats carry the task's correlation id and trace context. */
  const targetOf = (task: TaskMessage, message: Amqp.ConsumeMessage): PublishTarget => ({
    taskType: task.taskType,
    correlationId:
      message.properties.correlationId === undefined ? undefined : String(message.properties.correlationId),
    traceparent:
      typeof message.properties.headers?.traceparent === "string" ? message.properties.headers.traceparent : undefined
  })

  const onNotice = (message: Amqp.ConsumeMessage) => {
    const decoded = decodeNotice(message.content.toString("utf8"))
    if (!Exit.isSuccess(decoded)) return log("warn", "malformed cancellation notice ignored")
    const notice = decoded.value
    const task = running.get(notice.taskId)
    if (task === undefined) return
    log("info", `task ${notice.taskId} cancelled by the orchestrator: ${notice.reason}`, { sagaId: notice.sagaId })
    task.controller.abort(notice.reason)
  }

  /** Acknowledges on the channel the task came on, if it is still open (else RabbitMQ delivers it again). */
  const settle = (from: Session, message: Amqp.ConsumeMessage, disposition: "ack" | "requeue" | "drop") => {
    if (!from.open) return
    try {
      if (disposition === "ack") from.tasks.ack(message)
      else from.tasks.nack(message, false, disposition === "requeue")
    } catch (error) {
      log("warn", `cannot settle a task: ${String(error)}`)
    }
  }

  const reply = async (from: Session, message: Amqp.ConsumeMessage, target: PublishTarget, body: ReplyMessage) => {
    try {
      await publishConfirmed(
        await from.publisher(),
        Exchanges.replies,
        target.taskType,
        body,
        target,
        `reply-${body.taskId}`
      )
    } catch (error) {
      log("warn", `reply to task ${body.taskId} not confirmed: ${String(error)}; the task comes back`)
      await wait(replyRetryDelay)
      return settle(from, message, "requeue")
    }
    remember(body)
    settle(from, message, "ack")
  }

  const run = async (
    from: Session,
    message: Amqp.ConsumeMessage,
    task: TaskMessage,
    handler: TaskHandler,
    controller: AbortController
  ) => {
    const target = targetOf(task, message)
    let progress: TaskProgress | undefined
    const heartbeat = () =>
      from
        .publisher()
        .then((channel) =>
          publishConfirmed(
            channel,
            Exchanges.replies,
            heartbeatRoutingKey(task.taskType),
            { sagaId: task.sagaId, taskId: task.taskId, ...(progress === undefined ? {} : { progress }) },
            target,
            randomUUID()
          )
        )
    const timer =
      task.heartbeatTimeoutMs === undefined
        ? undefined
        : setInterval(
            () => heartbeat().catch((error) => log("warn", `heartbeat not sent: ${String(error)}`)),
            Math.max(1, Math.floor(task.heartbeatTimeoutMs / 3))
          )
    const context: TaskContext = {
      sagaId: task.sagaId,
      sagaType: task.sagaType,
      taskId: task.taskId,
      taskType: task.taskType,
      stepKey: task.stepKey,
      attempt: task.attempt,
      heartbeatTimeoutMs: task.heartbeatTimeoutMs,
      correlationId: target.correlationId,
      traceparent: target.traceparent,
      signal: controller.signal,
      reportProgress: (next) => {
        progress = next
        return heartbeat()
      }
    }
    let body: ReplyMessage
    try {
      const invalidPayload = handler.payload?.(task.payload)
      if (invalidPayload !== undefined) {
        body = errorReply(task, { code: "invalid_payload", message: invalidPayload, retryable: false })
      } else {
        const result: unknown = await handler.handle(task.payload, context)
        const invalidResult = handler.result?.(result)
        body =
          invalidResult !== undefined
            ? errorReply(task, { code: "invalid_result", message: invalidResult, retryable: false })
            : resultReply(task, result)
      }
    } catch (error) {
      body = errorReply(task, error)
    } finally {
      if (timer !== undefined) clearInterval(timer)
    }
    const aborted = abortReason(controller.signal)
    if (aborted === "connection_lost") return
    if (aborted === "shutdown") return settle(from, message, "requeue")
    if (aborted !== undefined) {
      // The orchestrator no longer waits for this task: a reply would be ignored.
      log("info", `task ${task.taskId} given up (${aborted}), no reply sent`)
      return settle(from, message, "ack")
    }
    await reply(from, message, target, body)
  }

  const onTask = (from: Session, message: Amqp.ConsumeMessage) => {
    const decoded = decodeTask(message.content.toString("utf8"))
    if (!Exit.isSuccess(decoded)) {
      // Nobody to answer: a message that is not a task is dropped, and said so.
      log("error", "malformed task dropped", { messageId: message.properties.messageId })
      return settle(from, message, "drop")
    }
    const task = decoded.value
    const previous = running.get(task.taskId)
    const controller = new AbortController()
    const done = (previous?.done ?? Promise.resolve()).then(() => {
      const known = recent.get(task.taskId)
      if (known !== undefined) return reply(from, message, targetOf(task, message), known)
      const handler = options.handlers[task.taskType]
      if (handler === undefined) {
        const body = errorReply(task, {
          code: "unknown_task_type",
          message: `this worker has no handler for ${task.taskType}`,
          retryable: false
        })
        return reply(from, message, targetOf(task, message), body)
      }
      return run(from, message, task, handler, controller)
    })
    const entry: Running = {
      controller,
      done: done
        .catch((error) => log("error", `task ${task.taskId} failed in the worker: ${String(error)}`))
        .finally(() => {
          if (running.get(task.taskId) === entry) running.delete(task.taskId)
        })
    }
    running.set(task.taskId, entry)
  }

  const supervisor = supervise()

  const stop = () => {
    if (stopped !== undefined) return stopped
    stopped = (async () => {
      const current = session
      if (current?.consumerTag !== undefined) {
        await current.tasks.cancel(current.consumerTag).catch(() => undefined)
        log("info", `stopped consuming; waiting for ${running.size} running task(s)`)
      }
      const allDone = () => Promise.all([...running.values()].map((task) => task.done))
      const timeout = new AbortController()
      await Promise.race([allDone(), wait(grace, timeout.signal)])
      timeout.abort()
      if (running.size > 0) {
        log("warn", `grace period over; aborting ${running.size} task(s)`)
        for (const task of running.values()) task.controller.abort("shutdown" satisfies AbortReason)
        const aborted = new AbortController()
        await Promise.race([allDone(), wait(5000, aborted.signal)])
        aborted.abort()
      }
      stopping.abort()
      await supervisor
      log("info", "stopped")
    })()
    return stopped
  }

  return { ready, stop, running: () => running.size }
}
