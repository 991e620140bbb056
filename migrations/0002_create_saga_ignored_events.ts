/**
 * Events a saga received but was not waiting for — a duplicate or late reply, a reply to an earlier attempt, a
 * signal in the wrong state. They change nothing (no lock version, no history row), but operators must be able to
 * see that they arrived and why they were ignored. Written in the transaction that decided to ignore them.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE orchestrator.saga_ignored_events (
      id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      saga_id      uuid        NOT NULL REFERENCES orchestrator.saga_instances (id) ON DELETE CASCADE,
      lock_version integer     NOT NULL,
      event        varchar     NOT NULL,
      detail       jsonb,
      at           timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`CREATE INDEX saga_ignored_events_saga_id_idx ON orchestrator.saga_ignored_events (saga_id, id)`
})
