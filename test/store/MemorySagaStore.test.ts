import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { sagaStoreContract } from "./contract.ts"

sagaStoreContract("SagaStore contract: in memory", MemorySagaStore.layerMemory())

describe("MemorySagaStore", () => {
  it.effect("reports a saga as stuck once it has made no progress for longer than asked", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga } = yield* store.create({ sagaType: "T", state: "AWAITING_CONDENSER_INPUT", context: {} })
      yield* TestClock.adjust(Duration.minutes(14))
      assert.deepStrictEqual(yield* store.findStuck(Duration.minutes(15)), [])
      yield* TestClock.adjust(Duration.minutes(2))
      assert.deepStrictEqual(
        (yield* store.findStuck(Duration.minutes(15))).map((s) => s.saga.id),
        [saga.id]
      )
    }).pipe(Effect.provide(MemorySagaStore.layerMemory()))
  )

  it.effect("reports the outbox lag: the age of the oldest unpublished message", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const message = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh", payload: {} }
      assert.strictEqual((yield* store.summary).outboxLagMillis, 0)
      yield* store.create({ sagaType: "T", state: "A", context: {}, messages: [message] })
      yield* TestClock.adjust(Duration.seconds(5))
      yield* store.create({ sagaType: "T", state: "A", context: {}, messages: [message] })
      assert.deepInclude(yield* store.summary, { outboxPending: 2, outboxLagMillis: 5000 })
      yield* store.publishOutbox(10, () => Effect.void)
      assert.deepInclude(yield* store.summary, { outboxPending: 0, outboxLagMillis: 0 })
    }).pipe(Effect.provide(MemorySagaStore.layerMemory()))
  )
})
