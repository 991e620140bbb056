/**
 * What each saga of the chaos run is scripted to do, and how it must end. The test worker reads the plan from the
 * task's repo (`chaos/<plan>/<n>`, see test/worker/worker.ts), so a saga's behaviour follows from its index alone:
 * six in ten `ok`, one each of the others. The expected history and tasks are those of a run without chaos — a
 * killed process, a broker or database restart may delay a saga but must never change what it did.
 */
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"

export const plans = ["ok", "retry-mesh", "fatal-solver", "duplicate", "late"] as const
export type Plan = (typeof plans)[number]

export const planOf = (index: number): Plan => {
  const slot = index % 10
  return slot < 6 ? "ok" : (plans[slot - 5] ?? "ok")
}

export const repoOf = (index: number) => `chaos/${planOf(index)}/${index}`

/** The plan back from a repo; undefined for a repo the run did not start. */
export const planOfRepo = (repo: unknown): Plan | undefined => {
  const name = typeof repo === "string" ? repo.split("/")[1] : undefined
  return plans.find((plan) => plan === name)
}

type Step = readonly [toState: string, event: string]

export interface Expectation {
  readonly status: "COMPLETED" | "FAILED"
  /** The whole history, `[toState, event]` per lock version. */
  readonly history: ReadonlyArray<Step>
  /** The tasks the worker applies for the saga, in order, as `taskType#attempt`. */
  readonly tasks: ReadonlyArray<string>
  /** Replies the worker sends on top of one per task (duplicates, late copies): the saga ignores them. */
  readonly extraReplies: number
}

const forward: ReadonlyArray<Step> = [
  ["PREPARING_BRANCH", "SagaStarted"],
  ["MESHING_GEOMETRY", "StepSucceeded"],
  ["AWAITING_CONDENSER_INPUT", "StepSucceeded"],
  ["RUNNING_SOLVER", "SignalReceived"],
  ["PUBLISHING_RESULTS", "StepSucceeded"],
  ["COMPLETED", "SagaCompleted"]
]
const forwardTasks = ["gitlab.prepare_branch#1", "geometry.mesh#1", "solver.balance#1", "gitlab.publish_results#1"]

export const expectations: Readonly<Record<Plan, Expectation>> = {
  ok: { status: "COMPLETED", history: forward, tasks: forwardTasks, extraReplies: 0 },
  "retry-mesh": {
    status: "COMPLETED",
    history: [
      ...forward.slice(0, 2),
      ["MESHING_GEOMETRY", "StepRetryScheduled"],
      ["MESHING_GEOMETRY", "StepRetried"],
      ...forward.slice(2)
    ],
    tasks: ["gitlab.prepare_branch#1", "geometry.mesh#1", "geometry.mesh#2", ...forwardTasks.slice(2)],
    extraReplies: 0
  },
  "fatal-solver": {
    status: "FAILED",
    history: [
      ...forward.slice(0, 4),
      ["DISCARDING_SOLVER_RUN", "StepFailed"],
      ["DELETING_BRANCH", "CompensationSucceeded"],
      ["FAILED", "SagaFailed"]
    ],
    tasks: [...forwardTasks.slice(0, 3), "solver.discard_run#1", "gitlab.delete_branch#1"],
    extraReplies: 0
  },
  // Every reply twice with the same message id and once more as a new message.
  duplicate: { status: "COMPLETED", history: forward, tasks: forwardTasks, extraReplies: 2 * forwardTasks.length },
  // Every reply once more, 2 s later (best effort: the worker drops a late copy it cannot publish).
  late: { status: "COMPLETED", history: forward, tasks: forwardTasks, extraReplies: forwardTasks.length }
}

/** The task type of a compensation, by its name in the definition (`deleteBranch` → `gitlab.delete_branch`). */
export const compensationTaskTypes: ReadonlyMap<string, string> = new Map(
  BalanceCalculation.steps.flatMap((step) =>
    step._tag === "Task" && step.compensation !== undefined
      ? [[step.compensation.name, step.compensation.taskType] as const]
      : []
  )
)

/** The input of saga `index`: references only, the repo naming its plan. */
export const inputOf = (index: number) => ({
  repo: repoOf(index),
  baseBranch: "main",
  inputRef: `inputs/chaos-${index}.json`,
  requestedBy: "chaos-run"
})
