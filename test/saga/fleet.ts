/**
 * A fleet of BALANCE_CALCULATION sagas run through the whole runtime (outbox relay, simulated workers, reply
 * consumer, timer scanner), each saga with a scenario that says how its workers behave and how it must end. The
 * workers tell sagas apart by the `repo` every task payload carries, so the script exists before any saga does.
 * Shared by the in-memory and the PostgreSQL runtime tests.
 */
import { assert } from "@effect/vitest"
import { type Duration, Effect, Schema } from "effect"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import { Queues, type TaskMessage } from "../../src/domain/Messages.ts"
import { awaitedTaskId } from "../../src/domain/Progress.ts"
import type { SagaInstance, SagaStatus, Transition } from "../../src/domain/Saga.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine } from "../../src/saga/Engine.ts"
import * as Workers from "../../src/simulation/Workers.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { endings, type Step } from "../utils/histories.ts"
import { input } from "./harness.ts"

export interface Scenario {
  readonly name: string
  /** The workers' plan for one of this saga's tasks; `undefined` leaves it to the default (success). */
  readonly plan: (task: TaskMessage) => Workers.Plan | undefined
  readonly status: SagaStatus
  /** The whole history, `[toState, event]` per version. */
  readonly history: ReadonlyArray<Step>
  /** The tasks the workers receive for this saga, in order, as `taskType#attempt`. */
  readonly tasks: ReadonlyArray<string>
  /** The error code of every StepRetryScheduled / StepFailed transition. */
  readonly failureCode?: string | undefined
  /** Replies the saga records as ignored (duplicates, late ones). */
  readonly ignored: number
}

const is = (task: TaskMessage, taskType: string, attempt?: number) =>
  task.taskType === taskType && (attempt === undefined || task.attempt === attempt)

const fatal = (code: string) => Workers.Plan.fail({ retryable: false, code, message: `${code} (scripted)` })

export const scenarios = {
  happy: {
    name: "happy",
    plan: () => undefined,
    ...endings.completed,
    ignored: 0
  },
  /** The first mesh attempt fails retryably; the back-off timer sends attempt 2, which succeeds. */
  meshRetried: {
    name: "mesh-retried",
    plan: (task) => (is(task, "geometry.mesh", 1) ? Workers.Plan.fail({ retryable: true }) : undefined),
    ...endings.meshRetried,
    failureCode: "SIMULATED_TRANSIENT_FAILURE",
    ignored: 0
  },
  /** The first prepare attempt fails retryably (back-off 5 s), the second succeeds. */
  prepareRetried: {
    name: "prepare-retried",
    plan: (task) => (is(task, "gitlab.prepare_branch", 1) ? Workers.Plan.fail({ retryable: true }) : undefined),
    ...endings.prepareRetried,
    failureCode: "SIMULATED_TRANSIENT_FAILURE",
    ignored: 0
  },
  /** The first prepare attempt is lost: its 2-minute timeout fires, and the retry succeeds. */
  silent: {
    name: "silent",
    plan: (task) => (is(task, "gitlab.prepare_branch", 1) ? Workers.Plan.silent() : undefined),
    ...endings.prepareRetried,
    failureCode: "timeout",
    ignored: 0
  },
  /** The solver fails fatally: its run is discarded, then the branch deleted — in reverse order. */
  solverFatal: {
    name: "solver-fatal",
    plan: (task) => (is(task, "solver.balance") ? fatal("DIVERGED") : undefined),
    ...endings.solverFatal,
    failureCode: "DIVERGED",
    ignored: 0
  },
  /** Preparing the branch fails fatally: what it may have left is deleted. */
  prepareFatal: {
    name: "prepare-fatal",
    plan: (task) => (is(task, "gitlab.prepare_branch") ? fatal("REPO_ARCHIVED") : undefined),
    ...endings.prepareFatal,
    failureCode: "REPO_ARCHIVED",
    ignored: 0
  },
  /** Publishing fails fatally (it has no compensation): the solver run and the branch are undone. */
  publishFatal: {
    name: "publish-fatal",
    plan: (task) => (is(task, "gitlab.publish_results") ? fatal("PROTECTED_BRANCH") : undefined),
    ...endings.publishFatal,
    failureCode: "PROTECTED_BRANCH",
    ignored: 0
  },
  /** Every reply is published twice with the same message id: each second copy is ignored. */
  duplicated: {
    name: "duplicated",
    plan: () => Workers.Plan.succeed({ duplicate: true }),
    ...endings.completed,
    ignored: 4
  },
  /** The prepare reply comes once more, as a new message, long after the saga moved on. */
  late: (after: Duration.Input): Scenario => ({
    name: "late",
    plan: (task) => (is(task, "gitlab.prepare_branch") ? Workers.Plan.succeed({ lateReplyAfter: after }) : undefined),
    ...endings.completed,
    ignored: 1
  })
} satisfies Record<string, Scenario | ((after: Duration.Input) => Scenario)>

export interface Fleet {
  readonly runs: ReadonlyArray<{ readonly repo: string; readonly scenario: Scenario }>
  /** For `Workers.Options.script`. */
  readonly script: (task: TaskMessage) => Workers.Plan | undefined
}

/** `count` sagas of each scenario, each with a repo of its own. */
export const fleet = (entries: ReadonlyArray<readonly [Scenario, number]>): Fleet => {
  const runs = entries.flatMap(([scenario, count]) =>
    Array.from({ length: count }, (_, i) => ({ repo: `balance/${scenario.name}-${i}`, scenario }))
  )
  const byRepo = new Map(runs.map((run) => [run.repo, run.scenario]))
  return {
    runs,
    script: (task) => {
      const repo = task.payload.repo
      return typeof repo === "string" ? byRepo.get(repo)?.plan(task) : undefined
    }
  }
}

export interface Started {
  readonly repo: string
  readonly scenario: Scenario
  readonly saga: SagaInstance
  /** The first task, sent by the creating transaction. */
  readonly firstTaskId: string
}

export const startAll = (fleet: Fleet) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    return yield* Effect.forEach(fleet.runs, ({ repo, scenario }) =>
      Effect.gen(function* () {
        const { saga } = yield* engine.start("BALANCE_CALCULATION", { ...input, repo })
        const progress = yield* readProgress(saga)
        const firstTaskId = awaitedTaskId(progress)
        assert.isDefined(firstTaskId)
        return { repo, scenario, saga, firstTaskId: firstTaskId ?? "" }
      })
    )
  })

/** The engineer's part: condenser data for every saga waiting for it. */
export const supplyCondenserInput = Effect.gen(function* () {
  const store = yield* SagaStore
  const engine = yield* Engine
  const waiting = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
  yield* Effect.forEach(waiting.items, (saga) =>
    engine.signal(saga.id, "condenser_input", { condenserDataRef: `condenser/${saga.id}.json` })
  )
})

/** Every saga ended, every ignored reply arrived, and nothing waits in the outbox. */
export const settled = (started: ReadonlyArray<Started>) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const running = yield* store.find({ status: "RUNNING", limit: 1 })
    const compensating = yield* store.find({ status: "COMPENSATING", limit: 1 })
    if (running.items.length > 0 || compensating.items.length > 0) return false
    if ((yield* store.summary).outboxPending > 0) return false
    for (const { saga, scenario } of started) {
      if ((yield* store.ignoredEvents(saga.id)).length < scenario.ignored) return false
    }
    return true
  })

/** A transition that sent a task names it in its detail, with the attempt. */
const SentTask = Schema.Struct({ taskId: Schema.String, attempt: Schema.Number })
const sentTask = Schema.decodeUnknownOption(SentTask)
const FailureDetail = Schema.Struct({ code: Schema.String })
const failureDetail = Schema.decodeUnknownOption(FailureDetail)
const IgnoredReply = Schema.Struct({ taskId: Schema.String })
const ignoredReply = Schema.decodeUnknownOption(IgnoredReply)

/** The tasks a saga sent, by task id, with their attempt: the first one and every one its history records. */
const tasksSent = (started: Started, history: ReadonlyArray<Transition>) => {
  const sent = new Map<string, number>([[started.firstTaskId, 1]])
  for (const transition of history) {
    const task = sentTask(transition.detail)
    if (task._tag === "Some") sent.set(task.value.taskId, task.value.attempt)
  }
  return sent
}

/** Checks every saga against its scenario, and the runtime's queues and outbox against "nothing left over". */
export const verify = (started: ReadonlyArray<Started>) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const handled = yield* (yield* Workers.Workers).handled
    const ids = new Set(started.map((s) => s.saga.id as string))
    // No phantom tasks: every task the workers got belongs to one of these sagas, and none came twice.
    assert.deepStrictEqual(
      handled.filter((h) => h.task === undefined || !ids.has(h.task.sagaId) || h.outcome === "repeated"),
      []
    )
    for (const run of started) {
      const { repo, scenario } = run
      const saga = yield* store.get(run.saga.id)
      const history = yield* store.history(saga.id)
      assert.deepStrictEqual(
        { repo, status: saga.status, history: history.map((t) => [t.toState, t.event]) },
        { repo, status: scenario.status, history: scenario.history.map(([state, event]) => [state, event]) }
      )
      // One transition per version, 0..n without gaps: no step applied twice, none lost.
      assert.deepStrictEqual(
        history.map((t) => t.lockVersion),
        Array.from({ length: history.length }, (_, v) => v),
        repo
      )
      assert.strictEqual(saga.lockVersion, history.length - 1, repo)
      for (const transition of history) {
        if (transition.event !== "StepRetryScheduled" && transition.event !== "StepFailed") continue
        const failure = failureDetail(transition.detail)
        assert.strictEqual(failure._tag === "Some" ? failure.value.code : undefined, scenario.failureCode, repo)
      }
      const mine = handled.flatMap((h) => (h.task?.sagaId === saga.id ? [h.task] : []))
      assert.deepStrictEqual(
        mine.map((task) => `${task.taskType}#${task.attempt}`),
        [...scenario.tasks],
        repo
      )
      const sent = tasksSent(run, history)
      for (const task of mine) assert.strictEqual(sent.get(task.taskId), task.attempt, `${repo}: ${task.taskId}`)
      const ignored = yield* store.ignoredEvents(saga.id)
      assert.strictEqual(ignored.length, scenario.ignored, repo)
      for (const event of ignored) {
        assert.strictEqual(event.event, "ReplyIgnored", repo)
        const reply = ignoredReply(event.detail)
        assert.isTrue(reply._tag === "Some" && sent.has(reply.value.taskId), `${repo}: ignored a reply to its own task`)
      }
    }
    assert.strictEqual((yield* store.summary).outboxPending, 0)
    const memory = yield* MemoryBroker.MemoryBroker
    for (const queue of [Queues.replies, Queues.deadLetters, Workers.defaultQueue]) {
      assert.deepStrictEqual(yield* memory.messages(queue), [], queue)
      assert.deepStrictEqual(yield* memory.unacknowledged(queue), [], queue)
    }
  })
