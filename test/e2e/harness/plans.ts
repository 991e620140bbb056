/**
 * The worker's plans (test/worker/worker.ts reads a saga's plan from its repo, `e2e/<plan>/<label>`) and how a saga
 * with each must end: its status, its whole history, the tasks the worker applies for it, the replies it ignores.
 */
import type { SagaId, SagaStatus } from "../../../src/domain/Saga.ts"

/** The worker's plans (see test/worker/worker.ts) that these tests use. */
export type Plan = "ok" | "retry-mesh" | "fatal-solver" | "duplicate" | "late" | "hang-solver"

interface Expected {
  readonly status: SagaStatus
  /** The whole history, `toState event` per version. */
  readonly history: ReadonlyArray<string>
  /** The tasks whose effect the worker applied for the saga, in order, as `taskType#attempt`. */
  readonly tasks: ReadonlyArray<string>
  /** Replies the saga records as ignored: the extra copies of duplicated replies, the late ones. */
  readonly ignored: number
}

const forward = [
  "PREPARING_BRANCH SagaStarted",
  "MESHING_GEOMETRY StepSucceeded",
  "AWAITING_CONDENSER_INPUT StepSucceeded",
  "RUNNING_SOLVER SignalReceived",
  "PUBLISHING_RESULTS StepSucceeded",
  "COMPLETED SagaCompleted"
]
const forwardTasks = ["gitlab.prepare_branch#1", "geometry.mesh#1", "solver.balance#1", "gitlab.publish_results#1"]

export const expected: Record<Plan, Expected> = {
  ok: { status: "COMPLETED", history: forward, tasks: forwardTasks, ignored: 0 },
  "retry-mesh": {
    status: "COMPLETED",
    history: [
      ...forward.slice(0, 2),
      "MESHING_GEOMETRY StepRetryScheduled",
      "MESHING_GEOMETRY StepRetried",
      ...forward.slice(2)
    ],
    tasks: [
      "gitlab.prepare_branch#1",
      "geometry.mesh#1",
      "geometry.mesh#2",
      "solver.balance#1",
      "gitlab.publish_results#1"
    ],
    ignored: 0
  },
  // The solver run is discarded first, then the branch deleted: compensation in reverse order.
  "fatal-solver": {
    status: "FAILED",
    history: [
      ...forward.slice(0, 4),
      "DISCARDING_SOLVER_RUN StepFailed",
      "DELETING_BRANCH CompensationSucceeded",
      "FAILED SagaFailed"
    ],
    tasks: [...forwardTasks.slice(0, 3), "solver.discard_run#1", "gitlab.delete_branch#1"],
    ignored: 0
  },
  // Each of the four replies comes three times: twice with the same message id, once more as a new message.
  duplicate: { status: "COMPLETED", history: forward, tasks: forwardTasks, ignored: 8 },
  // Each of the four replies comes once more, 2 s later.
  late: { status: "COMPLETED", history: forward, tasks: forwardTasks, ignored: 4 },
  // The solver never answers; the saga is cancelled while it runs: the run is discarded, then the branch deleted.
  "hang-solver": {
    status: "CANCELLED",
    history: [
      ...forward.slice(0, 4),
      "DISCARDING_SOLVER_RUN CancelRequested",
      "DELETING_BRANCH CompensationSucceeded",
      "CANCELLED SagaCancelled"
    ],
    tasks: [...forwardTasks.slice(0, 2), "solver.discard_run#1", "gitlab.delete_branch#1"],
    ignored: 0
  }
}

/** A saga a test started, and the plan it runs. */
export interface Started {
  readonly plan: Plan
  readonly repo: string
  readonly id: SagaId
}
