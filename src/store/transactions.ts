/**
 * Running a transaction so that it either commits once or fails with a typed error.
 *
 * When the connection dies inside `sql.withTransaction` (server restart, failover), @effect/sql-pg reports it as a
 * defect (the rollback is `orDie`), not as a typed failure. It is turned back into its `SqlError` here, at the one
 * place that runs saga transactions, so that retryable failures are retried from a fresh transaction.
 */
import { Duration, Effect, Schedule } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
import { InvalidSagaData, StoreUnavailable } from "../domain/errors.ts"

/**
 * SQLSTATEs worth a fresh attempt beyond those the driver marks retryable: the server shutting down or restarting
 * (57P01..57P03) and a write reaching a standby during a switchover (25006).
 */
const retryableSqlStates = new Set(["57P01", "57P02", "57P03", "25006", "40001", "40P01"])

const sqlState = (error: SqlError): string | undefined => {
  const cause = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

export const isRetryable = (error: SqlError): boolean =>
  error.isRetryable || retryableSqlStates.has(sqlState(error) ?? "")

/** What the server said, for the error shown to callers and operators (never connection parameters). */
export const describe = (error: SqlError): string => {
  const cause = error.reason.cause
  const serverMessage = cause instanceof Error ? cause.message : undefined
  const code = sqlState(error)
  return [error.reason._tag, code && `SQLSTATE ${code}`, serverMessage].filter(Boolean).join(": ")
}

export const storeFailure = (operation: string) => (error: SqlError) =>
  new StoreUnavailable({ operation, reason: describe(error) })

/**
 * The server refused the data itself — a data exception (SQLSTATE class 22: a character it cannot store, a value out
 * of range) or a program limit (class 54: too deeply nested, too large). Retrying cannot cure it, and it is no outage.
 */
export const isDataError = (error: SqlError): boolean => {
  const state = sqlState(error) ?? ""
  return state.startsWith("22") || state.startsWith("54")
}

/** What a failed statement means for the caller: the data was refused (`field` names it), or the store is unavailable. */
export const refusalOrFailure = (operation: string, field: string) => (error: SqlError) =>
  isDataError(error)
    ? new InvalidSagaData({ field, reason: describe(error) })
    : new StoreUnavailable({ operation, reason: describe(error) })

const recoverConnectionDefect = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.catchDefect(self, (defect) => (isSqlError(defect) ? Effect.fail(defect) : Effect.die(defect)))

/** Exponential back-off from 20 ms, each wait at most 1 s, for at most `retryFor` in all; zero means no retry. */
export const retrySchedule = (retryFor: Duration.Duration) =>
  Schedule.max([
    Schedule.exponential("20 millis").pipe(
      Schedule.modifyDelay(({ duration }) => Effect.succeed(Duration.min(duration, Duration.seconds(1)))),
      Schedule.jittered
    ),
    // `during(zero)` still allows one retry (nothing has elapsed at the first failure); publishOutbox must not retry.
    Duration.isZero(retryFor) ? Schedule.recurs(0) : Schedule.during(retryFor)
  ])

/** The connection went away (or the server is going down): a COMMIT sent on it may or may not have committed. */
const isConnectionLost = (error: SqlError): boolean =>
  error.reason._tag === "ConnectionError" || (sqlState(error)?.startsWith("57P") ?? false)

/**
 * Runs `body` in a transaction, retrying retryable failures from a fresh transaction. The body must be safe to run
 * again: it starts with a locked read, so a retry decides again on what is committed. Data the server refuses
 * (`isDataError`) is not retried: it fails with `InvalidSagaData`.
 *
 * An attempt whose body succeeded and whose connection was then lost failed at COMMIT: it may have committed. A retry
 * of `transact` finds out (its history row); when the retries run out first, the error has `commitInDoubt`.
 */
export const withTransactionRetry = (sql: Pick<SqlClient, "withTransaction">, retryFor: Duration.Duration) => {
  // A schedule is a description: one serves every transaction.
  const schedule = retrySchedule(retryFor)
  return <A, E, R>(
    operation: string,
    body: Effect.Effect<A, E, R>
  ): Effect.Effect<A, Exclude<E, SqlError> | StoreUnavailable | InvalidSagaData, R> =>
    Effect.suspend(() => {
      let bodyDone = false
      let commitInDoubt = false
      const attempt = Effect.suspend(() => {
        bodyDone = false
        const markDone = Effect.sync(() => {
          bodyDone = true
        })
        return sql.withTransaction(Effect.tap(body, () => markDone))
      }).pipe(
        recoverConnectionDefect,
        Effect.tapError((error: E | SqlError) =>
          Effect.sync(() => {
            if (bodyDone && isSqlError(error) && isConnectionLost(error)) commitInDoubt = true
          })
        )
      )
      return attempt.pipe(
        Effect.retry({
          while: (error: E | SqlError) => isSqlError(error) && isRetryable(error),
          schedule
        }),
        Effect.catchIf(isSqlError, (error) =>
          Effect.fail(
            isDataError(error)
              ? new InvalidSagaData({ field: "data", reason: describe(error) })
              : new StoreUnavailable({ operation, reason: describe(error), commitInDoubt })
          )
        )
      )
    }) as Effect.Effect<A, Exclude<E, SqlError> | StoreUnavailable | InvalidSagaData, R>
}
