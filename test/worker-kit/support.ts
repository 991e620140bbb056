/**
 * The orchestrator's side of the wire for worker tests: publishes tasks and cancellation notices as the service does,
 * captures what workers publish on the replies exchange, and looks at queues. Polls with deadlines, never sleeps.
 */
import * as Amqp from "amqplib"
import { Clock, Effect } from "effect"
import { Exchanges } from "../../src/domain/Messages.ts"
import { guest, rabbit } from "../utils/rabbit.ts"

export const workerUrl = (vhost: string) =>
  `amqp://${guest.user}:${guest.password}@${rabbit.host}:${rabbit.port}/${encodeURIComponent(vhost)}`

export interface Captured {
  readonly routingKey: string
  readonly body: Record<string, unknown>
  readonly correlationId: string | undefined
  readonly messageId: string | undefined
  readonly traceparent: unknown
}

/** Polls `check` until it holds; past the deadline the test fails saying what it waited for. */
export const eventually = Effect.fnUntraced(function* <E, R>(
  what: string,
  check: Effect.Effect<boolean, E, R>,
  deadline = 15_000
) {
  const begin = yield* Clock.currentTimeMillis
  while (!(yield* check)) {
    if ((yield* Clock.currentTimeMillis) - begin > deadline) {
      return yield* Effect.die(new Error(`timed out after ${deadline} ms waiting until ${what}`))
    }
    yield* Effect.sleep("20 millis")
  }
})

/** The orchestrator's side in a vhost: the service's exchanges, and a capture queue for what workers publish. */
export const orchestratorSide = (vhost: string, captureBinding: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const connection = await Amqp.connect(workerUrl(vhost), { noDelay: true })
      connection.on("error", () => undefined)
      const channel = await connection.createConfirmChannel()
      channel.on("error", () => undefined)
      for (const exchange of Object.values(Exchanges))
        await channel.assertExchange(exchange, "topic", { durable: true })
      const { queue } = await channel.assertQueue("", { exclusive: true })
      await channel.bindQueue(queue, Exchanges.replies, captureBinding)
      const captured: Array<Captured> = []
      await channel.consume(
        queue,
        (message) => {
          if (message === null) return
          captured.push({
            routingKey: message.fields.routingKey,
            body: JSON.parse(message.content.toString("utf8")),
            correlationId: message.properties.correlationId,
            messageId: message.properties.messageId,
            traceparent: message.properties.headers?.traceparent
          })
        },
        { noAck: true }
      )
      return { connection, channel, queue, captured }
    }),
    ({ connection }) => Effect.promise(() => connection.close().catch(() => undefined))
  ).pipe(
    Effect.map(({ connection, channel, queue, captured }) => {
      const publish = (routingKey: string, body: unknown, headers: Record<string, unknown> = {}) =>
        Effect.promise(async () => {
          channel.publish(Exchanges.tasks, routingKey, Buffer.from(JSON.stringify(body)), {
            persistent: true,
            contentType: "application/json",
            messageId: crypto.randomUUID(),
            correlationId: "corr-1",
            headers
          })
          await channel.waitForConfirms()
        })
      return {
        captured,
        publish,
        /** Runs an admin step on a channel of its own (a refused one must not close the publishing channel). */
        admin: <A>(step: (channel: Amqp.Channel, captureQueue: string) => Promise<A>) =>
          Effect.promise(async () => {
            const admin = await connection.createChannel()
            admin.on("error", () => undefined)
            const result = await step(admin, queue)
            await admin.close()
            return result
          }),
        /** Tasks waiting in a worker's queue, not delivered (an unacknowledged task counts once its worker is gone). */
        ready: (queue: string) =>
          Effect.promise(async () => {
            const admin = await connection.createChannel()
            const { messageCount } = await admin.checkQueue(queue)
            await admin.close()
            return messageCount
          })
      }
    })
  )

/** A promise with its resolve function, for handlers that wait until the test lets them go on. */
export const gate = () => {
  let open: () => void = () => undefined
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { open, opened }
}

let counter = 0
/** A task as the orchestrator sends it. */
export const task = (taskType: string, payload: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
  counter += 1
  return {
    sagaId: `saga-${counter}`,
    sagaType: "TEST",
    taskId: `task-${counter}-${crypto.randomUUID()}`,
    taskType,
    stepKey: `saga-${counter}/step`,
    attempt: 1,
    replyTo: "orchestrator.replies",
    payload,
    ...extra
  }
}
