/**
 * One connection of a worker, set up: the task queue declared and bound, a consumer on it with the prefetch, a confirm
 * channel for replies and heartbeats (opened again after a channel error, e.g. a 404 for a missing exchange), and a
 * queue of this connection's own for cancellation notices — exclusive, bound to `<taskType>.cancel`, on a channel
 * without prefetch — so that every instance sees every notice, even while busy with `prefetch` tasks.
 */
import * as Amqp from "amqplib"
import { cancellationRoutingKey, Exchanges } from "../domain/Messages.ts"
import type { Logger } from "./types.ts"

export interface SessionSettings {
  readonly url: string
  readonly queue: string
  readonly taskTypes: ReadonlyArray<string>
  readonly prefetch: number
  readonly connectionName: string
  readonly log: Logger
}

/** One open connection: its channels and the consumer of the task queue. */
export interface Session {
  readonly connection: Amqp.ChannelModel
  readonly tasks: Amqp.Channel
  /** Set once `basic.consume` is confirmed; tasks may arrive before that. */
  consumerTag: string | undefined
  readonly cancellations: Amqp.Channel
  readonly publisher: () => Promise<Amqp.ConfirmChannel>
  /** False once the connection is gone: its deliveries can no longer be settled. */
  open: boolean
}

export interface SessionHandlers {
  readonly onTask: (session: Session, message: Amqp.ConsumeMessage) => void
  readonly onNotice: (message: Amqp.ConsumeMessage) => void
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export const wait = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener("abort", () => {
      clearTimeout(timer)
      resolve()
    })
  })

export const openSession = async (
  settings: SessionSettings,
  on: SessionHandlers
): Promise<{ readonly session: Session; readonly closed: Promise<string> }> => {
  const { log } = settings
  const connection = await Amqp.connect(settings.url, {
    noDelay: true,
    clientProperties: { connection_name: settings.connectionName }
  })
  let lastError = "connection closed"
  connection.on("error", (error: unknown) => {
    lastError = String(error)
  })
  const closed = new Promise<string>((resolve) => connection.on("close", () => resolve(lastError)))
  try {
    const setup = await connection.createChannel()
    // A refused declaration closes the channel with an 'error' event; the failed call reports it.
    setup.on("error", () => undefined)
    await setup.assertExchange(Exchanges.tasks, "topic", { durable: true })
    await setup.assertExchange(Exchanges.replies, "topic", { durable: true })
    await setup.assertQueue(settings.queue, { durable: true, arguments: { "x-queue-type": "quorum" } })
    for (const taskType of settings.taskTypes) await setup.bindQueue(settings.queue, Exchanges.tasks, taskType)
    await setup.close()

    let publisher: Promise<Amqp.ConfirmChannel> | undefined
    const publisherOf = () => {
      if (publisher === undefined) {
        const created = connection.createConfirmChannel().then((channel) => {
          channel.on("error", (error: unknown) => log("warn", "reply channel closed", { error: String(error) }))
          channel.on("close", () => {
            if (publisher === created) publisher = undefined
          })
          return channel
        })
        created.catch(() => {
          if (publisher === created) publisher = undefined
        })
        publisher = created
      }
      return publisher
    }

    // Without its task or notice consumer the connection is of no use: a closed channel means starting over.
    const startOver = () => connection.close().catch(() => undefined)
    const cancellations = await connection.createChannel()
    cancellations.on("error", (error: unknown) => log("warn", "notice channel closed", { error: String(error) }))
    cancellations.on("close", startOver)
    const { queue: noticeQueue } = await cancellations.assertQueue("", {
      exclusive: true,
      autoDelete: true,
      durable: false
    })
    for (const taskType of settings.taskTypes) {
      await cancellations.bindQueue(noticeQueue, Exchanges.tasks, cancellationRoutingKey(taskType))
    }
    await cancellations.consume(noticeQueue, (message) => message && on.onNotice(message), { noAck: true })

    const tasks = await connection.createChannel()
    tasks.on("error", (error: unknown) => log("warn", "task channel closed", { error: String(error) }))
    tasks.on("close", startOver)
    await tasks.prefetch(settings.prefetch)
    // The session exists before consuming: tasks (redeliveries above all) can arrive before `consume` resolves.
    const created: Session = {
      connection,
      tasks,
      consumerTag: undefined,
      cancellations,
      publisher: publisherOf,
      open: true
    }
    const { consumerTag } = await tasks.consume(settings.queue, (message) => {
      if (message === null) {
        // The queue was deleted: start over on a new connection, which declares it again.
        startOver()
        return
      }
      on.onTask(created, message)
    })
    created.consumerTag = consumerTag
    return { session: created, closed }
  } catch (error) {
    await connection.close().catch(() => undefined)
    throw error
  }
}
