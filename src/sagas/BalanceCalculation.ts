/**
 * The reference saga (DESIGN §10): a heat-balance calculation. Every name here — type, task types, signal, the
 * state AWAITING_CONDENSER_INPUT, the input keys — is part of the public contract. The context holds references into
 * GitLab (repo, branch, commit, file paths) and task ids, never the data itself.
 */
import { Schema } from "effect"
import { backoff, define, signal, task } from "../saga/Definition.ts"

export const BalanceCalculationInput = Schema.Struct({
  repo: Schema.NonEmptyString,
  baseBranch: Schema.NonEmptyString,
  inputRef: Schema.NonEmptyString,
  requestedBy: Schema.NonEmptyString
})
export type BalanceCalculationInput = typeof BalanceCalculationInput.Type

/** The input's four keys stay at the top level so clients can find sagas by them (`context={"inputRef":…}`). */
export interface BalanceCalculationContext extends BalanceCalculationInput {
  readonly [key: string]: unknown
  readonly branch?: string
  readonly branchCommitSha?: string
  readonly meshRef?: string
  readonly condenserDataRef?: string
  readonly solverRunId?: string
  readonly resultsRef?: string
  readonly resultsCommitSha?: string
}

const Ref = Schema.NonEmptyString

export const CondenserInput = Schema.Struct({ condenserDataRef: Ref })

export const BalanceCalculation = define<BalanceCalculationContext, BalanceCalculationInput>({
  type: "BALANCE_CALCULATION",
  version: 1,
  input: BalanceCalculationInput,
  initialContext: (input) => ({ ...input }),
  steps: [
    task({
      name: "prepareBranch",
      state: "PREPARING_BRANCH",
      taskType: "gitlab.prepare_branch",
      payload: (c) => ({ repo: c.repo, baseBranch: c.baseBranch, inputRef: c.inputRef }),
      result: Schema.Struct({ branch: Ref, commitSha: Ref }),
      onSuccess: (c, r) => ({ ...c, branch: r.branch, branchCommitSha: r.commitSha }),
      timeout: "2 minutes",
      retry: backoff({ attempts: 3, initial: "5 seconds" }),
      compensation: {
        name: "deleteBranch",
        state: "DELETING_BRANCH",
        taskType: "gitlab.delete_branch",
        // The branch may be unknown when preparing it was cut short: the worker deletes by repo and input then.
        payload: (c) => ({ repo: c.repo, branch: c.branch ?? null, inputRef: c.inputRef }),
        timeout: "2 minutes",
        retry: backoff({ attempts: 5, initial: "5 seconds" })
      }
    }),
    task({
      name: "meshGeometry",
      state: "MESHING_GEOMETRY",
      taskType: "geometry.mesh",
      payload: (c) => ({ repo: c.repo, branch: c.branch ?? null, commitSha: c.branchCommitSha ?? null }),
      result: Schema.Struct({ meshRef: Ref }),
      onSuccess: (c, r) => ({ ...c, meshRef: r.meshRef }),
      timeout: "30 minutes",
      retry: backoff({ attempts: 3, initial: "30 seconds" })
    }),
    signal({
      name: "receiveCondenserInput",
      state: "AWAITING_CONDENSER_INPUT",
      signal: "condenser_input",
      data: CondenserInput,
      onSignal: (c, d) => ({ ...c, condenserDataRef: d.condenserDataRef }),
      timeout: "7 days"
    }),
    task({
      name: "runSolver",
      state: "RUNNING_SOLVER",
      taskType: "solver.balance",
      payload: (c) => ({
        repo: c.repo,
        branch: c.branch ?? null,
        meshRef: c.meshRef ?? null,
        condenserDataRef: c.condenserDataRef ?? null
      }),
      result: Schema.Struct({ runId: Ref, resultsRef: Ref }),
      onSuccess: (c, r) => ({ ...c, solverRunId: r.runId, resultsRef: r.resultsRef }),
      timeout: "2 hours",
      // A run takes hours: a solver that stopped heartbeating is noticed in minutes, not at the end of the timeout.
      heartbeatTimeout: "5 minutes",
      retry: backoff({ attempts: 2, initial: "1 minute" }),
      compensation: {
        name: "discardSolverRun",
        state: "DISCARDING_SOLVER_RUN",
        taskType: "solver.discard_run",
        payload: (c) => ({ repo: c.repo, runId: c.solverRunId ?? null, resultsRef: c.resultsRef ?? null }),
        timeout: "5 minutes",
        retry: backoff({ attempts: 5, initial: "10 seconds" })
      }
    }),
    task({
      name: "publishResults",
      state: "PUBLISHING_RESULTS",
      taskType: "gitlab.publish_results",
      payload: (c) => ({ repo: c.repo, branch: c.branch ?? null, resultsRef: c.resultsRef ?? null }),
      result: Schema.Struct({ commitSha: Ref }),
      onSuccess: (c, r) => ({ ...c, resultsCommitSha: r.commitSha }),
      timeout: "5 minutes",
      retry: backoff({ attempts: 3, initial: "10 seconds" })
    })
  ]
})
