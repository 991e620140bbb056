/**
 * End to end, as in production: the service (`node src/main.ts`) and the test worker (test/worker/worker.ts) run as
 * OS processes on real PostgreSQL and RabbitMQ. The test plays the client and the engineer: it starts sagas through
 * the engine on the same database, supplies condenser data when it chooses to, and afterwards checks what the
 * database, the worker's effects file and the queues say. The worker reads each saga's plan from its repo,
 * `e2e/<plan>/<label>`.
 */
import { Cause, Duration, Effect, Layer, Ref, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { isActive, type SagaInstance } from "../../src/domain/Saga.ts"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as Eventually from "../utils/eventually.ts"
import { Deployment, tail } from "./harness/deployment.ts"
import { expected, type Plan, type Started } from "./harness/plans.ts"

export {
  appliedEffects,
  cancellationsReceived,
  Deployment,
  type Endpoints,
  layer,
  paused,
  publishRawReplies,
  queueDepth,
  takeDeadLetters
} from "./harness/deployment.ts"
export { expected, type Plan, type Started } from "./harness/plans.ts"
export { type VerifyOptions, verify } from "./harness/verify.ts"

/** The engine in this process, on the store the test provides: the same database the service runs on. */
export const runtime = Engine.layer.pipe(Layer.provideMerge(SagaRegistry.layer(definitions)))

/** Starts `count` sagas per plan, repos `e2e/<plan>/<label><n>`. */
export const startSagas = Effect.fnUntraced(function* (label: string, plans: ReadonlyArray<readonly [Plan, number]>) {
  const engine = yield* Engine.Engine
  const runs = plans.flatMap(([plan, count]) =>
    Array.from({ length: count }, (_, n) => ({ plan, repo: `e2e/${plan}/${label}${n}` }))
  )
  return yield* Effect.forEach(runs, ({ plan, repo }) =>
    engine
      .start("BALANCE_CALCULATION", {
        repo,
        baseBranch: "main",
        inputRef: `inputs/${repo}.yaml`,
        requestedBy: "e2e"
      })
      .pipe(Effect.map(({ saga }): Started => ({ plan, repo, id: saga.id })))
  )
})

/**
 * The engineer's part, in a loop: condenser data for the released sagas waiting for it. It also stands in for time
 * passing: retry back-offs (30 s for meshing) are brought due at once instead of being waited out; firing them is
 * still the service's timer scanner's job. Failures (the database restarting) are retried on the next round.
 */
export const engineer = Effect.gen(function* () {
  const released = yield* Ref.make<ReadonlySet<string>>(new Set())
  const store = yield* SagaStore
  const engine = yield* Engine.Engine
  const sql = yield* SqlClient.SqlClient
  const round = Effect.gen(function* () {
    const waiting = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
    const ready = yield* Ref.get(released)
    yield* Effect.forEach(
      waiting.items.filter((saga) => ready.has(saga.id)),
      (saga) =>
        engine
          .signal(saga.id, "condenser_input", { condenserDataRef: `condenser/${saga.id}.json` })
          .pipe(Effect.ignore),
      { discard: true }
    )
    yield* sql`
      UPDATE orchestrator.saga_timers SET due_at = now()
      WHERE awaiting ->> '_tag' = 'Timer' AND awaiting ->> 'reason' LIKE 'retry %' AND due_at > now()`
  })
  yield* round.pipe(
    Effect.ignore,
    Effect.repeat(Schedule.spaced("50 millis")),
    // A defect ends the loop; say so, or a test would only see its deadline pass.
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.logError("the engineer's loop died", cause)
    ),
    Effect.forkScoped
  )
  return {
    /** From now on these sagas get their condenser data as soon as they wait for it. */
    release: (sagas: ReadonlyArray<Started>) =>
      Ref.update(released, (ids) => new Set([...ids, ...sagas.map((s) => s.id)]))
  }
})

const sagasOf = (started: ReadonlyArray<Started>) =>
  Effect.flatMap(SagaStore, (store) => Effect.forEach(started, (s) => store.get(s.id)))

/** How many sagas are in which state: what a missed deadline reports. */
const describeSagas = (started: ReadonlyArray<Started>) =>
  sagasOf(started).pipe(
    Effect.map((sagas) => {
      const counts = new Map<string, number>()
      for (const saga of sagas) counts.set(saga.currentState, (counts.get(saga.currentState) ?? 0) + 1)
      return [...counts].map(([state, n]) => `${state}: ${n}`).join(", ")
    }),
    Effect.catch((error) => Effect.succeed(`unknown (${error.message})`))
  )

/**
 * Polls `check` until it holds, and returns how long that took; past the deadline the test fails saying what it
 * waited for, where the sagas are, and what the service and the worker printed last. A check that fails (the
 * database restarting) counts as not holding yet.
 */
export const eventually = <R>(
  what: string,
  check: Effect.Effect<boolean, unknown, R>,
  deadline: number,
  sagas: ReadonlyArray<Started> = []
) =>
  Eventually.eventually(what, check.pipe(Effect.orElseSucceed(() => false)), {
    within: Duration.millis(deadline),
    every: "50 millis",
    explain: Effect.gen(function* () {
      const { service, worker } = yield* Deployment
      return `sagas: ${yield* describeSagas(sagas)}\n--- service:\n${tail(service)}\n--- worker:\n${tail(worker)}`
    })
  })

/** Whether the sagas, as they are now, satisfy `predicate`. */
export const sagasAre = (started: ReadonlyArray<Started>, predicate: (sagas: ReadonlyArray<SagaInstance>) => boolean) =>
  Effect.map(sagasOf(started), predicate)

export const allIn = (started: ReadonlyArray<Started>, state: string) =>
  sagasAre(started, (sagas) => sagas.every((saga) => saga.currentState === state))

/**
 * Two batches of sagas parked at AWAITING_CONDENSER_INPUT — an early one (ok, retry-mesh, fatal-solver) and a late
 * one — so a restart test can release the early batch and disrupt a server while the late one still waits.
 */
export const startParkedBatches = Effect.gen(function* () {
  const early = yield* startSagas("early-", [
    ["ok", 5],
    ["retry-mesh", 1],
    ["fatal-solver", 2]
  ])
  const late = yield* startSagas("late-", [
    ["ok", 6],
    ["fatal-solver", 1]
  ])
  const all = [...early, ...late]
  yield* eventually("every saga waits for condenser data", allIn(all, "AWAITING_CONDENSER_INPUT"), 20_000, all)
  return { early, late, all }
})

/** Every saga ended, its duplicate and late replies arrived, and nothing waits in the outbox. */
export const settled = (started: ReadonlyArray<Started>) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const sagas = yield* sagasOf(started)
    if (sagas.some((saga) => isActive(saga.status))) return false
    for (const { id, plan } of started) {
      if ((yield* store.ignoredEvents(id)).length < expected[plan].ignored) return false
    }
    return (yield* store.summary).outboxPending === 0
  })

/** The outbox is empty: everything committed so far was published and confirmed. */
export const outboxEmpty = Effect.map(
  Effect.flatMap(SagaStore, (store) => store.summary),
  (summary) => summary.outboxPending === 0
)
