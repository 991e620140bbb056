import { assert, layer } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import * as OutboxNotifications from "../../src/store/OutboxNotifications.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"
import { sagaStoreContract } from "./contract.ts"

sagaStoreContract("SagaStore contract: PostgreSQL", TestDatabase.layerStore())

const mesh = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh", payload: { taskId: "t-1" } }

layer(OutboxNotifications.layerPg.pipe(Layer.provideMerge(TestDatabase.layerStore())), {
  excludeTestServices: true,
  timeout: "60 seconds"
})("PgSagaStore outbox", (it) => {
  it.effect("wakes a listening relay when a transaction commits outbox messages", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const notifications = yield* OutboxNotifications.OutboxNotifications
      // The first signal says "look now" (something may have been committed before listening began).
      yield* notifications.next("1 hour")
      // With an hour of fallback, only the commit's notification can end this wait.
      const waiting = yield* Effect.forkChild(notifications.next("1 hour"))
      yield* store.create({ sagaType: "NOTIFY_TEST", state: "A", context: {}, messages: [mesh] })
      yield* Fiber.join(waiting).pipe(Effect.timeout("20 seconds"))
    })
  )

  it.effect("reports the outbox lag: the age of the oldest unpublished message", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      while ((yield* store.publishOutbox(500, () => Effect.void)) > 0) {}
      assert.strictEqual((yield* store.summary).outboxLagMillis, 0)
      yield* store.create({ sagaType: "LAG_TEST", state: "A", context: {}, messages: [mesh] })
      const summary = yield* store.summary
      assert.strictEqual(summary.outboxPending, 1)
      assert.isAbove(summary.outboxLagMillis, 0)
    })
  )
})
