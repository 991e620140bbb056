import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber } from "effect"
import { ConnectionError, SqlError } from "effect/sql/SqlError"
import { TestClock } from "effect/testing"
import { StoreUnavailable } from "../../src/domain/errors.ts"
import { withTransactionRetry } from "../../src/store/transactions.ts"

const connectionLost = new SqlError({
  reason: new ConnectionError({ cause: new Error("connection terminated unexpectedly") })
})

/** Where an attempt loses its connection: before the body runs, at COMMIT, or at COMMIT as the driver's defect. */
type Loss = "beforeBody" | "atCommit" | "atCommitAsDefect"

/** A transaction runner whose attempts lose the connection as `losses` says, one per attempt (the last repeats). */
const losingConnections = (losses: ReadonlyArray<Loss>) => {
  let attempt = 0
  return {
    withTransaction: <R, E, A>(body: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> => {
      const loss = losses[Math.min(attempt, losses.length - 1)]
      attempt += 1
      switch (loss) {
        case "beforeBody":
          return Effect.fail(connectionLost)
        case "atCommit":
          return Effect.andThen(body, Effect.fail(connectionLost))
        default:
          return Effect.andThen(body, Effect.die(connectionLost))
      }
    }
  }
}

const transact = (losses: ReadonlyArray<Loss>, retryFor: Duration.Duration) =>
  withTransactionRetry(losingConnections(losses), retryFor)("transact", Effect.succeed("applied")).pipe(Effect.flip)

describe("withTransactionRetry", () => {
  it.effect("says the commit was in doubt when the connection was lost after the body ran", () =>
    Effect.gen(function* () {
      const error = yield* transact(["atCommit"], Duration.zero)
      assert.instanceOf(error, StoreUnavailable)
      assert.deepInclude(error, { operation: "transact", commitInDoubt: true })
      assert.include(error.message, "it may have been applied")
    })
  )

  it.effect("says the commit was in doubt when the driver reports the lost COMMIT as a defect", () =>
    Effect.gen(function* () {
      const error = yield* transact(["atCommitAsDefect"], Duration.zero)
      assert.deepInclude(error, { _tag: "StoreUnavailable", commitInDoubt: true })
    })
  )

  it.effect("says nothing was written when the connection was lost before the body ran", () =>
    Effect.gen(function* () {
      const error = yield* transact(["beforeBody"], Duration.zero)
      assert.deepInclude(error, { _tag: "StoreUnavailable", operation: "transact", commitInDoubt: false })
      assert.include(error.reason, "ConnectionError")
      assert.notInclude(error.message, "in doubt")
    })
  )

  it.effect("keeps the doubt of an earlier attempt when the retries run out before the outcome is known", () =>
    Effect.gen(function* () {
      const fiber = yield* transact(["atCommit", "beforeBody"], Duration.seconds(2)).pipe(Effect.forkChild)
      yield* TestClock.adjust(Duration.seconds(10))
      const error = yield* Fiber.join(fiber)
      assert.deepInclude(error, { _tag: "StoreUnavailable", commitInDoubt: true })
    })
  )
})
