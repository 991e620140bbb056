/**
 * Heartbeats through real RabbitMQ and PostgreSQL: the service's loops and HTTP API in this process, and a worker on
 * its own AMQP connection. A step with a 2 s heartbeat timeout and a 1 h overall timeout: the silent first attempt is
 * given up within seconds (the worker gets the notice), and the second attempt, whose worker heartbeats for 10 s,
 * completes — its progress visible in the API while it runs.
 */
import { assert, layer } from "@effect/vitest"
import type * as Amqp from "amqplib"
import { Clock, Effect, Layer, Redacted, Schema } from "effect"
import { HttpServer } from "effect/http"
import * as AmqpBroker from "../../src/broker/AmqpBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import {
  type CancellationNotice,
  cancellationRoutingKey,
  decodeCancellation,
  decodeTask,
  Exchanges,
  heartbeatRoutingKey,
  type TaskMessage
} from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import * as R from "../../src/http/Api/Representations.ts"
import { ApiTokens } from "../../src/http/ApiTokens.ts"
import * as Server from "../../src/http/Server.ts"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import * as TimerScanner from "../../src/saga/TimerScanner.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { crunching, crunchingType } from "../utils/crunching.ts"
import { adminConnection, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { layerStore as testStore } from "../utils/TestDatabase.ts"

const Crunch = crunching({ timeout: "1 hour", retryAfter: "200 millis" })

const token = `heartbeat-${crypto.randomUUID()}`

const runtime = Layer.unwrap(
  Effect.map(TestVhost, (vhost) =>
    Server.layerPort(0).pipe(
      Layer.provide(Layer.succeed(ApiTokens, ApiTokens.make([Redacted.make(token)]))),
      Layer.provideMerge(Engine.layer),
      Layer.provideMerge(SagaRegistry.layer([Crunch])),
      Layer.provideMerge(AmqpBroker.layerConfig(vhost.options()))
    )
  )
).pipe(Layer.provideMerge(testStore()), Layer.provideMerge(testVhost()))

const loops = Effect.all(
  [
    Effect.forkScoped(OutboxRelay.run({ batchSize: 200, idleDelay: "20 millis" })),
    Effect.forkScoped(ReplyConsumer.run()),
    Effect.forkScoped(TimerScanner.run({ batchSize: 100, idleDelay: "50 millis" }))
  ],
  { discard: true }
)

/** What the worker saw: tasks and cancellation notices, in order. */
interface Seen {
  readonly tasks: Array<TaskMessage>
  readonly notices: Array<CancellationNotice>
}

/**
 * The worker: its queue takes `test.crunch` tasks and their cancellation notices. The first attempt it takes and
 * never answers; the second it works on for 10 s, heartbeating every 500 ms with its progress, then answers.
 */
const worker = (connection: Amqp.ChannelModel, seen: Seen) =>
  Effect.promise(async () => {
    const channel = await connection.createConfirmChannel()
    await channel.assertExchange(Exchanges.tasks, "topic", { durable: true })
    const { queue } = await channel.assertQueue("test.crunch.worker", { durable: false, exclusive: true })
    await channel.bindQueue(queue, Exchanges.tasks, "test.crunch")
    await channel.bindQueue(queue, Exchanges.tasks, cancellationRoutingKey("test.crunch"))
    const publish = (routingKey: string, body: unknown, correlationId: string) =>
      new Promise<void>((resolve, reject) =>
        channel.publish(
          Exchanges.replies,
          routingKey,
          Buffer.from(JSON.stringify(body)),
          { persistent: true, contentType: "application/json", messageId: crypto.randomUUID(), correlationId },
          (error) => (error ? reject(error) : resolve())
        )
      )
    await channel.consume(queue, (message) => {
      if (message === null) return
      const body = message.content.toString("utf8")
      if (message.fields.routingKey.endsWith(".cancel")) {
        seen.notices.push(Effect.runSync(decodeCancellation(body)))
        channel.ack(message)
        return
      }
      const task = Effect.runSync(decodeTask(body))
      seen.tasks.push(task)
      channel.ack(message)
      if (task.attempt === 1) return
      const correlationId = message.properties.correlationId ?? task.sagaId
      void (async () => {
        for (let beat = 1; beat <= 20; beat++) {
          await new Promise((resolve) => setTimeout(resolve, 500))
          const progress = { percent: beat * 5, message: `step ${beat} of 20` }
          await publish(
            heartbeatRoutingKey(task.taskType),
            { sagaId: task.sagaId, taskId: task.taskId, progress },
            correlationId
          )
        }
        const reply = { sagaId: task.sagaId, taskId: task.taskId, outcome: "succeeded", result: { outputRef: "out/1" } }
        await publish(task.taskType, reply, correlationId)
      })()
    })
  })

const getSaga = (id: SagaId) =>
  Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    const port = server.address._tag === "UnixPathAddress" ? 0 : server.address.port
    const text = yield* Effect.promise(() =>
      fetch(`http://127.0.0.1:${port}/v1/sagas/${id}`, { headers: { authorization: `Bearer ${token}` } }).then(
        (response) => response.text()
      )
    )
    return Schema.decodeUnknownSync(R.SagaWithHistory)(JSON.parse(text))
  })

/** Polls `check` every 50 ms until it returns a value; fails past `deadline` milliseconds. */
const waitFor = <A, E, R>(what: string, check: Effect.Effect<A | undefined, E, R>, deadline: number) =>
  Effect.gen(function* (): Effect.fn.Return<A, E, R> {
    const begin = yield* Clock.currentTimeMillis
    for (;;) {
      const value = yield* check
      if (value !== undefined) return value
      if ((yield* Clock.currentTimeMillis) - begin > deadline) return yield* Effect.die(`timed out waiting for ${what}`)
      yield* Effect.sleep("50 millis")
    }
  })

layer(runtime, { excludeTestServices: true, timeout: "60 seconds" })("heartbeats through RabbitMQ", (it) => {
  it.effect(
    "gives up a silent attempt within seconds and completes one whose worker heartbeats, showing its progress",
    () =>
      Effect.gen(function* () {
        const vhost = yield* TestVhost
        const connection = yield* adminConnection(vhost.name)
        const seen: Seen = { tasks: [], notices: [] }
        yield* worker(connection, seen)
        yield* loops
        const started = yield* Clock.currentTimeMillis
        const { saga } = yield* Engine.Engine.use((engine) => engine.start(crunchingType, { ref: "in/1" }))

        const notice = yield* waitFor(
          "the silent attempt's notice",
          Effect.sync(() => seen.notices[0]),
          10_000
        )
        const first = seen.tasks[0]
        assert.deepInclude(notice, { taskId: first?.taskId ?? "none", reason: "heartbeat_missed", attempt: 1 })
        assert.isBelow((yield* Clock.currentTimeMillis) - started, 8_000, "given up within seconds, not after 1 h")
        assert.strictEqual(first?.heartbeatTimeoutMs, 2_000)

        const shown = yield* waitFor(
          "progress in the API",
          Effect.map(getSaga(saga.id), (s) => ((s.progress?.heartbeat?.percent ?? 0) >= 50 ? s : undefined)),
          15_000
        )
        assert.strictEqual(shown.status, "RUNNING")
        assert.deepInclude(shown.progress?.awaiting, { kind: "reply", taskId: seen.tasks[1]?.taskId ?? "none" })
        assert.match(shown.progress?.heartbeat?.message ?? "", /^step \d+ of 20$/)

        const done = yield* waitFor(
          "the saga's completion",
          Effect.map(
            SagaStore.use((store) => store.get(saga.id)),
            (s) => (s.status === "COMPLETED" ? s : undefined)
          ),
          20_000
        )
        assert.deepStrictEqual(done.context, { ref: "in/1", outputRef: "out/1" })
        const events = (yield* getSaga(saga.id)).history.map((entry) => entry.event)
        assert.deepStrictEqual(events, ["SagaStarted", "StepRetryScheduled", "StepRetried", "SagaCompleted"])
        assert.strictEqual(seen.tasks.length, 2)
        assert.strictEqual(seen.notices.length, 1)
      })
  )
})
