/**
 * Wakes the outbox relays: a notification on channel `orchestrator_outbox` for every statement that adds outbox
 * rows. PostgreSQL delivers it when the transaction commits (never for a rolled-back one), so a relay listening on
 * the channel publishes a step's messages right after the step commits instead of at its next poll.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE FUNCTION orchestrator.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('orchestrator_outbox', '');
      RETURN NULL;
    END
    $$`
  yield* sql`
    CREATE TRIGGER saga_outbox_notify AFTER INSERT ON orchestrator.saga_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION orchestrator.notify_outbox()`
})
