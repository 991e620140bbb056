import { spawn } from "node:child_process"
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { DateTime, Deferred, Effect, Fiber, Layer, Queue } from "effect"
import type { SagaId } from "../../src/domain/Saga.ts"
import { runtimeClient } from "../../src/store/Database.ts"
import * as OutboxNotifications from "../../src/store/OutboxNotifications.ts"
import { retentionLock } from "../../src/store/PgSagaStore/retention.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"
import { superuserConnection } from "../utils/postgres.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"
import { sagaStoreContract } from "./contract.ts"

sagaStoreContract("SagaStore contract: PostgreSQL", TestDatabase.layerStore())

const mesh = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh", payload: { taskId: "t-1" } }

layer(OutboxNotifications.layerPg.pipe(Layer.provideMerge(TestDatabase.layerStore())), {
  excludeTestServices: true,
  timeout: "60 seconds"
})("PgSagaStore outbox", (it) => {
  it.effect("with no relay of its own, announces committed outbox messages to the relays listening", () =>
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

  it.effect("relays at work at once publish disjoint batches: every message once, none while another holds it", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      while ((yield* store.publishOutbox(500, () => Effect.void)) > 0) {}
      const messages = Array.from({ length: 50 }, (_, n) => ({ ...mesh, payload: { taskId: `t-${n}` } }))
      yield* store.create({ sagaType: "RELAYS_TEST", state: "A", context: {}, messages })
      const published: Array<string> = []
      const record = (batch: ReadonlyArray<{ readonly messageId: string }>) =>
        Effect.sync(() => published.push(...batch.map((message) => message.messageId)))

      // One relay claims the oldest 10 and waits for its broker's confirms…
      const claimed = yield* Deferred.make<void>()
      const confirmed = yield* Deferred.make<void>()
      const slow = yield* Effect.forkChild(
        store.publishOutbox(10, (batch) =>
          record(batch).pipe(
            Effect.andThen(Deferred.succeed(claimed, undefined)),
            Effect.andThen(Deferred.await(confirmed))
          )
        )
      )
      yield* Deferred.await(claimed)
      // …while another drains the rest around them.
      let others = 0
      while (true) {
        const count = yield* store.publishOutbox(7, record)
        if (count === 0) break
        others += count
      }
      assert.strictEqual(others, 40)
      yield* Deferred.succeed(confirmed, undefined)
      assert.strictEqual(yield* Fiber.join(slow), 10)

      assert.strictEqual(published.length, 50)
      assert.strictEqual(new Set(published).size, 50)
      assert.strictEqual(yield* store.publishOutbox(500, record), 0)
    })
  )
})

/** The store as the service runs it: its relay in the same process, listening for other processes' commits. */
const storeWithRelay = Layer.unwrap(
  Effect.map(TestDatabase.TestDatabase, (db) =>
    PgSagaStore.layerNoDeps().pipe(
      Layer.provideMerge(OutboxNotifications.layerPg),
      Layer.provideMerge(runtimeClient(db.config, 20))
    )
  )
).pipe(Layer.provideMerge(TestDatabase.layer()))

layer(storeWithRelay, { excludeTestServices: true, timeout: "60 seconds" })(
  "PgSagaStore outbox, relay in process",
  (it) => {
    it.effect("wakes its own relay in memory, sending no notification from inside or after the transaction", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const notifications = yield* OutboxNotifications.OutboxNotifications
        const sql = yield* PgClient.PgClient
        const heard = yield* sql.listen(OutboxNotifications.channel)
        yield* notifications.next("1 hour")

        const created = yield* Effect.forkChild(notifications.next("1 hour"))
        const { saga } = yield* store.create({ sagaType: "NOTIFY_TEST", state: "A", context: {}, messages: [mesh] })
        yield* Fiber.join(created).pipe(Effect.timeout("20 seconds"))
        const stepped = yield* Effect.forkChild(notifications.next("1 hour"))
        yield* store.transact(saga.id as SagaId, () =>
          Effect.succeed(
            StepOutcome.Advance({ state: "B", status: "RUNNING", context: {}, event: "Moved", messages: [mesh] })
          )
        )
        yield* Fiber.join(stepped).pipe(Effect.timeout("20 seconds"))

        // Notifications on a channel arrive in commit order: the first one heard is the one sent after both commits.
        yield* sql`SELECT pg_notify(${OutboxNotifications.channel}, 'sentinel')`
        const first = yield* Queue.take(heard).pipe(Effect.timeout("20 seconds"))
        assert.strictEqual(first.payload, "sentinel")
      })
    )
  }
)

layer(TestDatabase.layerStore(), { excludeTestServices: true, timeout: "60 seconds" })(
  "PgSagaStore retention",
  (it) => {
    it.effect(
      "purges on one instance at a time: while another holds retention's turn, a purge is busy and deletes nothing",
      () =>
        Effect.gen(function* () {
          const store = yield* SagaStore
          const db = yield* TestDatabase.TestDatabase
          const { saga } = yield* store.create({ sagaType: "PURGE_TEST", state: "A", context: {} })
          yield* store.transact(saga.id, (s) =>
            Effect.succeed(
              StepOutcome.Advance({ state: "DONE", status: "COMPLETED", context: s.context, event: "Done" })
            )
          )
          // Another instance's purge, holding the turn for as long as this test needs.
          const other = yield* Effect.acquireRelease(
            Effect.sync(() =>
              spawn("psql", [
                "-X",
                ...superuserConnection(db.name),
                "-c",
                `BEGIN; SELECT pg_advisory_xact_lock(${retentionLock}); SELECT pg_sleep(30); COMMIT;`
              ])
            ),
            (child) => Effect.sync(() => child.kill("SIGKILL"))
          )
          assert.isDefined(other.pid)
          const held = `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`
          for (let round = 0; (yield* db.superuser(held)).trim() !== "1"; round++) {
            assert.isBelow(round, 200, "the other instance took retention's turn")
            yield* Effect.sleep("25 millis")
          }
          const finishedBefore = DateTime.add(yield* DateTime.now, { hours: 1 })
          const busy = yield* store.purge({ finishedBefore, limit: 100 })
          assert.deepStrictEqual(busy, { sagas: 0, idempotencyKeys: 0, busy: true })
          assert.strictEqual((yield* store.get(saga.id)).status, "COMPLETED")
        }).pipe(Effect.scoped)
    )
  }
)

layer(TestDatabase.layerStore(), { excludeTestServices: true, timeout: "60 seconds" })("PgSagaStore health", (it) => {
  it.effect("reports the database reachable, and the schema behind once a shipped migration is missing", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const db = yield* TestDatabase.TestDatabase
      assert.deepStrictEqual(yield* store.health, { database: { ok: true }, schema: { ok: true } })
      yield* db.superuser(
        "DELETE FROM orchestrator.effect_sql_migrations WHERE migration_id = (SELECT max(migration_id) FROM orchestrator.effect_sql_migrations)"
      )
      const behind = yield* store.health
      assert.deepStrictEqual(behind.database, { ok: true })
      assert.isFalse(behind.schema.ok)
      assert.match(behind.schema.detail ?? "", /this version needs \d+/)
    })
  )
})
