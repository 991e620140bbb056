/**
 * The Broker port on real RabbitMQ: topology, publish with confirms, consume with prefetch and dispositions, failures,
 * and a broker restart. Most tests run in a vhost of this file's own on the machine's node; the restart runs on a
 * private node (test/utils/PrivateRabbit.ts), since the machine's node serves other test files at the same time.
 */
import { assert, layer } from "@effect/vitest"
import type * as Amqp from "amqplib"
import { Deferred, Effect, Fiber, Layer, Logger, Redacted } from "effect"
import * as AmqpBroker from "../../src/broker/AmqpBroker.ts"
import { Broker, BrokerUnavailable, type Delivery, Disposition } from "../../src/broker/Broker.ts"
import { deadLetterReasonHeader, Exchanges, Queues } from "../../src/domain/Messages.ts"
import { eventually } from "../utils/eventually.ts"
import * as PrivateRabbitLayer from "../utils/PrivateRabbit.ts"
import { PrivateRabbit } from "../utils/PrivateRabbit.ts"
import {
  adminConnection,
  amqpUrl,
  brokerOptions,
  layerVhost,
  listRows,
  rabbit,
  rabbitmqctl,
  TestVhost
} from "../utils/rabbit.ts"
import { BrokerFixture, brokerContract, message } from "./contract.ts"

/** Runs `f` on a channel of an admin connection to the vhost. */
const admin = <A>(vhost: string, f: (channel: Amqp.Channel) => Promise<A>, server = rabbit) =>
  Effect.scoped(
    Effect.gen(function* () {
      const connection = yield* adminConnection(vhost, server)
      return yield* Effect.promise(async () => {
        const channel = await connection.createChannel()
        channel.on("error", () => undefined)
        try {
          return await f(channel)
        } finally {
          await channel.close().catch(() => undefined)
        }
      })
    })
  )

/** A queue of the test's own (classic, durable) bound to `exchange` with `pattern`. */
const boundQueue = (vhost: string, name: string, exchange: string, pattern: string) =>
  admin(vhost, async (channel) => {
    await channel.assertQueue(name, { durable: true })
    await channel.bindQueue(name, exchange, pattern)
    return name
  })

/** Ready and unacknowledged messages of a queue, as RabbitMQ counts them. */
const counts = (vhost: string, queue: string, server = rabbit) =>
  Effect.promise(() =>
    listRows(["list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"], server)
  ).pipe(
    Effect.map((rows) => {
      const row = rows.find(([name]) => name === queue)
      return { ready: Number(row?.[1]), unacked: Number(row?.[2]) }
    })
  )

/** Takes every message waiting in a queue. */
const drain = (vhost: string, queue: string) =>
  admin(vhost, async (channel) => {
    const messages: Array<Amqp.GetMessage> = []
    for (let next = await channel.get(queue, { noAck: true }); next !== false; ) {
      messages.push(next)
      next = await channel.get(queue, { noAck: true })
    }
    return messages
  })

/** Log messages written while `effect` runs, as text. */
const captureLogs = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const lines: Array<string> = []
    const capture = Logger.make((options) => {
      lines.push([options.message].flat().map(String).join(" "))
    })
    const result = yield* effect.pipe(Effect.provideService(Logger.CurrentLoggers, new Set([capture])))
    return [result, lines] as const
  })

/** The contract's fixture on a vhost: queues, reads and raw publishes over an admin connection. */
const fixture = Layer.effect(
  BrokerFixture,
  Effect.map(TestVhost, (vhost) =>
    BrokerFixture.of({
      bindQueue: (queue, exchange, pattern) => boundQueue(vhost.name, queue, exchange, pattern),
      inQueue: (queue) =>
        Effect.map(drain(vhost.name, queue), (messages) =>
          messages.map((m) => ({
            exchange: m.fields.exchange,
            routingKey: m.fields.routingKey,
            messageId: m.properties.messageId,
            correlationId: m.properties.correlationId,
            headers: Object.fromEntries(Object.entries(m.properties.headers ?? {}).map(([k, v]) => [k, String(v)])),
            body: m.content.toString("utf8")
          }))
        ),
      counts: (queue) => counts(vhost.name, queue),
      inject: (exchange, routingKey, body, headers) =>
        admin(vhost.name, async (channel) => {
          channel.publish(exchange, routingKey, Buffer.from(body, "utf8"), { headers })
        })
    })
  )
)

const broker = Layer.effect(
  Broker,
  Effect.flatMap(TestVhost, (vhost) => AmqpBroker.make(vhost.options()))
)

brokerContract("Broker contract: RabbitMQ", Layer.mergeAll(broker, fixture).pipe(Layer.provideMerge(layerVhost())))

layer(layerVhost(), { excludeTestServices: true, timeout: "60 seconds" })("AmqpBroker on RabbitMQ", (it) => {
  it.effect("declares the topology idempotently, with several instances starting at once", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      yield* Effect.all(
        Array.from({ length: 3 }, () => AmqpBroker.make(vhost.options())),
        { concurrency: "unbounded" }
      )
      const exchanges = yield* Effect.promise(() =>
        listRows(["list_exchanges", "-p", vhost.name, "name", "type", "durable"])
      )
      for (const exchange of ["orchestrator.tasks", "orchestrator.replies", "orchestrator.dlx"]) {
        assert.deepInclude(exchanges, [exchange, "topic", "true"])
      }
      const queues = yield* Effect.promise(() => listRows(["list_queues", "-p", vhost.name, "name", "type", "durable"]))
      assert.deepInclude(queues, ["orchestrator.replies", "quorum", "true"])
      assert.deepInclude(queues, ["orchestrator.replies.dlq", "quorum", "true"])
      const bindings = yield* Effect.promise(() =>
        listRows([
          "list_bindings",
          "-p",
          vhost.name,
          "source_name",
          "destination_name",
          "destination_kind",
          "routing_key"
        ])
      )
      assert.deepInclude(bindings, ["orchestrator.replies", "orchestrator.replies", "queue", "#"])
      assert.deepInclude(bindings, ["orchestrator.dlx", "orchestrator.replies.dlq", "queue", "#"])
      // Nothing is bound to the tasks exchange until workers bind their queues.
      assert.isFalse(bindings.some(([source]) => source === "orchestrator.tasks"))
    })
  )

  it.effect("publishes persistent JSON with its ids and headers as AMQP properties", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options())
      const queue = yield* boundQueue(vhost.name, "test.roundtrip", Exchanges.tasks, "geometry.*")
      const sent = message(Exchanges.tasks, "geometry.mesh", '{"taskId":"t-1"}')
      yield* broker.publish([sent])

      const [raw] = yield* drain(vhost.name, queue)
      assert.strictEqual(raw?.content.toString("utf8"), sent.body)
      assert.strictEqual(raw?.properties.deliveryMode, 2)
      assert.strictEqual(raw?.properties.contentType, "application/json")
      assert.strictEqual(raw?.properties.messageId, sent.messageId)
      assert.strictEqual(raw?.properties.correlationId, "c-1")
      assert.deepStrictEqual(raw?.properties.headers, sent.headers)
    })
  )

  it.effect("delivers a malformed message as it is, headers as text, and dead-letters it byte for byte", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options())
      // As an outside producer may send it: not JSON, no ids, typed headers.
      const body = Buffer.from('not json {"', "utf8")
      yield* admin(vhost.name, async (channel) => {
        channel.publish(Exchanges.replies, "geometry.mesh", body, { headers: { attempt: 3, retry: true, who: "w-1" } })
      })
      const received = yield* Deferred.make<Delivery>()
      const consumer = yield* Effect.forkChild(
        broker.consume(Queues.replies, (delivery) =>
          Deferred.succeed(received, delivery).pipe(Effect.as(Disposition.deadLetter("malformed reply")))
        )
      )
      assert.deepStrictEqual(yield* Deferred.await(received), {
        exchange: Exchanges.replies,
        routingKey: "geometry.mesh",
        messageId: undefined,
        correlationId: undefined,
        headers: { attempt: "3", retry: "true", who: "w-1" },
        body: 'not json {"',
        redelivered: false
      })
      yield* eventually(
        "the reply is dead-lettered",
        Effect.map(counts(vhost.name, Queues.deadLetters), (c) => c.ready === 1)
      )
      const [copy] = yield* drain(vhost.name, Queues.deadLetters)
      assert.isTrue(copy?.content.equals(body))
      // The quorum DLQ adds its own `x-delivery-count` when it delivers.
      const { "x-delivery-count": _count, ...headers } = copy?.properties.headers ?? {}
      assert.deepStrictEqual(headers, {
        attempt: 3,
        retry: true,
        who: "w-1",
        [deadLetterReasonHeader]: "malformed reply"
      })
      assert.strictEqual(copy?.properties.messageId, undefined)
      yield* Fiber.interrupt(consumer)
    })
  )

  it.effect("confirms an unroutable task and reports it in a warning", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options())
      const [, logs] = yield* captureLogs(
        broker.publish([message(Exchanges.tasks, "nobody.listens", "{}", "m-unroutable")])
      )
      assert.isTrue(
        logs.some((line) => line.includes("unroutable") && line.includes("nobody.listens")),
        logs.join("\n")
      )
    })
  )

  it.effect("drops a cancellation notice nobody subscribed to without a warning", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options())
      const [, logs] = yield* captureLogs(
        broker.publish([
          message(Exchanges.tasks, "nobody.listens.cancel", "{}", "m-notice"),
          message(Exchanges.tasks, "nobody.listens", "{}", "m-task")
        ])
      )
      const unroutable = logs.filter((line) => line.includes("unroutable"))
      assert.strictEqual(unroutable.length, 1, logs.join("\n"))
      assert.notInclude(unroutable[0], "nobody.listens.cancel")
    })
  )

  it.effect("requeues what a dead-letter copy could not be published for, instead of losing it", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options())
      const queue = yield* boundQueue(vhost.name, "test.dlx-missing", Exchanges.tasks, "dlx.#")
      yield* Effect.acquireRelease(
        admin(vhost.name, (channel) => channel.deleteExchange(Exchanges.deadLetter)),
        () =>
          admin(vhost.name, async (channel) => {
            await channel.assertExchange(Exchanges.deadLetter, "topic", { durable: true })
            await channel.bindQueue(Queues.deadLetters, Exchanges.deadLetter, "#")
          })
      )
      const seen: Array<boolean> = []
      yield* broker.publish([message(Exchanges.tasks, "dlx.k", "poison")])
      const consumer = yield* Effect.forkChild(
        broker.consume(queue, (delivery) =>
          Effect.sync(() => {
            seen.push(delivery.redelivered)
            return delivery.redelivered ? Disposition.ack : Disposition.deadLetter("cannot be processed")
          })
        )
      )
      yield* eventually(
        "delivered again after the failed dead-lettering",
        Effect.sync(() => seen.length === 2)
      )
      assert.deepStrictEqual(seen, [false, true])
      const dead = yield* drain(vhost.name, Queues.deadLetters)
      assert.deepStrictEqual(
        dead.filter((m) => m.properties.messageId === "m-dlx.k-poison"),
        [],
        "no copy reached the DLQ"
      )
      yield* Fiber.interrupt(consumer)
    })
  )

  it.effect("fails at startup with wrong credentials, never showing the password", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const password = "not-the-password-3f9c"
      const [error, logs] = yield* captureLogs(
        Effect.flip(AmqpBroker.make(vhost.options({ password: Redacted.make(password) })))
      )
      assert.instanceOf(error, BrokerUnavailable)
      assert.include(error.message, "ACCESS_REFUSED")
      assert.notInclude(error.message, password)
      assert.notInclude(logs.join("\n"), password)
    })
  )

  it.effect("fails at startup when nothing listens, quickly", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const error = yield* Effect.flip(
        AmqpBroker.make({ ...vhost.options(), url: `amqp://guest@127.0.0.1:1/${vhost.name}` })
      ).pipe(Effect.timeout("5 seconds"))
      assert.instanceOf(error, BrokerUnavailable)
      assert.include(error.reason, "ECONNREFUSED")
    })
  )

  it.effect("connects with a password that a URL would garble (%, @, :, /, non-ASCII)", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const user = `orch_t_${process.pid}_user`
      const password = "p%41ss:w@rd/ü ünïcode"
      yield* Effect.acquireRelease(
        Effect.promise(async () => {
          await rabbitmqctl(["add_user", user, password])
          await rabbitmqctl(["set_permissions", "-p", vhost.name, user, ".*", ".*", ".*"])
        }),
        () => Effect.promise(() => rabbitmqctl(["delete_user", user]).catch(() => undefined))
      )
      const broker = yield* AmqpBroker.make({
        ...vhost.options(),
        url: amqpUrl(vhost.name, rabbit, user),
        password: Redacted.make(password)
      })
      yield* broker.publish([message(Exchanges.replies, "auth.k", "{}", "m-auth")])
    })
  )
})

/** A broker on `/` of the private node, with quick reconnects. */
const privateBroker = Effect.flatMap(PrivateRabbit, (node) => AmqpBroker.make(brokerOptions("/", node.server)))

const reply = (body: string) => message(Exchanges.replies, "geometry.mesh", body)

layer(PrivateRabbitLayer.layer, { excludeTestServices: true, timeout: "120 seconds" })(
  "AmqpBroker across a RabbitMQ outage (private node)",
  (it) => {
    it.effect(
      "fails publishes during the outage, then publishes again, resumes consuming and redelivers the unacknowledged",
      () =>
        Effect.gen(function* () {
          const node = yield* PrivateRabbit
          const broker = yield* privateBroker
          const seen: Array<[string, boolean]> = []
          let heldInterrupted = false
          const consumer = yield* Effect.forkChild(
            broker.consume(
              Queues.replies,
              (delivery) =>
                Effect.suspend(() => {
                  seen.push([delivery.body, delivery.redelivered])
                  if (delivery.body !== "held" || delivery.redelivered) return Effect.succeed(Disposition.ack)
                  // Never settled: in flight when the broker goes away.
                  return Effect.never.pipe(
                    Effect.onInterrupt(() =>
                      Effect.sync(() => {
                        heldInterrupted = true
                      })
                    )
                  )
                }),
              { prefetch: 5 }
            )
          )
          yield* broker.publish([reply("before"), reply("held")])
          yield* eventually(
            "'before' acknowledged and 'held' in flight",
            Effect.map(counts("/", Queues.replies, node.server), (c) => c.ready === 0 && c.unacked === 1)
          )

          yield* node.stopApp
          yield* eventually(
            "publishing fails",
            Effect.map(Effect.exit(broker.publish([reply("probe")])), (exit) => exit._tag === "Failure")
          )
          const during = yield* Effect.flip(broker.publish([reply("during")]))
          assert.instanceOf(during, BrokerUnavailable)
          assert.include(during.reason, "not connected")
          yield* eventually(
            "the in-flight handler is interrupted",
            Effect.sync(() => heldInterrupted)
          )
          assert.isUndefined(consumer.pollUnsafe(), "the consumer keeps running through the outage")

          yield* node.startApp
          yield* eventually(
            "publishing works again",
            Effect.map(Effect.exit(broker.publish([reply("after")])), (exit) => exit._tag === "Success"),
            { within: "30 seconds" }
          )
          yield* eventually(
            "the consumer resumed: 'after' delivered and 'held' delivered again",
            Effect.sync(
              () =>
                seen.some(([body]) => body === "after") &&
                seen.some(([body, redelivered]) => body === "held" && redelivered)
            ),
            { within: "30 seconds" }
          )
          assert.strictEqual(seen.filter(([body]) => body === "before").length, 1, "acknowledged before the outage")
          assert.isFalse(
            seen.some(([body]) => body === "during"),
            "a publish that failed did not go out"
          )
          yield* eventually(
            "everything acknowledged",
            Effect.map(counts("/", Queues.replies, node.server), (c) => c.ready === 0 && c.unacked === 0)
          )
          assert.isUndefined(consumer.pollUnsafe())
          yield* Fiber.interrupt(consumer)
        })
    )
  }
)
