/**
 * The SagaStore contract: every layer (in memory, PostgreSQL) must pass exactly these tests.
 */
import { assert, layer } from "@effect/vitest"
import { DateTime, Duration, Effect, type Layer } from "effect"
import type { SagaId } from "../../src/domain/Saga.ts"
import { type CreateSaga, type SagaPage, SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"

const limit = 64 * 1024

/** Each test works on saga types of its own, so tests sharing one store never see each other's sagas. */
const uniqueType = () => `TEST_${crypto.randomUUID().slice(0, 8).toUpperCase()}`

const start = (overrides: Partial<CreateSaga> = {}) =>
  Effect.flatMap(SagaStore, (store) =>
    store.create({ sagaType: uniqueType(), state: "PREPARING", context: { repo: "balance/plant-7" }, ...overrides })
  )

const advance =
  (state: string, patch: Record<string, unknown> = {}, extra: Partial<StepOutcome> = {}) =>
  (saga: { readonly context: Record<string, unknown> }) =>
    Effect.succeed(
      StepOutcome.Advance({
        state,
        status: "RUNNING",
        context: { ...saga.context, ...patch },
        event: `To${state}`,
        ...extra
      } as never)
    )

const mesh = { exchange: "orchestrator.tasks", routingKey: "geometry.mesh", payload: { taskId: "t-1" } }
const at = (iso: string) => DateTime.makeUnsafe(iso)
const replyTimer = (iso: string) => ({
  dueAt: at(iso),
  awaiting: { _tag: "Reply" as const, taskId: "t-1", taskType: "geometry.mesh" }
})

/** Nothing about the saga changed: same version, same state, same history length. */
const assertUnchanged = Effect.fnUntraced(function* (id: SagaId, version: number, historyLength: number) {
  const store = yield* SagaStore
  const saga = yield* store.get(id)
  assert.strictEqual(saga.lockVersion, version)
  assert.strictEqual((yield* store.history(id)).length, historyLength)
})

export const sagaStoreContract = (name: string, storeLayer: Layer.Layer<SagaStore, unknown>) =>
  layer(storeLayer, { excludeTestServices: true, timeout: "60 seconds" })(name, (it) => {
    it.effect("creates a running saga at version 0 and records its start", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga, created } = yield* start({ context: { repo: "r", inputRef: "in/1" } })
        assert.isTrue(created)
        assert.strictEqual(saga.status, "RUNNING")
        assert.strictEqual(saga.currentState, "PREPARING")
        assert.strictEqual(saga.lockVersion, 0)
        assert.strictEqual(saga.correlationId, saga.id)
        assert.deepStrictEqual(saga.context, { repo: "r", inputRef: "in/1" })
        assert.deepStrictEqual(yield* store.get(saga.id), saga)
        const history = yield* store.history(saga.id)
        assert.deepStrictEqual(
          history.map((t) => [t.lockVersion, t.fromState, t.toState, t.status, t.event]),
          [[0, null, "PREPARING", "RUNNING", "SagaStarted"]]
        )
      })
    )

    it.effect("keeps a given correlation id", () =>
      Effect.gen(function* () {
        const { saga } = yield* start({ correlationId: "trace-42" })
        assert.strictEqual(saga.correlationId, "trace-42")
      })
    )

    it.effect("returns the same saga for the same idempotency key, writing nothing more", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const key = crypto.randomUUID()
        const sagaType = uniqueType()
        const first = yield* start({ sagaType, idempotencyKey: key, messages: [mesh] })
        const second = yield* start({ sagaType, idempotencyKey: key, messages: [mesh] })
        assert.isFalse(second.created)
        assert.strictEqual(second.saga.id, first.saga.id)
        assert.strictEqual((yield* store.find({ sagaType })).items.length, 1)
        assert.strictEqual((yield* store.history(first.saga.id)).length, 1)
        const published = yield* drainOutbox
        assert.strictEqual(published.filter((m) => m.sagaId === first.saga.id).length, 1)
      })
    )

    it.effect("starts one saga when creates with the same key race", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const key = crypto.randomUUID()
        const sagaType = uniqueType()
        const results = yield* Effect.all(
          Array.from({ length: 8 }, () => start({ sagaType, idempotencyKey: key })),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(new Set(results.map((r) => r.saga.id)).size, 1)
        assert.strictEqual(results.filter((r) => r.created).length, 1)
        assert.strictEqual((yield* store.find({ sagaType })).items.length, 1)
      })
    )

    it.effect("refuses an idempotency key already used for another saga type", () =>
      Effect.gen(function* () {
        const key = crypto.randomUUID()
        const first = yield* start({ idempotencyKey: key })
        const error = yield* Effect.flip(start({ idempotencyKey: key }))
        assert.strictEqual(error._tag, "IdempotencyConflict")
        if (error._tag === "IdempotencyConflict") assert.strictEqual(error.existingSagaId, first.saga.id)
      })
    )

    it.effect("refuses an oversized context on create and stores nothing", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const error = yield* Effect.flip(start({ sagaType, context: { blob: "x".repeat(limit) } }))
        assert.strictEqual(error._tag, "ContextTooLarge")
        if (error._tag === "ContextTooLarge") {
          assert.strictEqual(error.limit, limit)
          assert.isAbove(error.bytes, limit)
        }
        assert.strictEqual((yield* store.find({ sagaType })).items.length, 0)
      })
    )

    it.effect(
      "keeps the engine's progress beside the context: outside the size limit, replaced only when a step gives it",
      () =>
        Effect.gen(function* () {
          const store = yield* SagaStore
          // A context just under the limit, and progress that would take it over if it counted.
          const context = { blob: "x".repeat(limit - 20) }
          const progress = { version: 1, completed: ["a".repeat(1_000)] }
          const { saga } = yield* start({ context, progress })
          assert.deepStrictEqual(saga.context, context)
          assert.deepStrictEqual(saga.progress, progress)
          const kept = yield* store.transact(saga.id, advance("KEPT"))
          assert.deepStrictEqual(kept.progress, progress)
          const replaced = yield* store.transact(
            saga.id,
            advance("REPLACED", {}, { progress: { version: 1, step: 1 } })
          )
          assert.deepStrictEqual((yield* store.get(saga.id)).progress, { version: 1, step: 1 })
          assert.deepStrictEqual(replaced.context, context)
          const bad = yield* Effect.flip(store.transact(saga.id, advance("X", {}, { progress: [] as never })))
          assert.deepInclude(bad, { _tag: "InvalidSagaData", field: "progress" })
          assert.deepStrictEqual((yield* start()).saga.progress, {}, "a saga created without progress has none")
        })
    )

    it.effect.each([
      ["an array", [1, 2]],
      ["a string", "not an object"],
      ["null", null],
      ["a function value", { f: () => 1 }],
      ["an undefined value", { a: undefined }],
      ["a bigint", { n: 10n }],
      [
        "a cycle",
        (() => {
          const cyclic: Record<string, unknown> = {}
          cyclic.self = cyclic
          return cyclic
        })()
      ]
    ] as const)("refuses a malformed context (%s) and stores nothing", ([, context]) =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const error = yield* Effect.flip(start({ sagaType, context: context as never }))
        assert.strictEqual(error._tag, "InvalidSagaData")
        if (error._tag === "InvalidSagaData") assert.strictEqual(error.field, "context")
        assert.strictEqual((yield* store.find({ sagaType })).items.length, 0)
      })
    )

    it.effect("refuses an empty saga type or state", () =>
      Effect.gen(function* () {
        const typeError = yield* Effect.flip(start({ sagaType: "" }))
        assert.deepInclude(typeError, { _tag: "InvalidSagaData", field: "sagaType" })
        const stateError = yield* Effect.flip(start({ state: "" }))
        assert.deepInclude(stateError, { _tag: "InvalidSagaData", field: "state" })
      })
    )

    it.effect("reports an unknown or malformed id as SagaNotFound", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const id = crypto.randomUUID() as SagaId
        assert.deepInclude(yield* Effect.flip(store.get(id)), { _tag: "SagaNotFound", sagaId: id })
        assert.deepInclude(yield* Effect.flip(store.history(id)), { _tag: "SagaNotFound", sagaId: id })
        assert.deepInclude(yield* Effect.flip(store.transact(id, advance("X"))), { _tag: "SagaNotFound", sagaId: id })
        for (const malformed of ["not-a-uuid", "", "1; DROP TABLE x"] as Array<SagaId>) {
          assert.deepInclude(yield* Effect.flip(store.get(malformed)), { _tag: "SagaNotFound" })
          assert.deepInclude(yield* Effect.flip(store.history(malformed)), { _tag: "SagaNotFound" })
          assert.deepInclude(yield* Effect.flip(store.ignoredEvents(malformed)), { _tag: "SagaNotFound" })
          assert.deepInclude(yield* Effect.flip(store.transact(malformed, advance("X"))), { _tag: "SagaNotFound" })
        }
      })
    )

    it.effect("advances a saga in one versioned write with history, outbox and timer", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        yield* drainOutbox
        const next = yield* store.transact(
          saga.id,
          advance(
            "MESHING",
            { branch: "calc/1" },
            {
              event: "BranchPrepared",
              detail: { taskId: "t-0" },
              messages: [mesh],
              timer: replyTimer("2030-01-01T00:00:00Z")
            }
          )
        )
        assert.strictEqual(next.lockVersion, 1)
        assert.strictEqual(next.currentState, "MESHING")
        assert.deepStrictEqual(next.context, { repo: "balance/plant-7", branch: "calc/1" })
        assert.deepStrictEqual(yield* store.get(saga.id), next)
        const history = yield* store.history(saga.id)
        assert.deepStrictEqual(
          history.map((t) => [t.lockVersion, t.fromState, t.toState, t.event, t.detail]),
          [
            [0, null, "PREPARING", "SagaStarted", null],
            [1, "PREPARING", "MESHING", "BranchPrepared", { taskId: "t-0" }]
          ]
        )
        const published = yield* drainOutbox
        assert.deepStrictEqual(
          published.filter((m) => m.sagaId === saga.id).map((m) => [m.routingKey, m.payload, m.correlationId]),
          [["geometry.mesh", { taskId: "t-1" }, saga.correlationId]]
        )
        const stuck = (yield* store.findStuck(Duration.zero, { limit: 10_000 })).find((s) => s.saga.id === saga.id)
        assert.deepStrictEqual(stuck?.timer?.awaiting, { _tag: "Reply", taskId: "t-1", taskType: "geometry.mesh" })
      })
    )

    it.effect("writes nothing when the step decides to stay", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        const same = yield* store.transact(saga.id, () => Effect.succeed(StepOutcome.Stay({})))
        assert.strictEqual(same.lockVersion, 0)
        yield* assertUnchanged(saga.id, 0, 1)
      })
    )

    it.effect("records an ignored event without changing the saga", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        const same = yield* store.transact(saga.id, () =>
          Effect.succeed(
            StepOutcome.Stay({ ignored: { event: "ReplyIgnored", detail: { taskId: "t-9", why: "duplicate" } } })
          )
        )
        assert.deepStrictEqual(same, saga)
        yield* assertUnchanged(saga.id, 0, 1)
        const ignored = yield* store.ignoredEvents(saga.id)
        assert.deepStrictEqual(
          ignored.map((e) => [e.lockVersion, e.event, e.detail]),
          [[0, "ReplyIgnored", { taskId: "t-9", why: "duplicate" }]]
        )
        const unknown = crypto.randomUUID() as SagaId
        assert.deepInclude(yield* Effect.flip(store.ignoredEvents(unknown)), { _tag: "SagaNotFound" })
      })
    )

    it.effect("fails a write at a stale version with VersionConflict and changes nothing", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        yield* store.transact(saga.id, advance("MESHING"))
        let stepRan = false
        const error = yield* Effect.flip(
          store.transact(saga.id, (s) => Effect.sync(() => (stepRan = true)).pipe(Effect.andThen(advance("LOST")(s))), {
            expectedVersion: 0
          })
        )
        assert.deepInclude(error, { _tag: "VersionConflict", expected: 0, actual: 1 })
        assert.isFalse(stepRan)
        yield* assertUnchanged(saga.id, 1, 2)
        assert.strictEqual((yield* store.get(saga.id)).currentState, "MESHING")
      })
    )

    it.effect("rolls everything back when the step fails", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        const error = yield* Effect.flip(store.transact(saga.id, () => Effect.fail("solver exploded" as const)))
        assert.strictEqual(error, "solver exploded")
        yield* assertUnchanged(saga.id, 0, 1)
      })
    )

    it.effect("refuses an invalid status, state or context from a step and changes nothing", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start()
        const badStatus = yield* Effect.flip(store.transact(saga.id, advance("X", {}, { status: "DONE" as never })))
        assert.deepInclude(badStatus, { _tag: "InvalidSagaData", field: "status" })
        const badState = yield* Effect.flip(store.transact(saga.id, advance("")))
        assert.deepInclude(badState, { _tag: "InvalidSagaData", field: "state" })
        const tooLarge = yield* Effect.flip(store.transact(saga.id, advance("X", { blob: "é".repeat(limit / 2) })))
        assert.deepInclude(tooLarge, { _tag: "ContextTooLarge", limit })
        const notJson = yield* Effect.flip(store.transact(saga.id, advance("X", { when: new Date(0) })))
        assert.deepInclude(notJson, { _tag: "InvalidSagaData", field: "context" })
        yield* assertUnchanged(saga.id, 0, 1)
      })
    )

    it.effect("serialises concurrent steps on one saga: no lost update, consecutive versions", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start({ context: { n: 0 } })
        const increment = store.transact(saga.id, (s) =>
          Effect.succeed(
            StepOutcome.Advance({
              state: "COUNTING",
              status: "RUNNING",
              context: { n: (s.context.n as number) + 1 },
              event: "Incremented"
            })
          )
        )
        yield* Effect.all(
          Array.from({ length: 40 }, () => increment),
          { concurrency: 8 }
        )
        const final = yield* store.get(saga.id)
        assert.strictEqual(final.lockVersion, 40)
        assert.deepStrictEqual(final.context, { n: 40 })
        const versions = (yield* store.history(saga.id)).map((t) => t.lockVersion)
        assert.deepStrictEqual(
          versions,
          Array.from({ length: 41 }, (_, i) => i)
        )
      })
    )

    it.effect("finds sagas by status, type, state, correlation id and context, newest first", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const a = (yield* start({ sagaType, correlationId: "corr-a", context: { inputRef: "in/a", tags: ["x", "y"] } }))
          .saga
        const b = (yield* start({ sagaType, context: { inputRef: "in/b", nested: { k: 1 } } })).saga
        const c = (yield* start({ sagaType, context: { inputRef: "in/c" } })).saga
        yield* store.transact(b.id, advance("MESHING"))
        yield* store.transact(c.id, (s) =>
          Effect.succeed(
            StepOutcome.Advance({ state: "DONE", status: "COMPLETED", context: s.context, event: "Completed" })
          )
        )
        const ids = (filter: Parameters<SagaStore["Service"]["find"]>[0]) =>
          store.find({ sagaType, ...filter }).pipe(Effect.map((page) => page.items.map((s) => s.id)))
        assert.deepStrictEqual(yield* ids({}), [c.id, b.id, a.id])
        assert.deepStrictEqual(yield* ids({ status: "COMPLETED" }), [c.id])
        assert.deepStrictEqual(yield* ids({ status: "RUNNING" }), [b.id, a.id])
        assert.deepStrictEqual(yield* ids({ state: "MESHING" }), [b.id])
        assert.deepStrictEqual(yield* ids({ correlationId: "corr-a" }), [a.id])
        assert.deepStrictEqual(yield* ids({ context: { inputRef: "in/b" } }), [b.id])
        assert.deepStrictEqual(yield* ids({ context: { nested: { k: 1 } } }), [b.id])
        assert.deepStrictEqual(yield* ids({ context: { tags: ["y"] } }), [a.id])
        assert.deepStrictEqual(yield* ids({ context: { inputRef: "in/none" } }), [])
        assert.deepStrictEqual(yield* ids({ status: "RUNNING", state: "PREPARING", context: { inputRef: "in/a" } }), [
          a.id
        ])
      })
    )

    it.effect("pages through results with a cursor, each saga exactly once", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const created = yield* Effect.forEach(Array.from({ length: 7 }), () => start({ sagaType }))
        const seen: Array<string> = []
        let cursor: string | undefined
        let pages = 0
        do {
          const page = yield* store.find({ sagaType, limit: 3, cursor })
          seen.push(...page.items.map((s) => s.id))
          cursor = page.nextCursor ?? undefined
          pages += 1
        } while (cursor !== undefined)
        assert.strictEqual(pages, 3)
        assert.deepStrictEqual(seen, created.map((c) => c.saga.id).reverse())
      })
    )

    it.effect("refuses a bad page size or cursor", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        for (const limit of [0, 501, 2.5]) {
          assert.deepInclude(yield* Effect.flip(store.find({ limit })), { _tag: "InvalidSagaData", field: "limit" })
        }
        assert.deepInclude(yield* Effect.flip(store.find({ cursor: "bm90LWEtY3Vyc29y" })), {
          _tag: "InvalidSagaData",
          field: "cursor"
        })
        assert.deepInclude(yield* Effect.flip(store.find({ status: "DONE" as never })), {
          _tag: "InvalidSagaData",
          field: "status"
        })
      })
    )

    it.effect("reports active sagas without progress, with what they wait for", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const waiting = (yield* start({ timer: replyTimer("2030-01-01T00:00:00Z") })).saga
        const bare = (yield* start()).saga
        const done = (yield* start()).saga
        yield* store.transact(done.id, (s) =>
          Effect.succeed(
            StepOutcome.Advance({ state: "DONE", status: "COMPLETED", context: s.context, event: "Completed" })
          )
        )
        const stuck = yield* store.findStuck(Duration.zero, { limit: 10_000 })
        const byId = new Map(stuck.map((s) => [s.saga.id, s]))
        assert.deepStrictEqual(byId.get(waiting.id)?.timer?.awaiting, {
          _tag: "Reply",
          taskId: "t-1",
          taskType: "geometry.mesh"
        })
        assert.strictEqual(byId.get(bare.id)?.timer, null)
        assert.isFalse(byId.has(done.id))
        const recent = yield* store.findStuck(Duration.hours(1), { limit: 10_000 })
        assert.isFalse(recent.some((s) => [waiting.id, bare.id].includes(s.saga.id)))
      })
    )

    it.effect("counts active sagas by type, status and state, and the stuck ones as findStuck reports them", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        yield* Effect.forEach([1, 2], () => start({ sagaType, state: "MESHING" }))
        yield* start({ sagaType, state: "PREPARING" })
        const undoing = (yield* start({ sagaType, state: "PREPARING" })).saga
        yield* store.transact(undoing.id, (s) =>
          Effect.succeed(
            StepOutcome.Advance({ state: "DELETING_BRANCH", status: "COMPENSATING", context: s.context, event: "X" })
          )
        )
        const done = (yield* start({ sagaType, state: "MESHING" })).saga
        yield* store.transact(done.id, (s) =>
          Effect.succeed(StepOutcome.Advance({ state: "DONE", status: "COMPLETED", context: s.context, event: "X" }))
        )
        const counts = (stuckAfter: Duration.Duration) =>
          store.countActive(stuckAfter).pipe(
            Effect.map((all) =>
              all
                .filter((c) => c.sagaType === sagaType)
                .map((c) => [c.status, c.state, c.count, c.stuck] as const)
                .sort()
            )
          )
        // Nothing of these has been waiting for an hour; with a zero threshold every active one is stuck.
        assert.deepStrictEqual(yield* counts(Duration.hours(1)), [
          ["COMPENSATING", "DELETING_BRANCH", 1, 0],
          ["RUNNING", "MESHING", 2, 0],
          ["RUNNING", "PREPARING", 1, 0]
        ])
        assert.deepStrictEqual(yield* counts(Duration.zero), [
          ["COMPENSATING", "DELETING_BRANCH", 1, 1],
          ["RUNNING", "MESHING", 2, 2],
          ["RUNNING", "PREPARING", 1, 1]
        ])
        const stuck = (yield* store.findStuck(Duration.zero, { limit: 10_000 })).filter(
          (s) => s.saga.sagaType === sagaType
        )
        assert.strictEqual(stuck.length, 4)
        assert.isFalse(stuck.some((s) => s.saga.id === done.id))
      })
    )

    it.effect("claims a due timer once until its lease runs out", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start({ timer: replyTimer("2001-01-01T00:00:00Z") })
        const notYet = yield* store.claimDue(at("2000-12-31T23:59:59Z"), 1000)
        assert.isFalse(notYet.some((t) => t.sagaId === saga.id))
        const now = at("2001-01-01T00:00:01Z")
        const claims = (yield* store.claimDue(now, 1000)).filter((t) => t.sagaId === saga.id)
        assert.strictEqual(claims.length, 1)
        assert.deepInclude(claims[0], { lockVersion: 0 })
        assert.strictEqual(DateTime.formatIso(claims[0]!.dueAt), "2001-01-01T00:00:00.000Z")
        const again = yield* store.claimDue(now, 1000)
        assert.isFalse(again.some((t) => t.sagaId === saga.id))
        const afterLease = yield* store.claimDue(DateTime.add(now, { minutes: 5 }), 1000)
        assert.isTrue(afterLease.some((t) => t.sagaId === saga.id))
      })
    )

    it.effect("never hands the same due timer to two concurrent claimers", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaIds = new Set<string>()
        for (let i = 0; i < 20; i++) sagaIds.add((yield* start({ timer: replyTimer("2002-01-01T00:00:00Z") })).saga.id)
        const now = at("2002-01-01T00:00:01Z")
        const batches = yield* Effect.all(
          Array.from({ length: 6 }, () => store.claimDue(now, 5)),
          { concurrency: "unbounded" }
        )
        const claimed = batches
          .flat()
          .filter((t) => sagaIds.has(t.sagaId))
          .map((t) => t.sagaId)
        assert.strictEqual(new Set(claimed).size, claimed.length)
      })
    )

    it.effect("refuses to fire a claimed timer once the saga has moved on", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start({ timer: replyTimer("2003-01-01T00:00:00Z") })
        const [claim] = (yield* store.claimDue(at("2003-01-01T00:00:01Z"), 1000)).filter((t) => t.sagaId === saga.id)
        yield* store.transact(saga.id, advance("MESHING"))
        const error = yield* Effect.flip(
          store.transact(saga.id, advance("TIMED_OUT"), { expectedVersion: claim!.lockVersion })
        )
        assert.deepInclude(error, { _tag: "VersionConflict", expected: 0, actual: 1 })
        assert.strictEqual((yield* store.get(saga.id)).currentState, "MESHING")
      })
    )

    it.effect("records a heartbeat for the awaited task only: progress merged, timer moved, no new version", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const { saga } = yield* start({ progress: { step: 1 }, timer: replyTimer("2004-01-01T00:00:00Z") })
        const heartbeat = { progress: { heartbeat: { percent: 40 } }, dueAt: at("2004-01-01T00:10:00Z") }
        assert.isTrue(yield* store.recordHeartbeat(saga.id, "t-1", heartbeat))
        const after = yield* store.get(saga.id)
        assert.deepStrictEqual(after.progress, { step: 1, heartbeat: { percent: 40 } })
        assert.strictEqual(after.lockVersion, 0)
        yield* assertUnchanged(saga.id, 0, 1)
        const early = yield* store.claimDue(at("2004-01-01T00:09:59Z"), 1000)
        assert.isFalse(
          early.some((t) => t.sagaId === saga.id),
          "the timer moved to the heartbeat's due time"
        )
        const due = (yield* store.claimDue(at("2004-01-01T00:10:00Z"), 1000)).filter((t) => t.sagaId === saga.id)
        assert.strictEqual(due.length, 1)

        assert.isFalse(yield* store.recordHeartbeat(saga.id, "t-other", heartbeat), "not the awaited task")
        const next = replyTimer("2030-01-01T00:00:00Z")
        const retried = { ...next, awaiting: { ...next.awaiting, taskId: "t-2" } }
        yield* store.transact(saga.id, advance("MESHING", {}, { timer: retried }))
        assert.isFalse(yield* store.recordHeartbeat(saga.id, "t-1", heartbeat), "an earlier attempt's task")
        assert.isTrue(yield* store.recordHeartbeat(saga.id, "t-2", heartbeat))
        assert.isFalse(yield* store.recordHeartbeat("0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192" as SagaId, "t-1", heartbeat))
        assert.isFalse(yield* store.recordHeartbeat("not-a-uuid" as SagaId, "t-1", heartbeat))
      })
    )

    it.effect("refuses what PostgreSQL cannot store as bad data, with its path, and changes nothing", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const nul = yield* Effect.flip(start({ sagaType, context: { repo: "a\u0000b" } }))
        assert.deepInclude(nul, { _tag: "InvalidSagaData", field: "context" })
        assert.include(nul._tag === "InvalidSagaData" ? nul.reason : "", "U+0000")
        const key = yield* Effect.flip(start({ sagaType, idempotencyKey: "k\ud800" }))
        assert.deepInclude(key, { _tag: "InvalidSagaData", field: "idempotencyKey" })
        assert.strictEqual((yield* store.find({ sagaType })).items.length, 0)

        const { saga } = yield* start()
        const surrogate = yield* Effect.flip(
          store.transact(saga.id, advance("X", {}, { progress: { reason: "\udc00" } }))
        )
        assert.deepInclude(surrogate, { _tag: "InvalidSagaData", field: "progress" })
        const deep = yield* Effect.flip(
          store.transact(saga.id, advance("X", { nested: JSON.parse(`${"[".repeat(100)}${"]".repeat(100)}`) }))
        )
        assert.deepInclude(deep, { _tag: "InvalidSagaData", field: "context" })
        yield* assertUnchanged(saga.id, 0, 1)
        const filter = yield* Effect.flip(store.find({ context: { repo: "\ud800" } }))
        assert.deepInclude(filter, { _tag: "InvalidSagaData", field: "context" })
      })
    )

    it.effect("ends a page of large contexts early at its byte budget, with a cursor that pages through the rest", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        const sagaType = uniqueType()
        const ids = new Set<string>()
        for (let n = 0; n < 40; n++) {
          ids.add((yield* start({ sagaType, context: { n, blob: "b".repeat(60_000) } })).saga.id)
        }
        const first = yield* store.find({ sagaType, limit: 500 })
        // 2 MiB of 60 kB contexts: the page stops after 35, well short of the limit.
        assert.isAbove(first.items.length, 30)
        assert.isBelow(first.items.length, 40)
        assert.isNotNull(first.nextCursor)
        const seen = first.items.map((saga) => saga.id)
        let cursor: string | null = first.nextCursor
        while (cursor !== null) {
          const page: SagaPage = yield* store.find({ sagaType, limit: 500, cursor })
          seen.push(...page.items.map((saga) => saga.id))
          cursor = page.nextCursor
        }
        assert.strictEqual(seen.length, 40)
        assert.deepStrictEqual(new Set(seen), ids)
      })
    )

    it.effect("summarises sagas by status and the outbox backlog", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        yield* drainOutbox
        const before = yield* store.summary
        const { saga } = yield* start({ messages: [mesh, mesh] })
        yield* start()
        yield* store.transact(saga.id, (s) =>
          Effect.succeed(StepOutcome.Advance({ state: "DONE", status: "FAILED", context: s.context, event: "Failed" }))
        )
        const after = yield* store.summary
        assert.strictEqual(after.byStatus.RUNNING - before.byStatus.RUNNING, 1)
        assert.strictEqual(after.byStatus.FAILED - before.byStatus.FAILED, 1)
        assert.strictEqual(after.byStatus.COMPLETED, before.byStatus.COMPLETED)
        assert.strictEqual(after.outboxPending, 2)
      })
    )

    it.effect("publishes committed outbox messages oldest first and deletes what was published", () =>
      Effect.gen(function* () {
        const store = yield* SagaStore
        yield* drainOutbox
        const { saga } = yield* start({ messages: [mesh] })
        yield* store.transact(
          saga.id,
          advance("B", {}, { messages: [{ ...mesh, routingKey: "solver.balance", headers: { a: "1" } }] })
        )
        const failed = yield* Effect.flip(store.publishOutbox(10, () => Effect.fail("broker down" as const)))
        assert.strictEqual(failed, "broker down")
        const first = yield* collect(store.publishOutbox(1, publishedInto))
        const rest = yield* collect(store.publishOutbox(10, publishedInto))
        assert.deepStrictEqual(
          [...first, ...rest].map((m) => [m.routingKey, m.headers]),
          [
            ["geometry.mesh", {}],
            ["solver.balance", { a: "1" }]
          ]
        )
        assert.strictEqual(new Set([...first, ...rest].map((m) => m.messageId)).size, 2)
        assert.strictEqual(yield* store.publishOutbox(10, () => Effect.void), 0)
      })
    )
  })

type Pending = Parameters<Parameters<SagaStore["Service"]["publishOutbox"]>[1]>[0][number]

let sink: Array<Pending> = []
const publishedInto = (messages: ReadonlyArray<Pending>) => Effect.sync(() => void sink.push(...messages))
const collect = <E, R>(publish: Effect.Effect<number, E, R>) =>
  Effect.suspend(() => {
    sink = []
    return publish.pipe(Effect.map(() => sink))
  })

/** Publishes (and so deletes) everything in the outbox; returns what was there. */
const drainOutbox = Effect.gen(function* () {
  const store = yield* SagaStore
  const all: Array<Pending> = []
  while ((yield* store.publishOutbox(500, (messages) => Effect.sync(() => void all.push(...messages)))) > 0) {}
  return all
})
