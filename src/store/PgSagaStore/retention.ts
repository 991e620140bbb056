/**
 * Retention on PostgreSQL: finished sagas past the cut-off go, oldest first, a batch per transaction, with everything
 * that belongs to them (history, timer, idempotency key and ignored events follow by `ON DELETE CASCADE`); and
 * idempotency keys past it go whatever their saga. One instance at a time: a transaction-scoped advisory lock, which
 * a second instance finds taken and so skips its turn.
 */
import { DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import type { SagaStore } from "../SagaStore.ts"
import { storeFailure } from "../transactions.ts"

/** The advisory lock key of retention: any fixed number the schema's other locks do not use. */
export const retentionLock = 7_361_029_114

export const make = (sql: SqlClient) => {
  const purge: SagaStore["Service"]["purge"] = ({ finishedBefore, limit, dryRun }) =>
    Effect.gen(function* () {
      const cutoff = DateTime.toDateUtc(finishedBefore)
      if (dryRun === true) {
        const [due] = yield* sql<{ readonly sagas: number; readonly keys: number }>`
          SELECT (SELECT count(*) FROM orchestrator.saga_instances
                  WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND updated_at < ${cutoff})::int AS sagas,
                 (SELECT count(*) FROM orchestrator.saga_idempotency_keys WHERE created_at < ${cutoff})::int AS keys`
        return { sagas: due?.sagas ?? 0, idempotencyKeys: due?.keys ?? 0, busy: false }
      }
      return yield* sql.withTransaction(
        Effect.gen(function* () {
          const [lock] = yield* sql<{ readonly locked: boolean }>`
            SELECT pg_try_advisory_xact_lock(${retentionLock}) AS locked`
          if (lock?.locked !== true) return { sagas: 0, idempotencyKeys: 0, busy: true }
          const [sagas] = yield* sql<{ readonly n: number }>`
            WITH doomed AS (
              SELECT id FROM orchestrator.saga_instances
              WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED') AND updated_at < ${cutoff}
              ORDER BY updated_at
              LIMIT ${limit}
              FOR UPDATE SKIP LOCKED
            ), deleted AS (
              DELETE FROM orchestrator.saga_instances s USING doomed WHERE s.id = doomed.id RETURNING 1
            )
            SELECT count(*)::int AS n FROM deleted`
          const [keys] = yield* sql<{ readonly n: number }>`
            WITH doomed AS (
              SELECT idempotency_key FROM orchestrator.saga_idempotency_keys
              WHERE created_at < ${cutoff}
              ORDER BY created_at
              LIMIT ${limit}
              FOR UPDATE SKIP LOCKED
            ), deleted AS (
              DELETE FROM orchestrator.saga_idempotency_keys k USING doomed
              WHERE k.idempotency_key = doomed.idempotency_key RETURNING 1
            )
            SELECT count(*)::int AS n FROM deleted`
          return { sagas: sagas?.n ?? 0, idempotencyKeys: keys?.n ?? 0, busy: false }
        })
      )
    }).pipe(Effect.mapError(storeFailure("purge")), Effect.withSpan("SagaStore.purge"))

  return { purge }
}
