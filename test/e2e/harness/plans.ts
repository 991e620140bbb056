/**
 * The worker's plans (test/worker/worker.ts reads a saga's plan from its repo, `e2e/<plan>/<label>`) and how a saga
 * with each must end: its status, its whole history, the tasks the worker applies for it, the replies it ignores.
 */
import type { SagaId, SagaStatus } from "../../../src/domain/Saga.ts"
import { type Ending, endings } from "../../utils/histories.ts"

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

/** The history as text, `toState event` per version. */
const asText = (ending: Ending): Pick<Expected, "status" | "history" | "tasks"> => ({
  status: ending.status,
  history: ending.history.map(([state, event]) => `${state} ${event}`),
  tasks: ending.tasks
})

export const expected: Record<Plan, Expected> = {
  ok: { ...asText(endings.completed), ignored: 0 },
  "retry-mesh": { ...asText(endings.meshRetried), ignored: 0 },
  // The solver run is discarded first, then the branch deleted: compensation in reverse order.
  "fatal-solver": { ...asText(endings.solverFatal), ignored: 0 },
  // Each of the four replies comes three times: twice with the same message id, once more as a new message.
  duplicate: { ...asText(endings.completed), ignored: 8 },
  // Each of the four replies comes once more, 2 s later.
  late: { ...asText(endings.completed), ignored: 4 },
  // The solver never answers (its task is never applied); the saga is cancelled while it runs.
  "hang-solver": {
    ...asText(endings.solverCancelled),
    tasks: endings.solverCancelled.tasks.filter((task) => task !== "solver.balance#1"),
    ignored: 0
  }
}

/** A saga a test started, and the plan it runs. */
export interface Started {
  readonly plan: Plan
  readonly repo: string
  readonly id: SagaId
}
