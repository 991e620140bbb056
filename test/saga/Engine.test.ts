import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import { formatTable } from "../../src/commands/definitions.ts"
import type { Issue } from "../../src/domain/errors.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { transitionTable } from "../../src/saga/Definition.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"
import {
  completeTask,
  failed,
  fireDueTimers,
  history,
  input,
  layer,
  reply,
  results,
  succeeded,
  takeTask,
  takeTasks
} from "./harness.ts"

const start = Effect.flatMap(Engine, (engine) => engine.start("BALANCE_CALCULATION", input))
const get = (id: SagaId) => Effect.flatMap(SagaStore, (store) => store.get(id))
/** The paths of a refusal's issues; none when it has no issues. */
const issuePaths = (error: object) =>
  "issues" in error && Array.isArray(error.issues) ? error.issues.map((issue: Issue) => issue.path) : []

/** Runs the saga up to AWAITING_CONDENSER_INPUT and supplies the signal: the solver task is next. */
const upToSolver = Effect.gen(function* () {
  const engine = yield* Engine
  const { saga } = yield* start
  yield* completeTask // prepare_branch
  yield* completeTask // mesh
  yield* engine.signal(saga.id, "condenser_input", { condenserDataRef: "condenser/c-7.json" })
  return saga.id
})

describe("Engine: BALANCE_CALCULATION", () => {
  it.effect("runs the happy path to COMPLETED, keeping only references in the context", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      assert.strictEqual(saga.currentState, "PREPARING_BRANCH")
      const prepare = yield* completeTask
      assert.deepInclude(prepare, { taskType: "gitlab.prepare_branch", attempt: 1, replyTo: "orchestrator.replies" })
      assert.deepStrictEqual(prepare.payload, { repo: input.repo, baseBranch: "main", inputRef: input.inputRef })
      const started = (yield* Effect.flatMap(SagaStore, (store) => store.history(saga.id)))[0]
      assert.deepInclude(started?.detail, { taskId: prepare.taskId, taskType: "gitlab.prepare_branch", attempt: 1 })
      const mesh = yield* completeTask
      assert.strictEqual(mesh.taskType, "geometry.mesh")
      assert.strictEqual((yield* get(saga.id)).currentState, "AWAITING_CONDENSER_INPUT")
      yield* engine.signal(saga.id, "condenser_input", { condenserDataRef: "condenser/c-7.json" })
      const solver = yield* completeTask
      assert.deepStrictEqual(solver.payload, {
        repo: input.repo,
        branch: "calc/run-42",
        meshRef: "meshes/run-42.msh",
        condenserDataRef: "condenser/c-7.json"
      })
      const publish = yield* completeTask
      assert.strictEqual(publish.taskType, "gitlab.publish_results")
      const done = yield* get(saga.id)
      assert.deepInclude(done, { status: "COMPLETED", currentState: "COMPLETED", lockVersion: 5 })
      const context = done.context
      assert.deepStrictEqual(context, {
        ...input,
        branch: "calc/run-42",
        branchCommitSha: "a".repeat(40),
        meshRef: "meshes/run-42.msh",
        condenserDataRef: "condenser/c-7.json",
        solverRunId: "run-42",
        resultsRef: "results/run-42/",
        resultsCommitSha: "b".repeat(40)
      })
      assert.deepStrictEqual(yield* history(saga.id), [
        ["PREPARING_BRANCH", "RUNNING", "SagaStarted"],
        ["MESHING_GEOMETRY", "RUNNING", "StepSucceeded"],
        ["AWAITING_CONDENSER_INPUT", "RUNNING", "StepSucceeded"],
        ["RUNNING_SOLVER", "RUNNING", "SignalReceived"],
        ["PUBLISHING_RESULTS", "RUNNING", "StepSucceeded"],
        ["COMPLETED", "COMPLETED", "SagaCompleted"]
      ])
      assert.deepStrictEqual(yield* takeTasks, [])
    }).pipe(Effect.provide(layer()))
  )

  it.effect("retries a retryable failure after the back-off, with a new task id, then succeeds", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      yield* completeTask
      const mesh = yield* takeTask
      yield* reply(failed(mesh, "mesher_busy", true))
      assert.deepStrictEqual(yield* takeTasks, [])
      yield* TestClock.adjust(Duration.seconds(29))
      assert.strictEqual(yield* fireDueTimers, 0)
      yield* TestClock.adjust(Duration.seconds(1))
      assert.strictEqual(yield* fireDueTimers, 1)
      const again = yield* takeTask
      assert.deepInclude(again, { taskType: "geometry.mesh", attempt: 2 })
      assert.notStrictEqual(again.taskId, mesh.taskId)
      yield* reply(succeeded(again, results["geometry.mesh"]))
      assert.strictEqual((yield* get(saga.id)).currentState, "AWAITING_CONDENSER_INPUT")
      assert.deepStrictEqual((yield* history(saga.id)).slice(2), [
        ["MESHING_GEOMETRY", "RUNNING", "StepRetryScheduled"],
        ["MESHING_GEOMETRY", "RUNNING", "StepRetried"],
        ["AWAITING_CONDENSER_INPUT", "RUNNING", "StepSucceeded"]
      ])
    }).pipe(Effect.provide(layer()))
  )

  it.effect("compensates completed steps in reverse order and ends FAILED on a non-retryable failure", () =>
    Effect.gen(function* () {
      const id = yield* upToSolver
      const solver = yield* takeTask
      yield* reply(failed(solver, "diverged", false))
      // The solver run that failed may have left something behind: it is undone first, then the branch.
      const discard = yield* takeTask
      assert.deepInclude(discard, { taskType: "solver.discard_run" })
      assert.deepInclude(yield* get(id), { status: "COMPENSATING", currentState: "DISCARDING_SOLVER_RUN" })
      yield* reply(succeeded(discard))
      const deleteBranch = yield* takeTask
      assert.deepInclude(deleteBranch, { taskType: "gitlab.delete_branch" })
      assert.deepStrictEqual(deleteBranch.payload, {
        repo: input.repo,
        branch: "calc/run-42",
        inputRef: input.inputRef
      })
      yield* reply(succeeded(deleteBranch))
      assert.deepInclude(yield* get(id), { status: "FAILED", currentState: "FAILED" })
      assert.deepStrictEqual((yield* history(id)).slice(4), [
        ["DISCARDING_SOLVER_RUN", "COMPENSATING", "StepFailed"],
        ["DELETING_BRANCH", "COMPENSATING", "CompensationSucceeded"],
        ["FAILED", "FAILED", "SagaFailed"]
      ])
      const progress = yield* readProgress(yield* get(id))
      assert.deepInclude(progress.compensation?.reason, { step: "runSolver", code: "diverged" })
      assert.deepStrictEqual(yield* takeTasks, [])
    }).pipe(Effect.provide(layer()))
  )

  it.effect("treats a missing reply as a timeout: retries, then compensates when the attempts run out", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      const first = yield* takeTask
      // prepare_branch: 2 minutes per attempt, 3 attempts, back-off 5 s then 10 s.
      for (const backoff of [5, 10]) {
        yield* TestClock.adjust(Duration.minutes(2))
        assert.strictEqual(yield* fireDueTimers, 1)
        assert.deepStrictEqual(yield* takeTasks, [])
        yield* TestClock.adjust(Duration.seconds(backoff))
        assert.strictEqual(yield* fireDueTimers, 1)
        const retried = yield* takeTask
        assert.notStrictEqual(retried.taskId, first.taskId)
      }
      yield* TestClock.adjust(Duration.minutes(2))
      assert.strictEqual(yield* fireDueTimers, 1)
      const deleteBranch = yield* takeTask
      assert.strictEqual(deleteBranch.taskType, "gitlab.delete_branch")
      yield* reply(succeeded(deleteBranch))
      const done = yield* get(saga.id)
      assert.strictEqual(done.status, "FAILED")
      const progress = yield* readProgress(done)
      assert.deepInclude(progress.compensation?.reason, { step: "prepareBranch", code: "timeout" })
    }).pipe(Effect.provide(layer()))
  )

  it.effect("records duplicate, late and stale replies without changing anything", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const { saga } = yield* start
      const prepare = yield* takeTask
      const ok = succeeded(prepare, results["gitlab.prepare_branch"])
      yield* reply(ok)
      const mesh = yield* takeTask
      const before = yield* get(saga.id)
      yield* reply(ok) // duplicate of an answered task
      yield* reply({ ...succeeded(mesh, results["geometry.mesh"]), taskId: "not-a-task-of-this-saga" })
      yield* reply(failed(mesh, "mesher_busy", true))
      yield* TestClock.adjust(Duration.seconds(30))
      yield* fireDueTimers
      const retried = yield* takeTask
      yield* reply(succeeded(mesh, results["geometry.mesh"])) // late reply to attempt 1
      const unchanged = yield* get(saga.id)
      assert.strictEqual(unchanged.lockVersion, before.lockVersion + 2) // only the failure and the retry moved it
      assert.strictEqual(unchanged.currentState, "MESHING_GEOMETRY")
      const ignored = yield* store.ignoredEvents(saga.id)
      assert.deepStrictEqual(
        ignored.map((e) => [e.event, (e.detail as { taskId: string }).taskId]),
        [
          ["ReplyIgnored", prepare.taskId],
          ["ReplyIgnored", "not-a-task-of-this-saga"],
          ["ReplyIgnored", mesh.taskId]
        ]
      )
      yield* reply(succeeded(retried, results["geometry.mesh"]))
      assert.strictEqual((yield* get(saga.id)).currentState, "AWAITING_CONDENSER_INPUT")
    }).pipe(Effect.provide(layer()))
  )

  it.effect("refuses an invalid or unexpected signal with a typed error and changes nothing", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      const early = yield* Effect.flip(engine.signal(saga.id, "condenser_input", { condenserDataRef: "c.json" }))
      assert.deepInclude(early, { _tag: "SignalNotExpected", state: "PREPARING_BRANCH" })
      yield* completeTask
      yield* completeTask
      const waiting = yield* get(saga.id)
      const invalid = yield* Effect.flip(engine.signal(saga.id, "condenser_input", { condenserDataRef: 42 }))
      assert.deepInclude(invalid, { _tag: "InvalidSignalData", sagaId: saga.id, signal: "condenser_input" })
      assert.deepStrictEqual(issuePaths(invalid), [["condenserDataRef"]])
      const missing = yield* Effect.flip(engine.signal(saga.id, "condenser_input", {}))
      assert.deepInclude(missing, { _tag: "InvalidSignalData" })
      assert.deepStrictEqual(issuePaths(missing), [["condenserDataRef"]])
      assert.include(missing.message, "condenserDataRef")
      const wrongName = yield* Effect.flip(engine.signal(saga.id, "approval", { ok: true }))
      assert.strictEqual(wrongName._tag, "SignalNotExpected")
      assert.deepStrictEqual(yield* get(saga.id), waiting)
    }).pipe(Effect.provide(layer()))
  )

  it.effect("fails the saga when the signal does not come in time", () =>
    Effect.gen(function* () {
      const { saga } = yield* start
      yield* completeTask
      yield* completeTask
      yield* TestClock.adjust(Duration.days(7))
      assert.strictEqual(yield* fireDueTimers, 1)
      assert.strictEqual((yield* takeTask).taskType, "gitlab.delete_branch")
      assert.deepStrictEqual((yield* history(saga.id)).at(-1), ["DELETING_BRANCH", "COMPENSATING", "SignalTimedOut"])
    }).pipe(Effect.provide(layer()))
  )

  it.effect("cancels mid-step: undoes what was done, ignores the late reply, ends CANCELLED", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      yield* completeTask
      const mesh = yield* takeTask
      const running = yield* get(saga.id)
      const stale = yield* Effect.flip(engine.cancel(saga.id, running.lockVersion - 1))
      assert.strictEqual(stale._tag, "VersionConflict")
      yield* engine.cancel(saga.id, running.lockVersion)
      const deleteBranch = yield* takeTask
      assert.strictEqual(deleteBranch.taskType, "gitlab.delete_branch")
      yield* reply(succeeded(mesh, results["geometry.mesh"])) // the mesher answers after all: ignored
      yield* reply(succeeded(deleteBranch))
      assert.deepInclude(yield* get(saga.id), { status: "CANCELLED", currentState: "CANCELLED" })
      const again = yield* Effect.flip(engine.cancel(saga.id))
      assert.strictEqual(again._tag, "SagaFinished")
    }).pipe(Effect.provide(layer()))
  )

  it.effect("leaves a saga visibly stuck in COMPENSATING when a compensation keeps failing; retry repairs it", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const store = yield* SagaStore
      const { saga } = yield* start
      const prepare = yield* takeTask
      yield* reply(failed(prepare, "repo_archived", false))
      // delete_branch: 5 attempts, back-off from 5 s.
      for (let attempt = 1; attempt <= 5; attempt++) {
        const deleteBranch = yield* takeTask
        assert.strictEqual(deleteBranch.attempt, attempt)
        yield* reply(failed(deleteBranch, "gitlab_unavailable", true))
        yield* TestClock.adjust(Duration.minutes(5))
        yield* fireDueTimers
      }
      assert.deepStrictEqual(yield* takeTasks, [])
      const stuck = yield* get(saga.id)
      assert.deepInclude(stuck, { status: "COMPENSATING", currentState: "DELETING_BRANCH" })
      const progress = yield* readProgress(stuck)
      assert.deepInclude(progress.compensation?.stuck, { step: "deleteBranch", code: "gitlab_unavailable" })
      const found = (yield* store.findStuck(Duration.minutes(1))).find((s) => s.saga.id === saga.id)
      assert.strictEqual(found?.timer, null)
      yield* engine.retry(saga.id, stuck.lockVersion)
      yield* reply(succeeded(yield* takeTask))
      assert.strictEqual((yield* get(saga.id)).status, "FAILED")
    }).pipe(Effect.provide(layer()))
  )

  it.effect("operator retry re-sends the current step's task with a new id", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* start
      const first = yield* takeTask
      yield* engine.retry(saga.id)
      const second = yield* takeTask
      assert.deepInclude(second, { taskType: first.taskType, attempt: 2 })
      assert.notStrictEqual(second.taskId, first.taskId)
      yield* reply(succeeded(first, results["gitlab.prepare_branch"])) // superseded
      assert.strictEqual((yield* get(saga.id)).currentState, "PREPARING_BRANCH")
      yield* reply(succeeded(second, results["gitlab.prepare_branch"]))
      yield* completeTask
      const waiting = yield* Effect.flip(engine.retry(saga.id))
      assert.strictEqual(waiting._tag, "NothingToRetry")
    }).pipe(Effect.provide(layer()))
  )

  it.effect("parks an instance whose definition version this build does not know", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const engine = yield* Engine
      const { saga } = yield* start
      const task = yield* takeTask
      const future = yield* store.transact(saga.id, (s) =>
        Effect.succeed(
          StepOutcome.Advance({
            state: s.currentState,
            status: s.status,
            context: s.context,
            progress: { ...s.progress, version: 99 },
            event: "WrittenByVersion99"
          })
        )
      )
      const error = yield* Effect.flip(engine.reply(succeeded(task, results["gitlab.prepare_branch"])))
      assert.deepInclude(error, { _tag: "UnknownDefinitionVersion", version: 99, sagaType: "BALANCE_CALCULATION" })
      assert.deepStrictEqual(yield* get(saga.id), future)
      assert.strictEqual((yield* Effect.flip(engine.cancel(saga.id)))._tag, "UnknownDefinitionVersion")
    }).pipe(Effect.provide(layer()))
  )

  it.effect("refuses an unknown saga type and invalid input, creating nothing", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const store = yield* SagaStore
      const unknown = yield* Effect.flip(engine.start("NO_SUCH_SAGA", input))
      assert.deepInclude(unknown, { _tag: "UnknownSagaType", sagaType: "NO_SUCH_SAGA" })
      const invalid = yield* Effect.flip(engine.start("BALANCE_CALCULATION", { ...input, repo: "", inputRef: 7 }))
      assert.deepInclude(invalid, { _tag: "InvalidSagaInput", sagaType: "BALANCE_CALCULATION" })
      // Every issue, not only the first.
      assert.deepStrictEqual(issuePaths(invalid), [["repo"], ["inputRef"]])
      assert.include(invalid.message, "repo")
      assert.deepStrictEqual((yield* store.find({})).items, [])
    }).pipe(Effect.provide(layer()))
  )

  it.effect("starts the same saga once for the same idempotency key", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const first = yield* engine.start("BALANCE_CALCULATION", input, { idempotencyKey: "k-1", correlationId: "c-1" })
      const second = yield* engine.start("BALANCE_CALCULATION", input, { idempotencyKey: "k-1" })
      assert.strictEqual(second.saga.id, first.saga.id)
      assert.isFalse(second.created)
      assert.strictEqual(first.saga.correlationId, "c-1")
      assert.strictEqual((yield* takeTasks).length, 1)
    }).pipe(Effect.provide(layer()))
  )
})

describe("BALANCE_CALCULATION definition", () => {
  it("reads as a transition table: states in order, what each waits for, where success and failure lead", () => {
    const table = transitionTable(BalanceCalculation)
    assert.deepStrictEqual(
      table.map((row) => [row.state, row.waitsFor, row.onSuccess]),
      [
        ["PREPARING_BRANCH", "reply to gitlab.prepare_branch", "MESHING_GEOMETRY"],
        ["MESHING_GEOMETRY", "reply to geometry.mesh", "AWAITING_CONDENSER_INPUT"],
        ["AWAITING_CONDENSER_INPUT", "signal condenser_input", "RUNNING_SOLVER"],
        ["RUNNING_SOLVER", "reply to solver.balance", "PUBLISHING_RESULTS"],
        ["PUBLISHING_RESULTS", "reply to gitlab.publish_results", "COMPLETED"]
      ]
    )
    assert.strictEqual(
      table[3]?.onFailure,
      "retry (2 attempts, back-off from 1m), then compensate discardSolverRun → deleteBranch → FAILED"
    )
    assert.strictEqual(table[2]?.onFailure, "compensate deleteBranch → FAILED")
    const text = formatTable(table)
    assert.match(text.split("\n")[0] ?? "", /^STATE\s+WAITS FOR\s+ON SUCCESS\s+ON FAILURE\s+TIMEOUT\s+COMPENSATION$/)
    assert.strictEqual(text.split("\n").length, 6)
  })
})
