/**
 * The chaos run's own part in the sagas, in this process, through the engine on the private cluster: it starts the
 * sagas at an even pace, supplies the condenser input a saga waits for (the engineer's part), and watches until every
 * saga ended. It rides through the outages like the service does: the store retries its transactions, a start is
 * retried under its idempotency key (safe after a commit whose outcome was unclear), and a failed round of signals is
 * simply the next round's work.
 */
import { readFileSync } from "node:fs"
import { Clock, Data, Duration, Effect, Schedule } from "effect"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { inputOf, planOf, repoOf } from "./plans.ts"
import type { Log } from "./supervised.ts"
import type { StartedSaga } from "./verify.ts"

export class ChaosFailed extends Data.TaggedError("ChaosFailed")<{ readonly reason: string }> {
  override get message() {
    return `chaos run failed: ${this.reason}`
  }
}

const sagaType = "BALANCE_CALCULATION"

/** Logs the first failure of an action the driver keeps retrying, and its recovery, rather than every round. */
const outageReporter = (log: Log, what: string) => {
  let failures = 0
  return {
    failed: (reason: string) =>
      Effect.suspend(() => (failures++ === 0 ? log(`driver: ${what} failed (${reason}); retrying`) : Effect.void)),
    succeeded: Effect.suspend(() => {
      const failed = failures
      failures = 0
      return failed === 0 ? Effect.void : log(`driver: ${what} works again, after ${failed} failed attempt(s)`)
    })
  }
}

/** Starts saga 0..count-1, saga `index` at `index * interval` from now (later when the database was down). */
export const startSagas = (count: number, interval: Duration.Duration, log: Log) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    const origin = yield* Clock.currentTimeMillis
    const started: Array<StartedSaga> = []
    const reporter = outageReporter(log, "starting sagas")
    for (let index = 0; index < count; index++) {
      const wait = origin + index * Duration.toMillis(interval) - (yield* Clock.currentTimeMillis)
      if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
      const { saga } = yield* engine.start(sagaType, inputOf(index), { idempotencyKey: `chaos-${index}` }).pipe(
        Effect.tapError((error) => reporter.failed(`saga ${index}: ${error.message}`)),
        Effect.retry({ while: (error) => error._tag === "StoreUnavailable", schedule: Schedule.spaced("500 millis") }),
        Effect.orDie
      )
      yield* reporter.succeeded
      started.push({ index, plan: planOf(index), repo: repoOf(index), id: saga.id })
    }
    yield* log(`driver: all ${count} sagas started`)
    return started
  })

/** Condenser data for every saga waiting for it, round after round until interrupted. */
export const supplyCondenserInput = (log: Log) => {
  const reporter = outageReporter(log, "supplying condenser input")
  return Effect.gen(function* () {
    const store = yield* SagaStore
    const engine = yield* Engine
    const waiting = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
    yield* Effect.forEach(
      waiting.items,
      (saga) => engine.signal(saga.id, "condenser_input", { condenserDataRef: `condenser/${saga.id}.json` }),
      { concurrency: 4, discard: true }
    )
    yield* reporter.succeeded
  }).pipe(
    Effect.catch((error) => reporter.failed(error.message)),
    Effect.catchDefect((defect) => reporter.failed(`died: ${String(defect)}`)),
    Effect.andThen(Effect.sleep("200 millis")),
    Effect.forever
  )
}

/** A status line every 5 s: sagas by status, the outbox, tasks applied, orchestrators up. */
export const monitor = (log: Log, effectsFile: string, orchestratorsUp: () => string) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const summary = yield* store.summary.pipe(Effect.option)
    const applied = readFileSync(effectsFile, "utf8").split("\n").length - 1
    const state =
      summary._tag === "Some"
        ? `${Object.entries(summary.value.byStatus)
            .filter(([, n]) => n > 0)
            .map(([status, n]) => `${status} ${n}`)
            .join(", ")} · outbox ${summary.value.outboxPending}`
        : "state store unavailable"
    yield* log(`status: ${state} · tasks applied ${applied} · orchestrators up ${orchestratorsUp()}`)
  }).pipe(Effect.andThen(Effect.sleep("5 seconds")), Effect.forever)

/** Polls until `count` sagas have ended; past `deadline`, fails naming the active sagas and what they wait for. */
export const awaitTerminal = (count: number, deadline: Duration.Duration, log: Log) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const ended = store.summary.pipe(
      Effect.map(
        ({ byStatus }) =>
          byStatus.RUNNING + byStatus.COMPENSATING === 0 &&
          byStatus.COMPLETED + byStatus.FAILED + byStatus.CANCELLED === count
      ),
      Effect.orElseSucceed(() => false)
    )
    const done = yield* ended.pipe(
      Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("250 millis") }),
      Effect.timeoutOption(deadline)
    )
    if (done._tag === "Some") return
    const stuck = yield* store.findStuck(Duration.zero, { limit: 30 }).pipe(Effect.orDie)
    for (const { saga, timer } of stuck) {
      const waitsFor = timer === null ? "nothing (no timer)" : `${JSON.stringify(timer.awaiting)} due ${timer.dueAt}`
      yield* log(
        `  still active: ${String(saga.context.repo)} ${saga.status} in ${saga.currentState} at version ` +
          `${saga.lockVersion}, waiting for ${waitsFor}`
      )
    }
    return yield* new ChaosFailed({
      reason: `sagas still active ${Duration.format(deadline)} after the chaos ended (listed above)`
    })
  })
