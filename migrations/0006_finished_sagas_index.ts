/**
 * Retention deletes finished sagas oldest first, a batch at a time: this index finds them without reading the active
 * ones, and stays small when retention keeps up. Idempotency keys expire by age: their table gets an index on it.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE INDEX saga_instances_finished_updated_at_idx ON orchestrator.saga_instances (updated_at)
    WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED')`
  yield* sql`CREATE INDEX saga_idempotency_keys_created_at_idx ON orchestrator.saga_idempotency_keys (created_at)`
})
