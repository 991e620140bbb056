import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { Broker, type Delivery, Disposition, type OutgoingMessage } from "../../src/broker/Broker.ts"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import { deadLetterReasonHeader, Exchanges, Queues } from "../../src/domain/Messages.ts"

const message = (exchange: string, routingKey: string, body = "{}"): OutgoingMessage => ({
  exchange,
  routingKey,
  messageId: `m-${routingKey}-${body}`,
  correlationId: "c-1",
  headers: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  body
})

/** Lets forked fibers run until `condition` holds; fails the test if it never does. */
const eventually = (condition: Effect.Effect<boolean>, what: string) =>
  Effect.gen(function* () {
    for (let round = 0; round < 500; round++) {
      if (yield* condition) return
      yield* Effect.yieldNow
    }
    assert.fail(`never happened: ${what}`)
  })

const waiting = (queue: string) => Effect.flatMap(MemoryBroker.MemoryBroker, (memory) => memory.messages(queue))

const bodies = (deliveries: ReadonlyArray<{ readonly body: string }>) => deliveries.map((d) => d.body)

/** A test queue bound to a fresh exchange with `#`. */
const testQueue = Effect.gen(function* () {
  const memory = yield* MemoryBroker.MemoryBroker
  yield* memory.declareExchange("test")
  yield* memory.bind("q", "test", "#")
  return "q"
})

const publishBodies = (exchange: string, routingKey: string, bodies: ReadonlyArray<string>) =>
  Effect.flatMap(Broker, (broker) => broker.publish(bodies.map((body) => message(exchange, routingKey, body))))

describe("MemoryBroker", () => {
  describe("topic matching", () => {
    it.each([
      ["geometry.mesh", "geometry.mesh", true],
      ["geometry.*", "geometry.mesh", true],
      ["geometry.*", "geometry.mesh.v2", false],
      ["geometry.*", "geometry", false],
      ["*.mesh", "geometry.mesh", true],
      ["#", "geometry.mesh", true],
      ["#", "solver", true],
      ["geometry.#", "geometry", true],
      ["geometry.#", "geometry.mesh.v2", true],
      ["geometry.#", "solver.balance", false],
      ["#.balance", "solver.balance", true],
      ["#.balance", "balance", true],
      ["*.#.v2", "geometry.mesh.v2", true],
      ["*.#.v2", "v2", false],
      ["gitlab.*.branch", "gitlab.delete.branch", true],
      ["gitlab.*.branch", "gitlab.branch", false],
      ["solver.balance", "solver.discard_run", false]
    ] as const)("%s against %s is %s", (pattern, key, expected) => {
      assert.strictEqual(MemoryBroker.matchesTopic(pattern, key), expected)
    })
  })

  it.effect("declares the topology of the RabbitMQ contract", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      assert.deepStrictEqual(yield* memory.bindings, [
        { queue: "orchestrator.replies", exchange: "orchestrator.replies", pattern: "#" },
        { queue: "orchestrator.replies.dlq", exchange: "orchestrator.dlx", pattern: "#" }
      ])
      const broker = yield* Broker
      yield* broker.publish([message(Exchanges.replies, "geometry.mesh", "r1")])
      yield* broker.publish([message(Exchanges.tasks, "geometry.mesh", "t1")])
      yield* broker.publish([message(Exchanges.deadLetter, "geometry.mesh", "d1")])
      assert.deepStrictEqual(bodies(yield* waiting(Queues.replies)), ["r1"])
      assert.deepStrictEqual(bodies(yield* waiting(Queues.deadLetters)), ["d1"])
      // Nothing is bound to the tasks exchange until workers bind their queues.
      assert.deepStrictEqual(bodies(yield* memory.unroutable), ["t1"])
      assert.deepStrictEqual(bodies(yield* memory.published), ["r1", "t1", "d1"])
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("routes a message to every queue whose binding matches, once per queue", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.declareExchange("ex")
      yield* memory.bind("geometry", "ex", "geometry.*")
      yield* memory.bind("all", "ex", "#")
      yield* memory.bind("all", "ex", "*.mesh")
      yield* memory.bind("solver", "ex", "solver.#")
      yield* memory.bind("elsewhere", Exchanges.tasks, "#")
      const broker = yield* Broker
      yield* broker.publish([
        message("ex", "geometry.mesh", "1"),
        message("ex", "solver.balance.extra", "2"),
        message("ex", "gitlab.prepare_branch", "3")
      ])
      assert.deepStrictEqual(bodies(yield* waiting("geometry")), ["1"])
      assert.deepStrictEqual(bodies(yield* waiting("all")), ["1", "2", "3"])
      assert.deepStrictEqual(bodies(yield* waiting("solver")), ["2"])
      assert.deepStrictEqual(bodies(yield* waiting("elsewhere")), [])
      const [first] = yield* waiting("geometry")
      assert.deepStrictEqual(first, { ...message("ex", "geometry.mesh", "1"), redelivered: false })
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("drops an unroutable message but records it", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.declareExchange("ex")
      yield* memory.bind("geometry", "ex", "geometry.*")
      yield* publishBodies("ex", "solver.balance", ["lost"])
      assert.deepStrictEqual(bodies(yield* memory.unroutable), ["lost"])
      assert.deepStrictEqual(yield* waiting("geometry"), [])
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("fails a publish to an unknown exchange and routes nothing of that batch", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const broker = yield* Broker
      const error = yield* Effect.flip(
        broker.publish([message(Exchanges.replies, "geometry.mesh", "ok"), message("nowhere", "x", "bad")])
      )
      assert.strictEqual(error._tag, "BrokerUnavailable")
      assert.include(error.reason, "nowhere")
      assert.deepStrictEqual(yield* memory.published, [])
      assert.deepStrictEqual(yield* waiting(Queues.replies), [])
      const bindError = yield* Effect.flip(memory.bind("q", "nowhere", "#"))
      assert.strictEqual(bindError._tag, "BrokerUnavailable")
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("fails every publish during a simulated outage", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.setAvailable(false)
      const error = yield* Effect.flip(publishBodies(Exchanges.replies, "geometry.mesh", ["during"]))
      assert.strictEqual(error._tag, "BrokerUnavailable")
      yield* memory.setAvailable(true)
      yield* publishBodies(Exchanges.replies, "geometry.mesh", ["after"])
      assert.deepStrictEqual(bodies(yield* waiting(Queues.replies)), ["after"])
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("fails to consume an unknown queue", () =>
    Effect.gen(function* () {
      const broker = yield* Broker
      const error = yield* Effect.flip(broker.consume("missing", () => Effect.succeed(Disposition.ack)))
      assert.strictEqual(error._tag, "BrokerUnavailable")
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("delivers in FIFO order with at most `prefetch` unacknowledged deliveries", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const broker = yield* Broker
      const queue = yield* testQueue
      const started: Array<string> = []
      let inFlight = 0
      let maxInFlight = 0
      const consumer = yield* Effect.forkChild(
        broker.consume(
          queue,
          (delivery) =>
            Effect.gen(function* () {
              started.push(delivery.body)
              inFlight++
              maxInFlight = Math.max(maxInFlight, inFlight)
              yield* Effect.sleep("1 second")
              inFlight--
              return Disposition.ack
            }),
          { prefetch: 3 }
        )
      )
      const all = Array.from({ length: 10 }, (_, i) => `${i}`)
      yield* publishBodies("test", "k", all)
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 3),
        "three deliveries in flight"
      )
      assert.deepStrictEqual(bodies(yield* waiting(queue)), all.slice(3))
      assert.deepStrictEqual(started, ["0", "1", "2"])
      for (let round = 1; round <= 4; round++) {
        yield* TestClock.adjust("1 second")
        yield* eventually(
          Effect.sync(() => started.length === Math.min(10, 3 * (round + 1))),
          `round ${round} started`
        )
      }
      yield* TestClock.adjust("1 second")
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 0 && inFlight === 0),
        "all settled"
      )
      assert.deepStrictEqual(started, all)
      assert.strictEqual(maxInFlight, 3)
      assert.deepStrictEqual(yield* waiting(queue), [])
      yield* Fiber.interrupt(consumer)
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("shares a queue between competing consumers, each within its own prefetch", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const broker = yield* Broker
      const queue = yield* testQueue
      const byConsumer: Record<string, Array<string>> = { a: [], b: [] }
      const consumer = (name: "a" | "b") =>
        broker.consume(
          queue,
          (delivery) =>
            Effect.sync(() => byConsumer[name]?.push(delivery.body)).pipe(
              Effect.andThen(Effect.sleep("1 second")),
              Effect.as(Disposition.ack)
            ),
          { prefetch: 2 }
        )
      const a = yield* Effect.forkChild(consumer("a"))
      const b = yield* Effect.forkChild(consumer("b"))
      yield* publishBodies("test", "k", ["1", "2", "3", "4", "5", "6"])
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 4),
        "four in flight"
      )
      assert.strictEqual(byConsumer.a?.length, 2)
      assert.strictEqual(byConsumer.b?.length, 2)
      yield* TestClock.adjust("1 second")
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 2),
        "the last two in flight"
      )
      assert.deepStrictEqual([...(byConsumer.a ?? []), ...(byConsumer.b ?? [])].sort(), ["1", "2", "3", "4", "5", "6"])
      yield* Fiber.interrupt(a)
      yield* Fiber.interrupt(b)
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("settles per disposition: ack removes, requeue redelivers, dead-letter moves to the DLQ", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const broker = yield* Broker
      const queue = yield* testQueue
      const seen: Array<[string, boolean]> = []
      const handle = (delivery: Delivery) =>
        Effect.sync(() => {
          seen.push([delivery.body, delivery.redelivered])
          if (delivery.body === "requeue-once" && !delivery.redelivered) return Disposition.requeue
          if (delivery.body === "poison") return Disposition.deadLetter("malformed task: expected object")
          return Disposition.ack
        })
      yield* publishBodies("test", "geometry.mesh", ["requeue-once", "poison", "fine"])
      const consumer = yield* Effect.forkChild(broker.consume(queue, handle, { prefetch: 1 }))
      yield* eventually(
        Effect.sync(() => seen.length === 4),
        "four deliveries"
      )
      assert.deepStrictEqual(seen, [
        ["requeue-once", false],
        ["requeue-once", true],
        ["poison", false],
        ["fine", false]
      ])
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 0),
        "all settled"
      )
      assert.deepStrictEqual(yield* waiting(queue), [])
      const deadLetters = yield* waiting(Queues.deadLetters)
      assert.strictEqual(deadLetters.length, 1)
      const [dead] = deadLetters
      assert.strictEqual(dead?.body, "poison")
      assert.strictEqual(dead?.exchange, Exchanges.deadLetter)
      assert.strictEqual(dead?.routingKey, "geometry.mesh")
      assert.strictEqual(dead?.messageId, "m-geometry.mesh-poison")
      assert.strictEqual(dead?.headers[deadLetterReasonHeader], "malformed task: expected object")
      assert.strictEqual(dead?.headers.traceparent, message("test", "k").headers.traceparent)
      yield* Fiber.interrupt(consumer)
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("requeues in-flight deliveries as redelivered when the consumer is interrupted", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const broker = yield* Broker
      const queue = yield* testQueue
      const acked: Array<string> = []
      yield* publishBodies("test", "k", ["a", "b", "c"])
      const slow = yield* Effect.forkChild(
        broker.consume(queue, () => Effect.sleep("1 minute").pipe(Effect.as(Disposition.ack)), { prefetch: 2 })
      )
      yield* eventually(
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 2),
        "two in flight"
      )
      yield* Fiber.interrupt(slow)
      assert.deepStrictEqual(yield* memory.unacknowledged(queue), [])
      const back = yield* waiting(queue)
      // Back where they were: nothing lost, nothing reordered.
      assert.deepStrictEqual(
        back.map((d) => [d.body, d.redelivered]),
        [
          ["a", true],
          ["b", true],
          ["c", false]
        ]
      )
      const redelivered: Array<boolean> = []
      const next = yield* Effect.forkChild(
        broker.consume(queue, (delivery) =>
          Effect.sync(() => {
            acked.push(delivery.body)
            redelivered.push(delivery.redelivered)
            return Disposition.ack
          })
        )
      )
      yield* eventually(
        Effect.sync(() => acked.length === 3),
        "all delivered again"
      )
      assert.deepStrictEqual(acked, ["a", "b", "c"])
      assert.deepStrictEqual(redelivered, [true, true, false])
      yield* Fiber.interrupt(next)
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("redelivers a message whose handler dies", () =>
    Effect.gen(function* () {
      const broker = yield* Broker
      const queue = yield* testQueue
      const seen: Array<boolean> = []
      yield* publishBodies("test", "k", ["x"])
      const consumer = yield* Effect.forkChild(
        broker.consume(queue, (delivery) =>
          Effect.suspend(() => {
            seen.push(delivery.redelivered)
            return delivery.redelivered ? Effect.succeed(Disposition.ack) : Effect.die("handler bug")
          })
        )
      )
      yield* eventually(
        Effect.sync(() => seen.length === 2),
        "delivered twice"
      )
      assert.deepStrictEqual(seen, [false, true])
      assert.deepStrictEqual(yield* waiting(queue), [])
      yield* Fiber.interrupt(consumer)
    }).pipe(Effect.provide(MemoryBroker.layer))
  )

  it.effect("injects raw messages without ids, as an outside producer may send them", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.inject(Exchanges.replies, "geometry.mesh", "not json")
      const [raw] = yield* waiting(Queues.replies)
      assert.deepStrictEqual(raw, {
        exchange: Exchanges.replies,
        routingKey: "geometry.mesh",
        messageId: undefined,
        correlationId: undefined,
        headers: {},
        body: "not json",
        redelivered: false
      })
      const error = yield* Effect.flip(memory.inject("nowhere", "k", "{}"))
      assert.strictEqual(error._tag, "BrokerUnavailable")
    }).pipe(Effect.provide(MemoryBroker.layer))
  )
})
