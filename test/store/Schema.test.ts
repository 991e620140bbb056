/**
 * The schema the migrations leave behind, read back from the catalog, against the documented model (README, Database); and, on 100k sagas, the
 * plans PostgreSQL picks for the store's own queries (captured from PgSagaStore as it runs them), so that a
 * dropped or unusable index shows up here rather than as a slow operator screen in production.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Context, DateTime, Duration, Effect, Layer, Schema } from "effect"
import { isSqlError } from "effect/sql/SqlError"
import * as Statement from "effect/sql/Statement"
import type { SagaId } from "../../src/domain/Saga.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { pg } from "../utils/postgres.ts"
import * as TestDatabase from "../utils/TestDatabase.ts"

/** The `postgres` superuser on the test database: bypasses every privilege, so only the schema can refuse. */
class Superuser extends Context.Service<Superuser, PgClient.PgClient>()("test/store/Schema/Superuser") {}

const superuserLayer = Layer.unwrap(
  Effect.map(TestDatabase.TestDatabase, (db) =>
    Layer.effect(Superuser, Effect.service(PgClient.PgClient)).pipe(
      Layer.provide(
        PgClient.layer({ host: pg.host, port: pg.port, database: db.name, username: pg.superuser, maxConnections: 2 })
      )
    )
  )
)

// ---------------------------------------------------------------------------------------------------------------
// The bulk data set: 100k sagas, one per n. About 95% COMPLETED, 5% active (n % 20 = 0, every other one of them
// COMPENSATING), each active one with a timer. updated_at is n minutes after a point ~70 days ago, so the oldest
// sagas have the smallest n and the boundary of "older than a day" lies far from any two neighbouring active rows.

const bulkSize = 100_000
const bulkType = "BULK_BALANCE_CALCULATION"
const bulkId = (n: number) => `00000000-0000-7000-8000-${n.toString(16).padStart(12, "0")}` as SagaId

const loadBulk = Effect.gen(function* () {
  const sql = yield* Superuser
  yield* sql`
    WITH sagas AS (
      INSERT INTO orchestrator.saga_instances
        (id, saga_type, current_state, status, context, progress, correlation_id, lock_version, created_at, updated_at)
      SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,
             ${bulkType},
             CASE WHEN n % 20 = 0 THEN 'AWAITING_CONDENSER_INPUT' ELSE 'FINISHED' END,
             CASE WHEN n % 40 = 0 THEN 'COMPENSATING' WHEN n % 20 = 0 THEN 'RUNNING' ELSE 'COMPLETED' END,
             jsonb_build_object('inputRef', 'in/' || n, 'repo', 'balance/plant-' || n % 50, 'taskId', 'task-' || n),
             '{}',
             'trace-' || n,
             n % 7,
             now() - (${bulkSize + 1} - n) * interval '1 minute' - interval '1 hour',
             now() - (${bulkSize + 1} - n) * interval '1 minute'
      FROM generate_series(1, ${bulkSize}) AS n
      RETURNING id, status, context, lock_version, updated_at
    )
    INSERT INTO orchestrator.saga_timers (saga_id, due_at, awaiting, lock_version)
    SELECT id, updated_at + interval '10 minutes',
           jsonb_build_object('_tag', 'Reply', 'taskId', context ->> 'taskId', 'taskType', 'condenser.input'),
           lock_version
    FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')`
  yield* sql`ANALYZE orchestrator.saga_instances`
  yield* sql`ANALYZE orchestrator.saga_timers`
})

const testLayer = Layer.effectDiscard(loadBulk).pipe(
  Layer.provideMerge(superuserLayer),
  Layer.provideMerge(TestDatabase.layerStore())
)

// ---------------------------------------------------------------------------------------------------------------
// Plans

interface PlanNode {
  readonly "Node Type": string
  readonly "Relation Name"?: string | undefined
  readonly "Index Name"?: string | undefined
  readonly Plans?: ReadonlyArray<PlanNode> | undefined
}
const PlanNode: Schema.Codec<PlanNode> = Schema.Struct({
  "Node Type": Schema.String,
  "Relation Name": Schema.optional(Schema.String),
  "Index Name": Schema.optional(Schema.String),
  Plans: Schema.optional(Schema.Array(Schema.suspend((): Schema.Codec<PlanNode> => PlanNode)))
})
const ExplainRows = Schema.Array(Schema.Struct({ "QUERY PLAN": Schema.Array(Schema.Struct({ Plan: PlanNode })) }))

const flatten = (node: PlanNode): ReadonlyArray<PlanNode> => [node, ...(node.Plans ?? []).flatMap(flatten)]

type Compiled = readonly [sql: string, params: ReadonlyArray<unknown>]

/**
 * Runs `effect` and returns what it returned along with every statement it sent, compiled exactly as the driver
 * received it. With `dryRun`, each statement is swapped for one returning no rows, so nothing is changed.
 */
const capture = <A, E, R>(effect: Effect.Effect<A, E, R>, options: { readonly dryRun?: boolean } = {}) =>
  Effect.gen(function* () {
    const statements: Array<Compiled> = []
    const result = yield* effect.pipe(
      Effect.provideService(Statement.CurrentTransformer, (statement, sql) =>
        Effect.sync(() => {
          statements.push(statement.compile())
          return options.dryRun === true ? sql`SELECT 1 WHERE false` : statement
        })
      )
    )
    return { result, statements }
  })

/** The plan of one captured statement, as the runtime role gets it, with the same parameters. */
const explain = Effect.fnUntraced(function* ([text, params]: Compiled) {
  const sql = yield* PgClient.PgClient
  const rows = yield* sql.unsafe(`EXPLAIN (FORMAT JSON) ${text}`, params)
  const [row] = yield* Schema.decodeUnknownEffect(ExplainRows)(rows)
  assert.isDefined(row)
  const [plan] = row["QUERY PLAN"]
  assert.isDefined(plan)
  return flatten(plan.Plan)
})

const assertUsesIndex = (nodes: ReadonlyArray<PlanNode>, index: string) => {
  const summary = nodes.map((n) => `${n["Node Type"]}(${n["Index Name"] ?? n["Relation Name"] ?? ""})`).join(" > ")
  assert.isTrue(
    nodes.some((n) => n["Node Type"].includes("Index") && n["Index Name"] === index),
    `expected a scan of ${index}, plan: ${summary}`
  )
  assert.isFalse(
    nodes.some((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === "saga_instances"),
    `expected no sequential scan of saga_instances, plan: ${summary}`
  )
}

// ---------------------------------------------------------------------------------------------------------------
// Catalog

/** The name of the one index on `table` whose definition matches `definition` (pg_indexes' CREATE INDEX text). */
const indexMatching = Effect.fnUntraced(function* (table: string, definition: RegExp) {
  const sql = yield* Superuser
  const rows = yield* sql<{ indexname: string; indexdef: string }>`
    SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'orchestrator' AND tablename = ${table}`
  const matching = rows.filter((row) => definition.test(row.indexdef))
  assert.strictEqual(
    matching.length,
    1,
    `one index on ${table} matching ${definition}; indexes: ${rows.map((r) => r.indexdef).join("; ")}`
  )
  return matching[0]?.indexname ?? ""
})

const sqlState = (error: unknown): string | undefined => {
  if (!isSqlError(error)) return undefined
  const cause = error.reason.cause
  return typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string"
    ? cause.code
    : undefined
}

/** A saga row written directly; recent unless given old instants (recent rows are never "stuck" below). */
const insertRow = (sql: PgClient.PgClient, id: string, status: string, at?: string) =>
  sql`
    INSERT INTO orchestrator.saga_instances
      (id, saga_type, current_state, status, context, progress, correlation_id, created_at, updated_at)
    VALUES (${id}, 'SCHEMA_TEST', 'PREPARING', ${status}, '{}', '{}', ${id},
            ${at === undefined ? sql`now()` : at}, ${at === undefined ? sql`now()` : at})`

layer(testLayer, { excludeTestServices: true, timeout: "120 seconds" })("saga store schema", (it) => {
  it.effect(
    "saga_instances has the documented columns and the engine's progress, all NOT NULL, instants with time zone",
    () =>
      Effect.gen(function* () {
        const sql = yield* Superuser
        const columns = yield* sql<{ column_name: string; data_type: string; is_nullable: string }>`
        SELECT column_name, data_type, is_nullable FROM information_schema.columns
        WHERE table_schema = 'orchestrator' AND table_name = 'saga_instances' ORDER BY ordinal_position`
        assert.deepStrictEqual(
          columns.map((c) => [c.column_name, c.data_type, c.is_nullable]),
          [
            ["id", "uuid", "NO"],
            ["saga_type", "character varying", "NO"],
            ["current_state", "character varying", "NO"],
            ["status", "character varying", "NO"],
            ["context", "jsonb", "NO"],
            ["correlation_id", "character varying", "NO"],
            ["lock_version", "integer", "NO"],
            ["created_at", "timestamp with time zone", "NO"],
            ["updated_at", "timestamp with time zone", "NO"],
            ["progress", "jsonb", "NO"]
          ]
        )
      })
  )

  it.effect("the tables are keyed as designed and the side tables belong to their saga", () =>
    Effect.gen(function* () {
      const sql = yield* Superuser
      const tables = yield* sql<{ table_name: string }>`
        SELECT table_name FROM information_schema.tables WHERE table_schema = 'orchestrator' ORDER BY table_name`
      // "nothing else lives there"
      assert.deepStrictEqual(
        tables.map((t) => t.table_name),
        [
          "effect_sql_migrations",
          "saga_idempotency_keys",
          "saga_ignored_events",
          "saga_instances",
          "saga_outbox",
          "saga_timers",
          "saga_transitions"
        ]
      )
      const keys = yield* sql<{ table_name: string; constraint_type: string; columns: string; target: string | null }>`
        SELECT tc.table_name, tc.constraint_type,
               string_agg(kcu.column_name, ',' ORDER BY kcu.ordinal_position) AS columns,
               min(ccu.table_name) AS target
        FROM information_schema.table_constraints tc
        JOIN information_schema.key_column_usage kcu
          ON kcu.constraint_schema = tc.constraint_schema AND kcu.constraint_name = tc.constraint_name
        LEFT JOIN information_schema.constraint_column_usage ccu
          ON tc.constraint_type = 'FOREIGN KEY'
         AND ccu.constraint_schema = tc.constraint_schema AND ccu.constraint_name = tc.constraint_name
        WHERE tc.table_schema = 'orchestrator' AND tc.constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
          AND tc.table_name LIKE 'saga%'
        GROUP BY tc.table_name, tc.constraint_name, tc.constraint_type
        ORDER BY tc.table_name, tc.constraint_type DESC`
      assert.deepStrictEqual(
        keys.map((k) => [k.table_name, k.constraint_type, k.columns, k.target]),
        [
          ["saga_idempotency_keys", "PRIMARY KEY", "idempotency_key", null],
          ["saga_idempotency_keys", "FOREIGN KEY", "saga_id", "saga_instances"],
          ["saga_ignored_events", "PRIMARY KEY", "id", null],
          ["saga_ignored_events", "FOREIGN KEY", "saga_id", "saga_instances"],
          ["saga_instances", "PRIMARY KEY", "id", null],
          ["saga_outbox", "PRIMARY KEY", "id", null],
          ["saga_timers", "PRIMARY KEY", "saga_id", null],
          ["saga_timers", "FOREIGN KEY", "saga_id", "saga_instances"],
          ["saga_transitions", "PRIMARY KEY", "saga_id,lock_version", null],
          ["saga_transitions", "FOREIGN KEY", "saga_id", "saga_instances"]
        ]
      )
    })
  )

  it.effect("the status check admits the five statuses and rejects any other, even from a superuser", () =>
    Effect.gen(function* () {
      const sql = yield* Superuser
      for (const [i, status] of ["RUNNING", "COMPENSATING", "COMPLETED", "FAILED", "CANCELLED"].entries()) {
        yield* insertRow(sql, `00000000-0000-7000-9000-00000000000${i}`, status)
      }
      const error = yield* insertRow(sql, "00000000-0000-7000-9000-0000000000ff", "DONE").pipe(Effect.flip)
      assert.strictEqual(error.reason._tag, "ConstraintError")
      assert.strictEqual(sqlState(error), "23514") // check_violation
      assert.match(String(error.reason.cause), /saga_instances_status_check/)
      const stored = yield* sql<{ status: string }>`
        SELECT status FROM orchestrator.saga_instances WHERE saga_type = 'SCHEMA_TEST' ORDER BY id`
      assert.deepStrictEqual(
        stored.map((r) => r.status),
        ["RUNNING", "COMPENSATING", "COMPLETED", "FAILED", "CANCELLED"]
      )
      yield* sql`DELETE FROM orchestrator.saga_instances WHERE saga_type = 'SCHEMA_TEST'`
    })
  )

  it.effect(
    "every update stamps updated_at with the transaction time, whatever the writer sets, and keeps created_at",
    () =>
      Effect.gen(function* () {
        const sql = yield* Superuser
        const id = "00000000-0000-7000-9000-000000000100"
        yield* insertRow(sql, id, "COMPLETED", "2000-01-01T00:00:00Z")
        // Inserting keeps the given instants: the trigger is on UPDATE only.
        const inserted = yield* sql<{ old: boolean }>`
        SELECT updated_at = '2000-01-01T00:00:00Z' AS old FROM orchestrator.saga_instances WHERE id = ${id}`
        assert.deepStrictEqual(inserted, [{ old: true }])
        // A writer that does not mention updated_at, then one that tries to set an old value: both get now().
        const implicit = yield* sql<{ stamped: boolean }>`
        UPDATE orchestrator.saga_instances SET lock_version = lock_version + 1 WHERE id = ${id}
        RETURNING updated_at = now() AS stamped`
        assert.deepStrictEqual(implicit, [{ stamped: true }])
        const explicit = yield* sql<{ stamped: boolean; created_kept: boolean }>`
        UPDATE orchestrator.saga_instances SET current_state = 'NEXT', updated_at = '2000-01-02T00:00:00Z'
        WHERE id = ${id}
        RETURNING updated_at = now() AS stamped, created_at = '2000-01-01T00:00:00Z' AS created_kept`
        assert.deepStrictEqual(explicit, [{ stamped: true, created_kept: true }])
        yield* sql`DELETE FROM orchestrator.saga_instances WHERE id = ${id}`
      })
  )

  it.effect(
    "saga_instances is indexed on type, state, status, correlation id, context (GIN) and active sagas' age",
    () =>
      Effect.gen(function* () {
        for (const column of ["saga_type", "current_state", "status", "correlation_id"]) {
          yield* indexMatching("saga_instances", new RegExp(`USING btree \\(${column}\\)$`))
        }
        yield* indexMatching("saga_instances", /USING gin \(context( jsonb_path_ops)?\)$/)
        const active = yield* indexMatching("saga_instances", /USING btree \(updated_at\) WHERE .*RUNNING/)
        const sql = yield* Superuser
        const [predicate] = yield* sql<{ def: string }>`
        SELECT pg_get_expr(indpred, indrelid) AS def FROM pg_index
        WHERE indexrelid = ${`orchestrator.${active}`}::regclass`
        // Exactly the active statuses: terminal sagas, the bulk of the table, stay out of it.
        assert.match(predicate?.def ?? "", /RUNNING/)
        assert.match(predicate?.def ?? "", /COMPENSATING/)
        assert.notMatch(predicate?.def ?? "", /COMPLETED|FAILED|CANCELLED/)
        yield* indexMatching("saga_timers", /USING btree \(due_at\)$/)
        // Retention's: finished sagas by age, and idempotency keys by age.
        const finished = yield* indexMatching("saga_instances", /USING btree \(updated_at\) WHERE .*COMPLETED/)
        assert.strictEqual(finished, "saga_instances_finished_updated_at_idx")
        yield* indexMatching("saga_idempotency_keys", /USING btree \(created_at\)$/)
        yield* indexMatching("saga_transitions", /USING btree \(at\)$/)
      })
  )

  it.effect("on 100k sagas, a context filter is answered from the GIN index and finds exactly the one saga", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const gin = yield* indexMatching("saga_instances", /USING gin \(context/)
      const { result, statements } = yield* capture(store.find({ context: { inputRef: "in/123" } }))
      assert.deepStrictEqual(
        result.items.map((s) => [s.id, s.status, s.correlationId, s.context]),
        [[bulkId(123), "COMPLETED", "trace-123", { inputRef: "in/123", repo: "balance/plant-23", taskId: "task-123" }]]
      )
      assert.isNull(result.nextCursor)
      assert.strictEqual(statements.length, 1)
      const [find] = statements
      assert.isDefined(find)
      assert.match(find[0], /context @> \$1/)
      assertUsesIndex(yield* explain(find), gin)
    })
  )

  it.effect("on 100k sagas, a context filter combined with a status pages through every match", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      // RUNNING (n ≡ 20 mod 40) and plant-0 (n ≡ 0 mod 50): n ≡ 100 mod 200, 500 sagas.
      const first = yield* store.find({ status: "RUNNING", context: { repo: "balance/plant-0" }, limit: 300 })
      assert.isNotNull(first.nextCursor)
      const second = yield* store.find({
        status: "RUNNING",
        context: { repo: "balance/plant-0" },
        limit: 300,
        cursor: first.nextCursor ?? undefined
      })
      assert.isNull(second.nextCursor)
      const expected = Array.from({ length: 500 }, (_, i) => bulkId(bulkSize - 100 - 200 * i))
      assert.deepStrictEqual(
        [...first.items, ...second.items].map((s) => s.id),
        expected
      )
    })
  )

  it.effect("on 100k sagas, findStuck reads the partial index of active sagas, oldest first, with their timers", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const partial = yield* indexMatching("saga_instances", /USING btree \(updated_at\) WHERE .*RUNNING/)
      const { result, statements } = yield* capture(store.findStuck(Duration.days(1), { limit: 100 }))
      // The 100 oldest active sagas: n = 20, 40, …, 2000.
      assert.deepStrictEqual(
        result.map((s) => s.saga.id),
        Array.from({ length: 100 }, (_, i) => bulkId(20 * (i + 1)))
      )
      assert.deepStrictEqual(
        result.slice(0, 2).map((s) => [s.saga.status, s.saga.currentState, s.timer?.awaiting]),
        [
          ["RUNNING", "AWAITING_CONDENSER_INPUT", { _tag: "Reply", taskId: "task-20", taskType: "condenser.input" }],
          [
            "COMPENSATING",
            "AWAITING_CONDENSER_INPUT",
            { _tag: "Reply", taskId: "task-40", taskType: "condenser.input" }
          ]
        ]
      )
      for (const stuck of result) {
        assert.isNotNull(stuck.timer)
        assert.strictEqual(
          DateTime.toEpochMillis(stuck.timer?.dueAt ?? DateTime.makeUnsafe(0)),
          DateTime.toEpochMillis(stuck.saga.updatedAt) + 10 * 60_000
        )
      }
      const [findStuck] = statements
      assert.isDefined(findStuck)
      assertUsesIndex(yield* explain(findStuck), partial)

      // Everything active that has not moved for a day: n ≤ 100001 − 1440, n ≡ 0 mod 20. Sagas that moved within
      // the day, and terminal ones however old, are not stuck.
      const all = yield* store.findStuck(Duration.days(1), { limit: 10_000 })
      assert.strictEqual(all.length, Math.floor((bulkSize + 1 - 1440) / 20))
      assert.isTrue(all.every((s) => s.saga.status === "RUNNING" || s.saga.status === "COMPENSATING"))
    })
  )

  it.effect("on 100k sagas, claiming due timers reads the due_at index", () =>
    Effect.gen(function* () {
      const store = yield* SagaStore
      const dueAt = yield* indexMatching("saga_timers", /USING btree \(due_at\)$/)
      const now = yield* DateTime.now
      // Dry run: the claim would lease the timers; only its plan is wanted here.
      const { statements } = yield* capture(store.claimDue(now, 10), { dryRun: true })
      const [claim] = statements
      assert.isDefined(claim)
      const plan = yield* explain(claim)
      assertUsesIndex(plan, dueAt)
      assert.isFalse(plan.some((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === "saga_timers"))
    })
  )
})
