/**
 * What each saga of the chaos run is scripted to do, and how it must end. The test worker reads the plan from the
 * task's repo (`chaos/<plan>/<n>`, see test/worker/worker.ts), so a saga's behaviour follows from its index alone:
 * six in ten `ok`, one each of the others. The expected history and tasks are those of a run without chaos — a
 * killed process, a broker or database restart may delay a saga but must never change what it did.
 */
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import { type Ending, endings } from "../utils/histories.ts"

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

export interface Expectation extends Ending {
  /** Replies the worker sends on top of one per task (duplicates, late copies): the saga ignores them. */
  readonly extraReplies: number
}

const replies = endings.completed.tasks.length

export const expectations: Readonly<Record<Plan, Expectation>> = {
  ok: { ...endings.completed, extraReplies: 0 },
  "retry-mesh": { ...endings.meshRetried, extraReplies: 0 },
  "fatal-solver": { ...endings.solverFatal, extraReplies: 0 },
  // Every reply twice with the same message id and once more as a new message.
  duplicate: { ...endings.completed, extraReplies: 2 * replies },
  // Every reply once more, 2 s later (best effort: the worker drops a late copy it cannot publish).
  late: { ...endings.completed, extraReplies: replies }
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
