/**
 * Moves the engine's bookkeeping out of the saga's context into a `progress` column of its own. The context then
 * holds only what the saga definition put there: only it counts against the context size limit, and the GIN index
 * on it no longer carries engine state.
 *
 * Rows are moved in batches (each statement touches a bounded number of rows). What a saga waits for and until when
 * are now part of its progress: they are taken from the saga's timer, so sagas in flight continue where they were.
 * Neither `lock_version` nor `updated_at` changes: moving a column is not a step, and a saga that was stuck before
 * still is.
 *
 * Versions before this one read progress from the context: stop them before this migration runs.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

const batchSize = 5_000

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  yield* sql`ALTER TABLE orchestrator.saga_instances ADD COLUMN progress jsonb`
  yield* sql`ALTER TABLE orchestrator.saga_instances DISABLE TRIGGER saga_instances_touch_updated_at`

  const moveBatch = sql<{ readonly moved: number }>`
    WITH batch AS (
      SELECT id FROM orchestrator.saga_instances WHERE progress IS NULL ORDER BY id LIMIT ${batchSize}
    ), moved AS (
      UPDATE orchestrator.saga_instances s
      SET progress = (COALESCE(s.context -> '$saga', '{}'::jsonb) - 'taskId') || jsonb_build_object(
            'awaiting', t.awaiting,
            'deadline', to_char(t.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
          ),
          context = s.context - '$saga'
      FROM batch LEFT JOIN orchestrator.saga_timers t ON t.saga_id = batch.id
      WHERE s.id = batch.id
      RETURNING 1
    )
    SELECT count(*)::int AS moved FROM moved`
  let moved = batchSize
  while (moved === batchSize) {
    const [row] = yield* moveBatch
    moved = row?.moved ?? 0
  }

  yield* sql`ALTER TABLE orchestrator.saga_instances ENABLE TRIGGER saga_instances_touch_updated_at`
  yield* sql`
    ALTER TABLE orchestrator.saga_instances
      ALTER COLUMN progress SET NOT NULL,
      ADD CONSTRAINT saga_instances_progress_is_object CHECK (jsonb_typeof(progress) = 'object')`
})
