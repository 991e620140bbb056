/**
 * The broker's `health`, which readiness reports: up while connected, failing with the reason once the connection
 * is gone — on RabbitMQ (a vhost of this file's own, deleted under the connected broker) and in memory.
 */
import { assert, it, layer } from "@effect/vitest"
import { Duration, Effect, Schedule } from "effect"
import * as AmqpBroker from "../../src/broker/AmqpBroker.ts"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import { layerVhost, rabbitmqctl, TestVhost } from "../utils/rabbit.ts"

layer(layerVhost(), { excludeTestServices: true, timeout: "60 seconds" })("Broker health on RabbitMQ", (it) => {
  it.effect("succeeds while connected, and says why not once the connection is lost", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const broker = yield* AmqpBroker.make(vhost.options({ reconnectMaxDelay: "200 millis" }))
      yield* broker.health
      yield* Effect.promise(() => rabbitmqctl(["delete_vhost", vhost.name]))
      const error = yield* broker.health.pipe(
        Effect.flip,
        Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 100 }),
        Effect.timeout(Duration.seconds(10))
      )
      assert.strictEqual(error._tag, "BrokerUnavailable")
      assert.include(error.message, "not connected")
    }).pipe(Effect.scoped)
  )
})

it.effect("the in-memory broker is healthy unless it simulates an outage", () =>
  Effect.gen(function* () {
    const { broker, control } = yield* MemoryBroker.make
    yield* broker.health
    yield* control.setAvailable(false)
    assert.strictEqual((yield* Effect.flip(broker.health))._tag, "BrokerUnavailable")
    yield* control.setAvailable(true)
    yield* broker.health
  })
)
