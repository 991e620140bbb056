/**
 * An example worker for every task type of the BALANCE_CALCULATION saga, written with the worker kit and validated
 * with the JSON Schemas of docs/contract (through Ajv, a dev dependency here: any JSON Schema 2020-12 validator
 * will do) — nothing else from this repository. It does no real work: it answers with
 * made-up references, as a stand-in to run the service against, and as a template for a real worker.
 *
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F node examples/balance-worker.ts
 *
 * Environment: AMQP_URL (required), WORKER_QUEUE (default `balance.worker`), PREFETCH (default 10),
 * SOLVER_MS (how long the pretend solver runs, default 200). Stops gracefully on SIGTERM / SIGINT.
 */
import { readFileSync } from "node:fs"
import { Ajv2020 } from "ajv/dist/2020.js"
import {
  handler,
  jsonSchemaValidator,
  startWorker,
  type TaskContext,
  TaskFailed,
  type Validator
} from "saga-orchestrator/worker-kit"

const ajv = new Ajv2020({ allErrors: true })
/** A validator from a committed schema file, e.g. `tasks/geometry.mesh.payload.schema.json`. */
const schema = (file: string): Validator =>
  jsonSchemaValidator(
    ajv.compile(JSON.parse(readFileSync(new URL(`../docs/contract/${file}`, import.meta.url), "utf8")))
  )
const payloadOf = (taskType: string) => schema(`tasks/${taskType}.payload.schema.json`)
const resultOf = (taskType: string) => schema(`tasks/${taskType}.result.schema.json`)

/** Types matching the schemas, written by hand (or generated with a JSON Schema → TypeScript tool). */
interface PrepareBranch {
  readonly repo: string
  readonly baseBranch: string
  readonly inputRef: string
}
interface DeleteBranch {
  readonly repo: string
  readonly branch: string | null
  readonly inputRef: string
}
interface MeshGeometry {
  readonly repo: string
  readonly branch: string | null
  readonly commitSha: string | null
}
interface RunSolver {
  readonly repo: string
  readonly branch: string | null
  readonly meshRef: string | null
  readonly condenserDataRef: string | null
}
interface DiscardSolverRun {
  readonly repo: string
  readonly runId: string | null
  readonly resultsRef: string | null
}
interface PublishResults {
  readonly repo: string
  readonly branch: string | null
  readonly resultsRef: string | null
}

/** Deterministic by step key: every attempt of a step produces the same references (idempotent by `stepKey`). */
const shortKey = (context: TaskContext) => context.stepKey.split("/")[0]?.slice(-12) ?? context.sagaId.slice(-12)

/** Waits, or rejects as soon as the orchestrator cancels the task. */
const work = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener("abort", () => {
      clearTimeout(timer)
      reject(new Error(`cancelled: ${String(signal.reason)}`))
    })
  })

const solverMs = Number(process.env.SOLVER_MS ?? 200)

const handlers = {
  "gitlab.prepare_branch": handler<PrepareBranch, { branch: string; commitSha: string }>({
    payload: payloadOf("gitlab.prepare_branch"),
    result: resultOf("gitlab.prepare_branch"),
    handle: async (_payload, context) => ({ branch: `calc/${shortKey(context)}`, commitSha: "c".repeat(40) })
  }),
  "gitlab.delete_branch": handler<DeleteBranch, undefined>({
    payload: payloadOf("gitlab.delete_branch"),
    // A compensation succeeds when there is nothing to undo, e.g. no branch was made.
    handle: async () => undefined
  }),
  "geometry.mesh": handler<MeshGeometry, { meshRef: string }>({
    payload: payloadOf("geometry.mesh"),
    result: resultOf("geometry.mesh"),
    handle: async (payload, context) => {
      if (payload.branch === null) {
        throw new TaskFailed({ code: "no_branch", message: "no branch to mesh", retryable: false })
      }
      return { meshRef: `meshes/${shortKey(context)}.msh` }
    }
  }),
  "solver.balance": handler<RunSolver, { runId: string; resultsRef: string }>({
    payload: payloadOf("solver.balance"),
    result: resultOf("solver.balance"),
    handle: async (_payload, context) => {
      await context.reportProgress({ percent: 0, message: "solver started" })
      await work(solverMs, context.signal)
      return { runId: `run-${shortKey(context)}`, resultsRef: `results/${shortKey(context)}/` }
    }
  }),
  "solver.discard_run": handler<DiscardSolverRun, undefined>({
    payload: payloadOf("solver.discard_run"),
    handle: async () => undefined
  }),
  "gitlab.publish_results": handler<PublishResults, { commitSha: string }>({
    payload: payloadOf("gitlab.publish_results"),
    result: resultOf("gitlab.publish_results"),
    handle: async () => ({ commitSha: "d".repeat(40) })
  })
}

const url = process.env.AMQP_URL
if (url === undefined) {
  console.error("set AMQP_URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2F")
  process.exit(2)
}
const worker = startWorker({
  url,
  queue: process.env.WORKER_QUEUE ?? "balance.worker",
  prefetch: Number(process.env.PREFETCH ?? 10),
  connectionName: "balance-worker example",
  handlers
})
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.once(signal, () => {
    worker.stop().then(() => process.exit(0))
  })
}
