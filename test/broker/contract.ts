/**
 * The Broker contract: every implementation of the port (RabbitMQ, in memory) must pass exactly these tests. Each
 * implementation gives, besides the Broker, a `BrokerFixture`: what a test needs that the port does not offer
 * (its own queues, what waits in a queue, raw messages from an outside producer). Tests share one broker, so each
 * works on queues and routing keys of its own.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, type Layer } from "effect"
import { Broker, BrokerUnavailable, type Delivery, Disposition, type OutgoingMessage } from "../../src/broker/Broker.ts"
import type { BrokerMessage } from "../../src/broker/MemoryBroker.ts"
import { deadLetterReasonHeader, Exchanges, Queues } from "../../src/domain/Messages.ts"
import { eventually } from "../utils/eventually.ts"

/** What the contract's tests need of a broker beyond the port. */
export class BrokerFixture extends Context.Service<
  BrokerFixture,
  {
    /** Declares a queue of the test's own bound to `exchange` with `pattern`; returns its name. */
    readonly bindQueue: (queue: string, exchange: string, pattern: string) => Effect.Effect<string>
    /** The messages now waiting in a queue (read by taking them where the broker cannot look without). */
    readonly inQueue: (queue: string) => Effect.Effect<ReadonlyArray<BrokerMessage>>
    /** Ready and delivered-but-unacknowledged messages of a queue. */
    readonly counts: (queue: string) => Effect.Effect<{ readonly ready: number; readonly unacked: number }>
    /** Publishes as an outside producer may: no ids, headers of its own. */
    readonly inject: (
      exchange: string,
      routingKey: string,
      body: string,
      headers: Readonly<Record<string, string>>
    ) => Effect.Effect<void>
  }
>()("test/broker/BrokerFixture") {}

export const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

export const message = (exchange: string, routingKey: string, body: string, id = `m-${routingKey}-${body}`) =>
  ({
    exchange,
    routingKey,
    messageId: id,
    correlationId: "c-1",
    headers: { traceparent, "x-saga-id": "s-1" },
    body
  }) satisfies OutgoingMessage

const bodies = (messages: ReadonlyArray<{ readonly body: string }>) => messages.map((m) => m.body)

const settled = (queue: string) =>
  Effect.flatMap(BrokerFixture, (fixture) => fixture.counts(queue)).pipe(
    Effect.map((c) => c.ready === 0 && c.unacked === 0)
  )

/** The dead-letter queue's copies of one message. */
const deadLettered = (messageId: string | undefined, body: string) =>
  Effect.flatMap(BrokerFixture, (fixture) => fixture.inQueue(Queues.deadLetters)).pipe(
    Effect.map((dead) => dead.filter((m) => m.messageId === messageId && m.body === body))
  )

export const brokerContract = <E>(name: string, broker: Layer.Layer<Broker | BrokerFixture, E>) =>
  layer(broker, { excludeTestServices: true, timeout: "60 seconds" })(name, (it) => {
    it.effect("delivers a message as it was published: ids, headers and body", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.roundtrip", Exchanges.tasks, "roundtrip.*")
        const sent = message(Exchanges.tasks, "roundtrip.mesh", '{"taskId":"t-1"}')
        yield* broker.publish([sent, message(Exchanges.tasks, "roundtrip.balance", "{}")])
        const received = yield* Deferred.make<Delivery>()
        const consumer = yield* Effect.forkChild(
          broker.consume(queue, (delivery) => Deferred.succeed(received, delivery).pipe(Effect.as(Disposition.ack)))
        )
        assert.deepStrictEqual(yield* Deferred.await(received), { ...sent, redelivered: false })
        yield* eventually("both acknowledged", settled(queue))
        yield* Fiber.interrupt(consumer)
      })
    )

    it.effect("holds at most `prefetch` unacknowledged deliveries, handled concurrently in order", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.prefetch", Exchanges.tasks, "prefetch.#")
        const all = Array.from({ length: 10 }, (_, i) => `${i}`)
        yield* broker.publish(all.map((body) => message(Exchanges.tasks, "prefetch.k", body)))
        const gate = yield* Deferred.make<void>()
        const started: Array<string> = []
        let inFlight = 0
        let maxInFlight = 0
        let done = 0
        const consumer = yield* Effect.forkChild(
          broker.consume(
            queue,
            (delivery) =>
              Effect.gen(function* () {
                started.push(delivery.body)
                inFlight++
                maxInFlight = Math.max(maxInFlight, inFlight)
                yield* Deferred.await(gate)
                inFlight--
                done++
                return Disposition.ack
              }),
            { prefetch: 3 }
          )
        )
        yield* eventually(
          "three handlers run at once",
          Effect.sync(() => inFlight === 3)
        )
        // The broker holds back the rest: three delivered and unacknowledged, seven ready.
        assert.deepStrictEqual(yield* fixture.counts(queue), { ready: 7, unacked: 3 })
        assert.deepStrictEqual(started, ["0", "1", "2"])
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(
          "every message handled",
          Effect.sync(() => done === 10)
        )
        yield* eventually("every message acknowledged", settled(queue))
        assert.deepStrictEqual(started, all)
        assert.strictEqual(maxInFlight, 3)
        yield* Fiber.interrupt(consumer)
      })
    )

    it.effect(
      "settles per disposition: ack removes, requeue redelivers, dead-letter moves to the DLQ with the reason",
      () =>
        Effect.gen(function* () {
          const broker = yield* Broker
          const fixture = yield* BrokerFixture
          const queue = yield* fixture.bindQueue("contract.dispositions", Exchanges.tasks, "dispositions.#")
          const seen: Array<[string, boolean]> = []
          yield* broker.publish(
            ["requeue-once", "poison", "fine"].map((body) => message(Exchanges.tasks, "dispositions.mesh", body))
          )
          const consumer = yield* Effect.forkChild(
            broker.consume(
              queue,
              (delivery) =>
                Effect.sync(() => {
                  seen.push([delivery.body, delivery.redelivered])
                  if (delivery.body === "requeue-once" && !delivery.redelivered) return Disposition.requeue
                  if (delivery.body === "poison") return Disposition.deadLetter("malformed task: expected object")
                  return Disposition.ack
                }),
              { prefetch: 1 }
            )
          )
          yield* eventually(
            "four deliveries",
            Effect.sync(() => seen.length === 4)
          )
          assert.deepStrictEqual(seen, [
            ["requeue-once", false],
            ["requeue-once", true],
            ["poison", false],
            ["fine", false]
          ])
          yield* eventually("all settled", settled(queue))
          const dead = yield* deadLettered("m-dispositions.mesh-poison", "poison")
          assert.strictEqual(dead.length, 1)
          const [copy] = dead
          assert.strictEqual(copy?.exchange, Exchanges.deadLetter)
          assert.strictEqual(copy?.routingKey, "dispositions.mesh")
          assert.strictEqual(copy?.correlationId, "c-1")
          assert.strictEqual(copy?.headers[deadLetterReasonHeader], "malformed task: expected object")
          assert.strictEqual(copy?.headers.traceparent, traceparent)
          yield* Fiber.interrupt(consumer)
        })
    )

    it.effect("gives in-flight deliveries back, as redelivered, when the consumer is interrupted", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.interrupt", Exchanges.tasks, "interrupt.#")
        yield* broker.publish(["a", "b", "c"].map((body) => message(Exchanges.tasks, "interrupt.k", body)))
        let running = 0
        const slow = yield* Effect.forkChild(
          broker.consume(
            queue,
            () =>
              Effect.sync(() => running++).pipe(
                Effect.andThen(Effect.never),
                Effect.ensuring(Effect.sync(() => running--))
              ),
            { prefetch: 2 }
          )
        )
        yield* eventually(
          "two in flight",
          Effect.sync(() => running === 2)
        )
        yield* Fiber.interrupt(slow)
        assert.strictEqual(running, 0)
        yield* eventually(
          "all back in the queue",
          Effect.map(fixture.counts(queue), (c) => c.ready === 3 && c.unacked === 0)
        )
        const again: Array<[string, boolean]> = []
        const next = yield* Effect.forkChild(
          broker.consume(queue, (delivery) =>
            Effect.sync(() => {
              again.push([delivery.body, delivery.redelivered])
              return Disposition.ack
            })
          )
        )
        yield* eventually(
          "all delivered again",
          Effect.sync(() => again.length === 3)
        )
        assert.deepStrictEqual(
          [...again].sort(([x], [y]) => x.localeCompare(y)),
          [
            ["a", true],
            ["b", true],
            ["c", false]
          ]
        )
        yield* Fiber.interrupt(next)
      })
    )

    it.effect("delivers again a message whose handler dies", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.dies", Exchanges.tasks, "dies.#")
        yield* broker.publish([message(Exchanges.tasks, "dies.k", "x")])
        const seen: Array<boolean> = []
        const consumer = yield* Effect.forkChild(
          broker.consume(queue, (delivery) =>
            Effect.suspend(() => {
              seen.push(delivery.redelivered)
              return delivery.redelivered ? Effect.succeed(Disposition.ack) : Effect.die("handler bug")
            })
          )
        )
        yield* eventually(
          "delivered twice",
          Effect.sync(() => seen.length === 2)
        )
        assert.deepStrictEqual(seen, [false, true])
        yield* eventually("acknowledged", settled(queue))
        yield* Fiber.interrupt(consumer)
      })
    )

    it.effect("delivers a message from an outside producer as it is, without ids, and can dead-letter it", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.outside", Exchanges.replies, "outside.#")
        yield* fixture.inject(Exchanges.replies, "outside.mesh", 'not json {"', { who: "w-1" })
        const received = yield* Deferred.make<Delivery>()
        const consumer = yield* Effect.forkChild(
          broker.consume(queue, (delivery) =>
            Deferred.succeed(received, delivery).pipe(Effect.as(Disposition.deadLetter("malformed reply")))
          )
        )
        assert.deepStrictEqual(yield* Deferred.await(received), {
          exchange: Exchanges.replies,
          routingKey: "outside.mesh",
          messageId: undefined,
          correlationId: undefined,
          headers: { who: "w-1" },
          body: 'not json {"',
          redelivered: false
        })
        yield* eventually("the message is dead-lettered", settled(queue))
        const [copy] = yield* deadLettered(undefined, 'not json {"')
        assert.strictEqual(copy?.headers[deadLetterReasonHeader], "malformed reply")
        assert.strictEqual(copy?.headers.who, "w-1")
        yield* Fiber.interrupt(consumer)
      })
    )

    it.effect("fails a publish to a missing exchange with BrokerUnavailable and keeps working afterwards", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const fixture = yield* BrokerFixture
        const queue = yield* fixture.bindQueue("contract.after-error", Exchanges.tasks, "after.#")
        const error = yield* Effect.flip(
          broker.publish([message(Exchanges.tasks, "after.first", "ok"), message("nowhere", "x", "bad")])
        )
        assert.instanceOf(error, BrokerUnavailable)
        assert.include(error.reason, "nowhere")
        yield* broker.publish([message(Exchanges.tasks, "after.second", "later")])
        yield* broker.publish([message(Exchanges.tasks, "after.third", "and later")])
        // A failed batch may have been published in part (at least once); the later publishes all arrive.
        assert.includeMembers(bodies(yield* fixture.inQueue(queue)), ["later", "and later"])
      })
    )

    it.effect("fails to consume a missing queue with BrokerUnavailable", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        const error = yield* Effect.flip(broker.consume("missing", () => Effect.succeed(Disposition.ack)))
        assert.instanceOf(error, BrokerUnavailable)
        assert.include(error.reason, "missing")
      })
    )

    it.effect("is healthy while it can publish", () =>
      Effect.gen(function* () {
        const broker = yield* Broker
        yield* broker.health
      })
    )
  })
