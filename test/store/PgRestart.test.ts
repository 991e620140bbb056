/**
 * PostgreSQL restarted while transactions are in flight: every `transact` either commits once or fails with a typed
 * error; with the retry policy all of them complete, and the history has no duplicate rows. These tests stop and
 * crash PostgreSQL, so they run on a private cluster: the machine's own serves the other test files meanwhile.
 */
import { assert, layer } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Option } from "effect"
import { SqlClient } from "effect/sql"
import { StoreUnavailable } from "../../src/domain/errors.ts"
import type { SagaId, SagaInstance } from "../../src/domain/Saga.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"
import { eventually } from "../utils/eventually.ts"
import * as PrivateClusterLayer from "../utils/PrivateCluster.ts"
import { PrivateCluster, type ShutdownMode } from "../utils/PrivateCluster.ts"

const increments = 200
const concurrency = 8
/** The increment whose commit is in flight when the restart begins. */
const inDoubtAt = 20

const count = (saga: SagaInstance) => Number(saga.context.count)

const incremented = (saga: SagaInstance) =>
  StepOutcome.Advance({
    state: "COUNTING",
    status: "RUNNING",
    context: { count: count(saga) + 1 },
    event: "Incremented"
  })

/**
 * Increments the counter. The transaction moving the counter from `stallAt` asks for a synchronous commit, which the
 * cluster cannot give (its standby does not exist): the commit is written and flushed locally and then waits, holding
 * the saga's row lock, until the server goes down. Its caller sees the connection die at COMMIT although the
 * transaction committed: the ambiguous case a retry must not apply twice.
 */
const increment = (stallAt: number) => (saga: SagaInstance) =>
  Effect.gen(function* () {
    if (count(saga) === stallAt) {
      const sql = yield* SqlClient.SqlClient
      yield* sql`SET LOCAL synchronous_commit = on`.pipe(Effect.orDie)
    }
    return incremented(saga)
  })

/** The saga row and its history, counted by the database itself. */
const sagaRow = (id: SagaId) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{
      version: number
      counter: number
      rows: number
      distinctVersions: number
      distinctTransitions: number
      minVersion: number
      maxVersion: number
    }>`
      SELECT s.lock_version AS version, (s.context->>'count')::int AS counter, count(*)::int AS rows,
             count(DISTINCT t.lock_version)::int AS "distinctVersions",
             count(DISTINCT t.transition_id)::int AS "distinctTransitions",
             min(t.lock_version) AS "minVersion", max(t.lock_version) AS "maxVersion"
      FROM orchestrator.saga_instances s JOIN orchestrator.saga_transitions t ON t.saga_id = s.id
      WHERE s.id = ${id} GROUP BY s.id`.pipe(Effect.orDie)
    return { ...rows[0] }
  })

const startCounter = Effect.gen(function* () {
  const store = yield* SagaStore
  const { saga } = yield* store.create({ sagaType: "COUNTER", state: "COUNTING", context: { count: 0 } })
  return saga.id
})

/** Exactly one history row per version 0..n, none twice, none missing, and the saga at version n. */
const assertAppliedOnce = Effect.fnUntraced(function* (id: SagaId, n: number) {
  const store = yield* SagaStore
  const saga = yield* store.get(id)
  assert.strictEqual(saga.lockVersion, n)
  assert.strictEqual(count(saga), n)
  const history = yield* store.history(id)
  assert.deepStrictEqual(
    history.map((t) => t.lockVersion),
    Array.from({ length: n + 1 }, (_, version) => version)
  )
  const row = yield* sagaRow(id)
  assert.deepStrictEqual(row, {
    version: n,
    counter: n,
    rows: n + 1,
    distinctVersions: n + 1,
    distinctTransitions: n + 1,
    minVersion: 0,
    maxVersion: n
  })
})

const restartsUnderLoad = (mode: ShutdownMode) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const cluster = yield* PrivateCluster
    const id = yield* startCounter

    const running = yield* Effect.forEach(
      Array.from({ length: increments }),
      () => Effect.exit(store.transact(id, increment(inDoubtAt))),
      { concurrency }
    ).pipe(Effect.forkChild)

    // In flight, seen from the server: the in-doubt commit waits for its standby and the other fibers' transactions
    // wait behind its row lock.
    yield* eventually(
      "one commit waits for the standby and the others for its lock",
      cluster
        .superuser(`
          SELECT count(*) FILTER (WHERE wait_event = 'SyncRep') = 1
             AND count(*) FILTER (WHERE wait_event_type = 'Lock') = ${concurrency - 1}
          FROM pg_stat_activity WHERE datname = current_database() AND usename = 'orchestrator_app'`)
        .pipe(Effect.map((out) => out.trim() === "t"))
    )
    const before = yield* sagaRow(id)
    assert.strictEqual(before.version, inDoubtAt)

    yield* cluster.restart(mode)

    const exits = yield* Fiber.join(running)
    const failures = exits.filter(Exit.isFailure).map((exit) => Cause.pretty(exit.cause))
    assert.deepStrictEqual(failures, [])
    yield* assertAppliedOnce(id, increments)
  })

/** The same store with no retry budget: a failure surfaces at once. */
const withoutRetries = Effect.provide(PgSagaStore.layerNoDeps({ retryFor: Duration.zero }))

/** The failure is the typed `StoreUnavailable`, not a defect; returns it. */
const assertStoreUnavailable = (exit: Exit.Exit<unknown, unknown>): StoreUnavailable => {
  if (Exit.isSuccess(exit)) return assert.fail("expected a failure")
  assert.isFalse(Cause.hasDies(exit.cause), Cause.pretty(exit.cause))
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isNone(error) || !(error.value instanceof StoreUnavailable)) return assert.fail(Cause.pretty(exit.cause))
  assert.strictEqual(error.value.operation, "transact")
  return error.value
}

layer(
  PrivateClusterLayer.layerStore({
    // A synchronous standby that never connects: only transactions that ask for `synchronous_commit = on` wait for
    // it (see `increment`); everything else commits locally as usual.
    postgresql: { synchronous_standby_names: "'absent_standby'", synchronous_commit: "local" },
    maxConnections: concurrency + 2
  }),
  { excludeTestServices: true, timeout: "60 seconds" }
)("SagaStore on PostgreSQL restarted under load", (it) => {
  it.effect("applies every transact exactly once across a fast shutdown and restart", () => restartsUnderLoad("fast"))

  it.effect("applies every transact exactly once across an immediate shutdown and crash recovery", () =>
    restartsUnderLoad("immediate")
  )

  it.effect("fails with StoreUnavailable and writes nothing when there is no retry budget and the server is down", () =>
    Effect.gen(function* () {
      const cluster = yield* PrivateCluster
      const store = yield* SagaStore
      const id = yield* startCounter

      // A transaction that has locked the saga and is deciding when the server goes down.
      const deciding = yield* Deferred.make<void>()
      const decide = yield* Deferred.make<void>()
      const inFlight = yield* store
        .transact(id, (saga) =>
          Effect.gen(function* () {
            yield* Deferred.succeed(deciding, undefined)
            yield* Deferred.await(decide)
            return incremented(saga)
          })
        )
        .pipe(Effect.exit, Effect.forkChild)
      yield* Deferred.await(deciding)
      yield* cluster.stop("fast")
      yield* Deferred.succeed(decide, undefined)
      // It lost its connection before COMMIT, so it did not commit, and it does not claim a commit in doubt.
      assert.isFalse(assertStoreUnavailable(yield* Fiber.join(inFlight)).commitInDoubt)

      // And one that starts while the server is down.
      const refused = yield* Effect.exit(store.transact(id, (saga) => Effect.succeed(incremented(saga))))
      assert.deepInclude(assertStoreUnavailable(refused), { commitInDoubt: false })
      assert.include(assertStoreUnavailable(refused).reason, "ECONNREFUSED")

      yield* cluster.start
      yield* assertAppliedOnce(id, 0)
    }).pipe(withoutRetries)
  )

  it.effect("reports a commit in doubt as possibly applied when there is no retry budget (it did apply, whole)", () =>
    Effect.gen(function* () {
      const cluster = yield* PrivateCluster
      const store = yield* SagaStore
      const id = yield* startCounter

      const inFlight = yield* store.transact(id, increment(0)).pipe(Effect.exit, Effect.forkChild)
      yield* eventually(
        "the commit waits for the standby",
        cluster
          .superuser(`SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'`)
          .pipe(Effect.map((out) => out.trim() === "t"))
      )
      yield* cluster.stop("fast")
      // Not "nothing was written": the caller is told that the outcome is unknown.
      assert.isTrue(assertStoreUnavailable(yield* Fiber.join(inFlight)).commitInDoubt)

      yield* cluster.start
      // The commit went through before the server stopped: all of it, once.
      yield* assertAppliedOnce(id, 1)
    }).pipe(withoutRetries)
  )
})
