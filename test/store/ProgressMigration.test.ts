/**
 * Upgrading a database whose sagas are mid-flight: rows as the previous schema kept them (the engine's bookkeeping
 * under `$saga` inside the context, what each saga waits for in its timer) are migrated to the `progress` column, and
 * every saga then continues to its end as if nothing had happened.
 */
import { NodeServices } from "@effect/platform-node"
import { PgMigrator } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { DateTime, Duration, Effect, Layer, Redacted } from "effect"
import * as MigratorFileSystem from "effect/sql/MigratorFileSystem"
import { awaitedTaskId } from "../../src/domain/Progress.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine, layer as engineLayer } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { migrate, migrationsDirectory, migrationsTable, runtimeClient } from "../../src/store/Database.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { passwords } from "../utils/postgres.ts"
import { TestDatabase, layer as testDatabase } from "../utils/TestDatabase.ts"

/** The schema as the version before the progress column left it: migrations 1 to 4. */
const migrateThroughPrevious = Effect.gen(function* () {
  const db = yield* TestDatabase
  const owner = { ...db.config, user: "orchestrator_owner", password: Redacted.make(passwords.owner) }
  yield* PgMigrator.run({
    loader: MigratorFileSystem.fromFileSystem(migrationsDirectory).pipe(
      Effect.map((migrations) => migrations.filter(([id]) => id <= 4))
    ),
    table: migrationsTable
  }).pipe(Effect.provide(runtimeClient(owner, 1)))
})

const ids = {
  preparing: "00000000-0000-7000-8000-00000000000a",
  awaitingInput: "00000000-0000-7000-8000-00000000000b",
  backingOff: "00000000-0000-7000-8000-00000000000c",
  compensating: "00000000-0000-7000-8000-00000000000d",
  completed: "00000000-0000-7000-8000-00000000000e"
} as const
const taskIds = { preparing: "0190a000-0000-7000-8000-000000000001", deleting: "0190a000-0000-7000-8000-000000000002" }

const input = { repo: "balance/plant-9", baseBranch: "main", inputRef: "inputs/upgrade.yaml", requestedBy: "upgrade" }
const prepared = { ...input, branch: "calc/upgrade", branchCommitSha: "c".repeat(40) }
const meshed = { ...prepared, meshRef: "meshes/upgrade.msh" }

/** Rows exactly as the previous version wrote them, an hour old. */
const previousRows = `
  INSERT INTO orchestrator.saga_instances
    (id, saga_type, current_state, status, context, correlation_id, lock_version, created_at, updated_at)
  VALUES
    ('${ids.preparing}', 'BALANCE_CALCULATION', 'PREPARING_BRANCH', 'RUNNING',
     '${JSON.stringify({ ...input, $saga: { version: 1, step: 0, attempt: 1, taskId: taskIds.preparing, completed: [] } })}',
     'upgrade-1', 0, now() - interval '1 hour', now() - interval '1 hour'),
    ('${ids.awaitingInput}', 'BALANCE_CALCULATION', 'AWAITING_CONDENSER_INPUT', 'RUNNING',
     '${JSON.stringify({ ...meshed, $saga: { version: 1, step: 2, attempt: 0, taskId: null, completed: ["prepareBranch", "meshGeometry"] } })}',
     'upgrade-2', 2, now() - interval '1 hour', now() - interval '1 hour'),
    ('${ids.backingOff}', 'BALANCE_CALCULATION', 'RUNNING_SOLVER', 'RUNNING',
     '${JSON.stringify({ ...meshed, condenserDataRef: "condenser/u.json", $saga: { version: 1, step: 3, attempt: 1, taskId: null, completed: ["prepareBranch", "meshGeometry", "receiveCondenserInput"] } })}',
     'upgrade-3', 5, now() - interval '1 hour', now() - interval '1 hour'),
    ('${ids.compensating}', 'BALANCE_CALCULATION', 'DELETING_BRANCH', 'COMPENSATING',
     '${JSON.stringify({ ...prepared, $saga: { version: 1, step: 1, attempt: 1, taskId: taskIds.deleting, completed: ["prepareBranch"], compensation: { outcome: "FAILED", pending: ["prepareBranch"], reason: { step: "meshGeometry", code: "bad_geometry", message: "not closed" } } } })}',
     'upgrade-4', 3, now() - interval '1 hour', now() - interval '1 hour'),
    ('${ids.completed}', 'BALANCE_CALCULATION', 'COMPLETED', 'COMPLETED',
     '${JSON.stringify({ ...meshed, $saga: { version: 1, step: 5, attempt: 0, taskId: null, completed: ["prepareBranch", "meshGeometry", "receiveCondenserInput", "runSolver", "publishResults"] } })}',
     'upgrade-5', 9, now() - interval '1 hour', now() - interval '1 hour');
  INSERT INTO orchestrator.saga_timers (saga_id, due_at, awaiting, lock_version) VALUES
    ('${ids.preparing}', '2100-01-01T00:02:00Z',
     '{"_tag":"Reply","taskId":"${taskIds.preparing}","taskType":"gitlab.prepare_branch"}', 0),
    ('${ids.awaitingInput}', '2100-01-07T00:00:00Z', '{"_tag":"Signal","name":"condenser_input"}', 2),
    ('${ids.backingOff}', now() - interval '1 second', '{"_tag":"Timer","reason":"retry runSolver"}', 5),
    ('${ids.compensating}', '2100-01-01T00:02:00Z',
     '{"_tag":"Reply","taskId":"${taskIds.deleting}","taskType":"gitlab.delete_branch"}', 3);
  INSERT INTO orchestrator.saga_transitions (saga_id, lock_version, from_state, to_state, status, event, transition_id)
  SELECT id, v, NULL, current_state, status, 'Recorded', gen_random_uuid()
  FROM orchestrator.saga_instances, generate_series(0, lock_version) AS v`

const results: Record<string, Record<string, unknown>> = {
  "gitlab.prepare_branch": { branch: "calc/upgrade", commitSha: "c".repeat(40) },
  "geometry.mesh": { meshRef: "meshes/upgrade.msh" },
  "solver.balance": { runId: "run-u", resultsRef: "results/u/" },
  "gitlab.publish_results": { commitSha: "d".repeat(40) },
  "gitlab.delete_branch": {},
  "solver.discard_run": {}
}

/** Answers whatever the saga waits for, as a worker, an engineer or the timer scanner would, until it ends. */
const driveToEnd = (id: SagaId) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const engine = yield* Engine
    for (let moves = 0; moves < 20; moves++) {
      const saga = yield* store.get(id)
      if (saga.status !== "RUNNING" && saga.status !== "COMPENSATING") return saga
      const progress = yield* readProgress(saga)
      const awaiting = progress.awaiting
      if (awaiting === null) return yield* Effect.die(`saga ${id} waits for nothing in ${saga.currentState}`)
      switch (awaiting._tag) {
        case "Reply":
          yield* engine.reply({
            sagaId: id,
            taskId: awaiting.taskId,
            outcome: "succeeded",
            result: results[awaiting.taskType] as never
          })
          break
        case "Signal":
          yield* engine.signal(id, awaiting.name, { condenserDataRef: "condenser/u.json" })
          break
        case "Timer": {
          const due = yield* store.claimDue(DateTime.add(yield* DateTime.now, { days: 1 }), 100)
          for (const timer of due.filter((t) => t.sagaId === id)) yield* engine.fire(timer)
          break
        }
      }
    }
    return yield* Effect.die(`saga ${id} did not end`)
  })

const engine = Layer.unwrap(
  Effect.map(TestDatabase, (db) =>
    engineLayer.pipe(
      Layer.provideMerge(SagaRegistry.layer(definitions)),
      Layer.provideMerge(PgSagaStore.layerDatabase(db.config, { maxConnections: 4 }))
    )
  )
)

layer(Layer.merge(testDatabase({ migrated: false }), NodeServices.layer), {
  excludeTestServices: true,
  timeout: "60 seconds"
})("upgrading to the progress column", (it) => {
  it.effect("moves the bookkeeping of sagas in flight out of their context, and they all finish after it", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      yield* migrateThroughPrevious
      yield* db.superuser(previousRows)
      const before = yield* db.superuser(
        "SELECT string_agg(id || ',' || lock_version || ',' || updated_at, ';' ORDER BY id) FROM orchestrator.saga_instances"
      )

      const applied = yield* migrate(db.config)
      assert.strictEqual(applied[0]?.[0], 5, "the progress column's migration first, then any after it")
      const after = yield* db.superuser(
        "SELECT string_agg(id || ',' || lock_version || ',' || updated_at, ';' ORDER BY id) FROM orchestrator.saga_instances"
      )
      assert.strictEqual(after, before, "moving a column is not a step: versions and update times stay")
      assert.strictEqual(
        (yield* db.superuser("SELECT count(*) FROM orchestrator.saga_instances WHERE context ? '$saga'")).trim(),
        "0"
      )

      yield* Effect.gen(function* () {
        const store = yield* SagaStore
        const read = (id: string) =>
          store
            .get(id as SagaId)
            .pipe(Effect.flatMap((saga) => Effect.map(readProgress(saga), (p) => [saga, p] as const)))

        const [preparing, preparingProgress] = yield* read(ids.preparing)
        assert.deepStrictEqual(preparing.context, input)
        assert.strictEqual(awaitedTaskId(preparingProgress), taskIds.preparing)
        assert.deepStrictEqual(
          preparingProgress.deadline === null ? null : DateTime.formatIso(preparingProgress.deadline),
          "2100-01-01T00:02:00.000Z"
        )
        const [, waiting] = yield* read(ids.awaitingInput)
        assert.deepStrictEqual(waiting.awaiting, { _tag: "Signal", name: "condenser_input" })
        const [, backingOff] = yield* read(ids.backingOff)
        assert.deepStrictEqual(backingOff.awaiting, { _tag: "Timer", reason: "retry runSolver" })
        const [, compensating] = yield* read(ids.compensating)
        assert.deepInclude(compensating.compensation, { outcome: "FAILED", pending: ["prepareBranch"] })
        assert.strictEqual(awaitedTaskId(compensating), taskIds.deleting)
        const [completed, completedProgress] = yield* read(ids.completed)
        assert.deepStrictEqual(completed.context, meshed)
        assert.deepInclude(completedProgress, { awaiting: null, deadline: null, step: 5 })

        const ends = yield* Effect.forEach(Object.values(ids), (id) =>
          driveToEnd(id as SagaId).pipe(Effect.map((saga) => [saga.id, saga.status, saga.currentState]))
        )
        assert.deepStrictEqual(ends, [
          [ids.preparing, "COMPLETED", "COMPLETED"],
          [ids.awaitingInput, "COMPLETED", "COMPLETED"],
          [ids.backingOff, "COMPLETED", "COMPLETED"],
          [ids.compensating, "FAILED", "FAILED"],
          [ids.completed, "COMPLETED", "COMPLETED"]
        ])
        const [done] = yield* read(ids.preparing)
        assert.deepStrictEqual(done.context, {
          ...meshed,
          condenserDataRef: "condenser/u.json",
          solverRunId: "run-u",
          resultsRef: "results/u/",
          resultsCommitSha: "d".repeat(40)
        })
        // What the engine wrote since keeps its bookkeeping out of the context too.
        assert.strictEqual(
          (yield* db.superuser("SELECT count(*) FROM orchestrator.saga_instances WHERE context ? '$saga'")).trim(),
          "0"
        )
        // One history row per version, none missing, none twice, across the upgrade.
        const gaps = yield* db.superuser(`
            SELECT count(*) FROM orchestrator.saga_instances s
            WHERE (SELECT count(*) FROM orchestrator.saga_transitions t WHERE t.saga_id = s.id) <> s.lock_version + 1`)
        assert.strictEqual(gaps.trim(), "0")
      }).pipe(Effect.provide(engine))
    }).pipe(Effect.timeout(Duration.seconds(50)))
  )
})
