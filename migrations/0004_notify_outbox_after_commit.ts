/**
 * Drops the outbox trigger of migration 0003. A notification sent inside a transaction makes PostgreSQL serialize
 * that transaction's commit with every other notifying one (a database-wide lock held through the commit's WAL
 * flush), so with a trigger on every step no two steps could share a commit flush. Writers now announce their
 * outbox commits after committing (see src/store/OutboxNotifications.ts): in memory to the relay of their own
 * process, otherwise on the same `orchestrator_outbox` channel.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`DROP TRIGGER saga_outbox_notify ON orchestrator.saga_outbox`
  yield* sql`DROP FUNCTION orchestrator.notify_outbox()`
})
