/**
 * How a BALANCE_CALCULATION saga must end for each kind of worker behaviour: its final status, its whole history and
 * the tasks its workers receive. One table for every test that runs sagas to the end — the fleet on the runtime
 * (test/saga/fleet.ts), the end-to-end deployments (test/e2e/harness/plans.ts) and the chaos run
 * (test/chaos/plans.ts) — which each add what their own workers do on top (duplicates, late replies).
 */

/** One history entry: the state the saga entered and the event that moved it there. */
export type Step = readonly [toState: string, event: string]

export interface Ending {
  readonly status: "COMPLETED" | "FAILED" | "CANCELLED"
  /** The whole history, one step per lock version. */
  readonly history: ReadonlyArray<Step>
  /** The tasks sent for the saga, in order, as `taskType#attempt`. */
  readonly tasks: ReadonlyArray<string>
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

/** Compensation runs in reverse order: the solver run is discarded first, then the branch deleted. */
const undoSolverAndBranch: ReadonlyArray<Step> = [
  ["DISCARDING_SOLVER_RUN", "StepFailed"],
  ["DELETING_BRANCH", "CompensationSucceeded"],
  ["FAILED", "SagaFailed"]
]

export const endings = {
  /** Every step succeeds at the first attempt (duplicate and late replies change nothing but the ignored count). */
  completed: { status: "COMPLETED", history: forward, tasks: forwardTasks },
  /** The first mesh attempt fails retryably; the back-off timer sends attempt 2, which succeeds. */
  meshRetried: {
    status: "COMPLETED",
    history: [
      ...forward.slice(0, 2),
      ["MESHING_GEOMETRY", "StepRetryScheduled"],
      ["MESHING_GEOMETRY", "StepRetried"],
      ...forward.slice(2)
    ],
    tasks: ["gitlab.prepare_branch#1", "geometry.mesh#1", "geometry.mesh#2", ...forwardTasks.slice(2)]
  },
  /** The first prepare attempt comes to nothing (a retryable failure, or no reply before the timeout). */
  prepareRetried: {
    status: "COMPLETED",
    history: [
      forward[0] as Step,
      ["PREPARING_BRANCH", "StepRetryScheduled"],
      ["PREPARING_BRANCH", "StepRetried"],
      ...forward.slice(1)
    ],
    tasks: ["gitlab.prepare_branch#1", "gitlab.prepare_branch#2", ...forwardTasks.slice(1)]
  },
  /** The solver fails fatally: its run is discarded, then the branch deleted. */
  solverFatal: {
    status: "FAILED",
    history: [...forward.slice(0, 4), ...undoSolverAndBranch],
    tasks: [...forwardTasks.slice(0, 3), "solver.discard_run#1", "gitlab.delete_branch#1"]
  },
  /** Cancelled while the solver runs: the run is discarded, then the branch deleted. */
  solverCancelled: {
    status: "CANCELLED",
    history: [
      ...forward.slice(0, 4),
      ["DISCARDING_SOLVER_RUN", "CancelRequested"],
      ["DELETING_BRANCH", "CompensationSucceeded"],
      ["CANCELLED", "SagaCancelled"]
    ],
    tasks: [...forwardTasks.slice(0, 3), "solver.discard_run#1", "gitlab.delete_branch#1"]
  },
  /** Preparing the branch fails fatally: what it may have left is deleted. */
  prepareFatal: {
    status: "FAILED",
    history: [forward[0] as Step, ["DELETING_BRANCH", "StepFailed"], ["FAILED", "SagaFailed"]],
    tasks: ["gitlab.prepare_branch#1", "gitlab.delete_branch#1"]
  },
  /** Publishing fails fatally (it has no compensation): the solver run and the branch are undone. */
  publishFatal: {
    status: "FAILED",
    history: [...forward.slice(0, 5), ...undoSolverAndBranch],
    tasks: [...forwardTasks, "solver.discard_run#1", "gitlab.delete_branch#1"]
  }
} as const satisfies Record<string, Ending>
