/**
 * Timers claimed by an instance that dies before firing them (its lease is all that is left of it) fire on another
 * instance within seconds, once, on real PostgreSQL.
 */
import { assert, layer } from "@effect/vitest"
import { DateTime, Effect, Layer } from "effect"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import * as TimerScanner from "../../src/saga/TimerScanner.ts"
import { BalanceCalculation } from "../../src/sagas/BalanceCalculation.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { eventually } from "../utils/eventually.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"

const runtime = Engine.layer.pipe(
  Layer.provideMerge(SagaRegistry.layer([BalanceCalculation])),
  Layer.provideMerge(TestDatabase.layerStore())
)

const input = { repo: "balance/takeover", baseBranch: "main", inputRef: "inputs/t.yaml", requestedBy: "test" }

layer(runtime, { excludeTestServices: true, timeout: "60 seconds" })("Timer takeover", (it) => {
  it.effect("fires the timers a dead instance had claimed on another instance within 5 s, each once", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const engine = yield* Engine.Engine
      const db = yield* TestDatabase.TestDatabase
      const sagas = yield* Effect.forEach([1, 2, 3], (n) =>
        engine.start("BALANCE_CALCULATION", { ...input, repo: `balance/takeover-${n}` })
      )
      const ids = sagas.map(({ saga }) => `'${saga.id}'`).join(",")
      // Their reply timeouts come due now; the instance that claims them dies before firing any.
      yield* db.superuser(`UPDATE orchestrator.saga_timers SET due_at = now() WHERE saga_id IN (${ids})`)
      const claimed = yield* store.claimDue(yield* DateTime.now, 100)
      assert.strictEqual(claimed.length, 3)

      // Another instance's scanner, polling as the service's does.
      yield* Effect.forkScoped(TimerScanner.run())
      const retried = `SELECT count(*) FROM orchestrator.saga_transitions
        WHERE saga_id IN (${ids}) AND event = 'StepRetryScheduled'`
      yield* eventually(
        "the three timers fired, within 5 s of the claimer's death",
        Effect.map(db.superuser(retried), (count) => count.trim() === "3"),
        { within: "5 seconds", every: "50 millis" }
      )
      const versions = yield* Effect.forEach(sagas, ({ saga }) => Effect.map(store.get(saga.id), (s) => s.lockVersion))
      assert.deepStrictEqual(versions, [1, 1, 1], "each timer fired once")
    })
  )
})
