import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Broker, Disposition } from "../../src/broker/Broker.ts"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import { Exchanges, Queues } from "../../src/domain/Messages.ts"
import { eventually } from "../utils/eventually.ts"
import { BrokerFixture, brokerContract, message } from "./contract.ts"

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

/** The fixture of the contract suite, on the broker's own controls. */
const memoryFixture = Layer.effect(
  BrokerFixture,
  Effect.gen(function* () {
    const memory = yield* MemoryBroker.MemoryBroker
    return BrokerFixture.of({
      bindQueue: (queue, exchange, pattern) =>
        memory.bind(queue, exchange, pattern).pipe(Effect.orDie, Effect.as(queue)),
      inQueue: (queue) =>
        Effect.map(memory.messages(queue), (messages) => messages.map(({ redelivered: _, ...m }) => m)),
      counts: (queue) =>
        Effect.all({
          ready: Effect.map(memory.messages(queue), (messages) => messages.length),
          unacked: Effect.map(memory.unacknowledged(queue), (messages) => messages.length)
        }),
      inject: (exchange, routingKey, body, headers) =>
        memory.inject(exchange, routingKey, body, { headers }).pipe(Effect.orDie)
    })
  })
).pipe(Layer.provideMerge(MemoryBroker.layerMemory))

brokerContract("Broker contract: in memory", memoryFixture)

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
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
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
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
  )

  it.effect("drops an unroutable message but records it", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.declareExchange("ex")
      yield* memory.bind("geometry", "ex", "geometry.*")
      yield* publishBodies("ex", "solver.balance", ["lost"])
      assert.deepStrictEqual(bodies(yield* memory.unroutable), ["lost"])
      assert.deepStrictEqual(yield* waiting("geometry"), [])
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
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
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
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
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
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
        "four in flight",
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 4)
      )
      assert.strictEqual(byConsumer.a?.length, 2)
      assert.strictEqual(byConsumer.b?.length, 2)
      yield* TestClock.adjust("1 second")
      yield* eventually(
        "the last two in flight",
        Effect.map(memory.unacknowledged(queue), (u) => u.length === 2)
      )
      assert.deepStrictEqual([...(byConsumer.a ?? []), ...(byConsumer.b ?? [])].sort(), ["1", "2", "3", "4", "5", "6"])
      yield* Fiber.interrupt(a)
      yield* Fiber.interrupt(b)
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
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
    }).pipe(Effect.provide(MemoryBroker.layerMemory))
  )
})
