/**
 * The store's read-only reports on PostgreSQL, for health reports and metrics. They run outside saga transactions
 * and take no locks. A row that does not decode is a defect, as in `rows.ts`.
 */
import { Duration, Effect, Schema } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { SagaStatus } from "../../domain/Saga.ts"
import type { SagaStore } from "../SagaStore.ts"
import { storeFailure } from "../transactions.ts"

const decodeRows = <S extends Schema.Top>(row: S) => {
  const decode = Schema.decodeUnknownEffect(Schema.Array(row))
  return (rows: ReadonlyArray<unknown>) => Effect.orDie(decode(rows))
}

const statusRows = decodeRows(Schema.Struct({ status: SagaStatus, count: Schema.Int }))
const outboxRows = decodeRows(Schema.Struct({ count: Schema.Int, lag: Schema.Number }))
const activeRows = decodeRows(
  Schema.Struct({
    saga_type: Schema.String,
    status: SagaStatus,
    current_state: Schema.String,
    count: Schema.Int,
    stuck: Schema.Int
  })
)

export const make = (sql: SqlClient) => {
  const summary: SagaStore["Service"]["summary"] = Effect.gen(function* () {
    const rows = yield* sql`
      SELECT status, count(*)::int AS count FROM orchestrator.saga_instances GROUP BY status`.pipe(
      Effect.flatMap(statusRows)
    )
    const outbox = yield* sql`
      SELECT count(*)::int AS count,
             COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) * 1000, 0)::float8 AS lag
      FROM orchestrator.saga_outbox`.pipe(Effect.flatMap(outboxRows))
    const byStatus = { RUNNING: 0, COMPENSATING: 0, COMPLETED: 0, FAILED: 0, CANCELLED: 0 }
    for (const row of rows) byStatus[row.status] = row.count
    return { byStatus, outboxPending: outbox[0]?.count ?? 0, outboxLagMillis: Math.max(0, outbox[0]?.lag ?? 0) }
  }).pipe(Effect.mapError(storeFailure("summary")))

  // "Stuck" is exactly `findStuck`'s condition, so the metric and the operators' list agree.
  const countActive: SagaStore["Service"]["countActive"] = (stuckAfter) =>
    sql`
      SELECT saga_type, status, current_state, count(*)::int AS count,
             (count(*) FILTER (
               WHERE updated_at <= now() - ${Duration.toMillis(stuckAfter)} * interval '1 millisecond'
             ))::int AS stuck
      FROM orchestrator.saga_instances
      WHERE status IN ('RUNNING', 'COMPENSATING')
      GROUP BY saga_type, status, current_state
      ORDER BY saga_type, status, current_state`.pipe(
      Effect.mapError(storeFailure("countActive")),
      Effect.flatMap(activeRows),
      Effect.map((rows) =>
        rows.map((row) => ({
          sagaType: row.saga_type,
          status: row.status,
          state: row.current_state,
          count: row.count,
          stuck: row.stuck
        }))
      )
    )

  return { summary, countActive }
}
