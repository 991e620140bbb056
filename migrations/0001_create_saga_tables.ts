/**
 * The saga state store. `saga_instances` is the seed's logical model, column for column; the other tables
 * carry what one row per saga cannot, each written in the same transaction as the saga row it belongs to.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient

  yield* sql`
    CREATE TABLE orchestrator.saga_instances (
      id             uuid        PRIMARY KEY,
      saga_type      varchar     NOT NULL,
      current_state  varchar     NOT NULL,
      status         varchar     NOT NULL
        CONSTRAINT saga_instances_status_check
        CHECK (status IN ('RUNNING', 'COMPENSATING', 'COMPLETED', 'FAILED', 'CANCELLED')),
      context        jsonb       NOT NULL
        CONSTRAINT saga_instances_context_is_object CHECK (jsonb_typeof(context) = 'object'),
      correlation_id varchar     NOT NULL,
      lock_version   integer     NOT NULL DEFAULT 0 CONSTRAINT saga_instances_lock_version_check CHECK (lock_version >= 0),
      created_at     timestamptz NOT NULL DEFAULT now(),
      updated_at     timestamptz NOT NULL DEFAULT now()
    )`

  // updated_at is the database's to keep: "no progress since" (findStuck) must not depend on callers.
  yield* sql`
    CREATE FUNCTION orchestrator.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      NEW.updated_at := now();
      RETURN NEW;
    END
    $$`
  yield* sql`
    CREATE TRIGGER saga_instances_touch_updated_at BEFORE UPDATE ON orchestrator.saga_instances
    FOR EACH ROW EXECUTE FUNCTION orchestrator.touch_updated_at()`

  yield* sql`CREATE INDEX saga_instances_saga_type_idx ON orchestrator.saga_instances (saga_type)`
  yield* sql`CREATE INDEX saga_instances_current_state_idx ON orchestrator.saga_instances (current_state)`
  yield* sql`CREATE INDEX saga_instances_status_idx ON orchestrator.saga_instances (status)`
  yield* sql`CREATE INDEX saga_instances_correlation_id_idx ON orchestrator.saga_instances (correlation_id)`
  // jsonb_path_ops: smaller and faster than the default opclass, and containment (@>) is the only operator used.
  yield* sql`CREATE INDEX saga_instances_context_idx ON orchestrator.saga_instances USING gin (context jsonb_path_ops)`
  // findStuck: only active sagas, which stay a small part of the table as terminal ones accumulate.
  yield* sql`
    CREATE INDEX saga_instances_active_updated_at_idx ON orchestrator.saga_instances (updated_at)
    WHERE status IN ('RUNNING', 'COMPENSATING')`

  // Append-only history, one row per lock version (the primary key makes a gap-free, duplicate-free sequence
  // checkable). transition_id identifies the transact call that wrote the row, so a retry after a commit whose
  // acknowledgement was lost can tell that it already happened.
  yield* sql`
    CREATE TABLE orchestrator.saga_transitions (
      saga_id       uuid        NOT NULL REFERENCES orchestrator.saga_instances (id) ON DELETE CASCADE,
      lock_version  integer     NOT NULL,
      from_state    varchar,
      to_state      varchar     NOT NULL,
      status        varchar     NOT NULL,
      event         varchar     NOT NULL,
      detail        jsonb,
      transition_id uuid        NOT NULL,
      at            timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (saga_id, lock_version)
    )`
  // Retention pruning deletes by age.
  yield* sql`CREATE INDEX saga_transitions_at_idx ON orchestrator.saga_transitions (at)`

  // Transactional outbox: messages become visible to the relay only when the state change that produced them
  // commits. Rows live until the broker confirms them, so no foreign key (and no lock on the saga) is needed.
  yield* sql`
    CREATE TABLE orchestrator.saga_outbox (
      id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      message_id     uuid        NOT NULL,
      saga_id        uuid        NOT NULL,
      correlation_id varchar     NOT NULL,
      exchange       varchar     NOT NULL,
      routing_key    varchar     NOT NULL,
      headers        jsonb       NOT NULL DEFAULT '{}',
      payload        jsonb       NOT NULL,
      created_at     timestamptz NOT NULL DEFAULT now()
    )`

  // The persisted per-saga timer (step timeout, retry back-off, signal deadline) and what the saga waits for.
  // A separate table so that claiming a timer (which moves due_at forward as a lease) never touches the saga row
  // or its lock_version. lock_version is the saga version that armed the timer: firing is valid only at it.
  yield* sql`
    CREATE TABLE orchestrator.saga_timers (
      saga_id      uuid        PRIMARY KEY REFERENCES orchestrator.saga_instances (id) ON DELETE CASCADE,
      due_at       timestamptz NOT NULL,
      awaiting     jsonb       NOT NULL,
      lock_version integer     NOT NULL
    )`
  yield* sql`CREATE INDEX saga_timers_due_at_idx ON orchestrator.saga_timers (due_at)`

  // Idempotent create: a client's key maps to the saga it first started.
  yield* sql`
    CREATE TABLE orchestrator.saga_idempotency_keys (
      idempotency_key varchar     PRIMARY KEY,
      saga_id         uuid        NOT NULL REFERENCES orchestrator.saga_instances (id) ON DELETE CASCADE,
      created_at      timestamptz NOT NULL DEFAULT now()
    )`

  // The runtime role gets DML on every table here through default privileges; the migrations table is the
  // exception: it may read it (to check the schema is current) but never change it.
  yield* sql`
    DO $$
    DECLARE grantee_name name;
    BEGIN
      FOR grantee_name IN
        SELECT DISTINCT grantee FROM information_schema.role_table_grants
        WHERE table_schema = 'orchestrator' AND table_name = 'effect_sql_migrations'
          AND grantee <> current_user AND privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
      LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON orchestrator.effect_sql_migrations FROM %I',
                       grantee_name);
      END LOOP;
    END
    $$`
})
