/** Retention's rounds on the in-memory store and the test clock: what is past the retention period goes, in batches. */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Metric } from "effect"
import { TestClock } from "effect/testing"
import type { SagaId } from "../../src/domain/Saga.ts"
import * as Metrics from "../../src/observability/Metrics.ts"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import * as Retention from "../../src/store/Retention.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"

const settings: Retention.RetentionSettings = {
  ...Retention.defaultRetentionSettings,
  keep: Duration.days(30),
  batchSize: 2
}

const startSaga = (key?: string) =>
  Effect.flatMap(SagaStore, (store) =>
    store.create({ sagaType: "RETENTION_TEST", state: "A", context: {}, idempotencyKey: key })
  ).pipe(Effect.map(({ saga }) => saga.id))

const finish = (id: SagaId) =>
  Effect.flatMap(SagaStore, (store) =>
    store.transact(id, (s) =>
      Effect.succeed(StepOutcome.Advance({ state: "DONE", status: "FAILED", context: s.context, event: "Failed" }))
    )
  )

const purgedSoFar = Effect.map(Metric.value(Metrics.purgedSagas), (state) => state.count)

describe("Retention", () => {
  it.effect("deletes the finished sagas past the retention period, in batches, and counts them", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const old = yield* Effect.forEach([1, 2, 3, 4, 5], () => startSaga())
      yield* Effect.forEach(old, finish)
      const running = yield* startSaga("key-of-a-running-saga")
      yield* TestClock.adjust(Duration.days(31))
      const recent = yield* startSaga()
      yield* finish(recent)
      const before = yield* purgedSoFar

      // Three batches (2, 2, 1), with a pause of the test clock's between them.
      const purging = yield* Effect.forkChild(Retention.purgeDue(settings))
      for (let pause = 0; pause < 3; pause++) yield* TestClock.adjust("100 millis")
      assert.deepStrictEqual(yield* Fiber.join(purging), { sagas: 5, idempotencyKeys: 1 })
      assert.strictEqual((yield* purgedSoFar) - before, 5)
      const left = (yield* store.find({ sagaType: "RETENTION_TEST" })).items.map((saga) => saga.id)
      assert.sameMembers(left, [running, recent])
      assert.deepStrictEqual(yield* Retention.purgeDue(settings), { sagas: 0, idempotencyKeys: 0 })
    }).pipe(Effect.provide(MemorySagaStore.layerMemory()))
  )
})
