import { assert, layer } from "@effect/vitest"
import { DateTime, Effect, Schema } from "effect"
import { MemoryBroker } from "../../src/broker/MemoryBroker.ts"
import * as R from "../../src/http/Api/Representations.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as H from "./harness.ts"
import { answer, call, decode, input, logged, problem, snapshot, toCondenserInput, token } from "./harness.ts"

const start = (body: Record<string, unknown>) =>
  call("POST", "/v1/sagas", { body }).pipe(Effect.map((reply) => ({ reply, saga: decode(reply, R.Saga) })))

const sagaKeys = [
  "context",
  "correlationId",
  "createdAt",
  "currentState",
  "id",
  "lockVersion",
  "progress",
  "sagaType",
  "status"
]

layer(H.layer, { excludeTestServices: true, timeout: "60 seconds" })("HTTP API v1", (it) => {
  it.effect("serves probes, metrics, the OpenAPI document and the docs page without a token", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(JSON.parse((yield* call("GET", "/healthz", { token: null })).text), { status: "ok" })
      const ready = yield* call("GET", "/readyz", { token: null })
      assert.strictEqual(ready.status, 200)
      assert.deepStrictEqual(decode(ready, R.Readiness).checks, {
        database: { ok: true },
        schema: { ok: true },
        broker: { ok: true }
      })
      const metrics = yield* call("GET", "/metrics", { token: null })
      assert.strictEqual(metrics.status, 200)
      assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/)
      assert.strictEqual((yield* call("GET", "/openapi.json", { token: null })).status, 200)
      const docs = yield* call("GET", "/docs", { token: null })
      assert.strictEqual(docs.status, 200)
      assert.match(docs.headers.get("content-type") ?? "", /^text\/html/)
    })
  )

  it.effect("readiness fails with 503 and says which check failed while the broker is disconnected", () =>
    Effect.gen(function* () {
      const broker = yield* MemoryBroker
      yield* broker.setAvailable(false)
      const down = yield* call("GET", "/readyz", { token: null }).pipe(Effect.ensuring(broker.setAvailable(true)))
      assert.strictEqual(down.status, 503)
      const body = problem(down)
      assert.strictEqual(body.type, "urn:saga-orchestrator:problem:not-ready")
      assert.deepInclude(body.checks as object, { database: { ok: true }, schema: { ok: true } })
      assert.isFalse((body.checks as { broker: { ok: boolean } }).broker.ok)
      assert.strictEqual((yield* call("GET", "/readyz", { token: null })).status, 200)
    })
  )

  it.effect("refuses /v1 requests without a token or with a wrong one: 401 problem, nothing logged of the token", () =>
    Effect.gen(function* () {
      const before = yield* snapshot
      const wrong = `${token}x`
      for (const bearer of [null, wrong, ""]) {
        for (const [method, path] of [
          ["GET", "/v1/sagas"],
          ["GET", "/v1/sagas/stuck"],
          ["GET", `/v1/sagas/${crypto.randomUUID()}`],
          ["POST", "/v1/sagas"]
        ] as const) {
          const body = method === "POST" ? { type: "BALANCE_CALCULATION", input: input() } : undefined
          const reply = yield* call(method, path, { token: bearer, body })
          assert.strictEqual(reply.status, 401, `${method} ${path}`)
          assert.strictEqual(problem(reply).type, "urn:saga-orchestrator:problem:unauthorized")
          assert.strictEqual(reply.headers.get("www-authenticate"), "Bearer")
        }
      }
      assert.strictEqual(yield* snapshot, before)
      assert.isNotEmpty(logged, "the server's log is captured")
      assert.isFalse(
        logged.some((line) => line.includes(token)),
        "a token was logged"
      )
    })
  )

  it.effect(
    "starts a saga: 201 with the instance, its ETag and Location; the same idempotency key gives it again, 200",
    () =>
      Effect.gen(function* () {
        const body = { type: "BALANCE_CALCULATION", input: input(), correlationId: "trace-1", idempotencyKey: "key-1" }
        const first = yield* start(body)
        assert.strictEqual(first.reply.status, 201)
        assert.deepStrictEqual(Object.keys(JSON.parse(first.reply.text)).sort(), [...sagaKeys, "updatedAt"].sort())
        assert.strictEqual(first.saga.sagaType, "BALANCE_CALCULATION")
        assert.strictEqual(first.saga.currentState, "PREPARING_BRANCH")
        assert.strictEqual(first.saga.status, "RUNNING")
        assert.strictEqual(first.saga.correlationId, "trace-1")
        assert.strictEqual(first.saga.lockVersion, 0)
        assert.deepInclude(first.saga.context, body.input)
        assert.strictEqual(first.reply.headers.get("etag"), '"0"')
        assert.strictEqual(first.reply.headers.get("location"), `/v1/sagas/${first.saga.id}`)
        const raw = Schema.decodeUnknownSync(Schema.Struct({ createdAt: Schema.String }))(JSON.parse(first.reply.text))
        assert.match(raw.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, "RFC 3339, UTC")

        const before = yield* snapshot
        const again = yield* start(body)
        assert.strictEqual(again.reply.status, 200)
        assert.strictEqual(again.saga.id, first.saga.id)
        assert.strictEqual(again.reply.headers.get("etag"), '"0"')
        assert.strictEqual(yield* snapshot, before, "a repeated start changes nothing")

        const otherType = yield* call("POST", "/v1/sagas", { body: { ...body, type: "NO_SUCH_TYPE" } })
        assert.strictEqual(otherType.status, 400)
        const defaulted = yield* start({ type: "BALANCE_CALCULATION", input: input() })
        assert.strictEqual(defaulted.saga.correlationId, defaulted.saga.id)
      })
  )

  it.effect("shows the engine's progress beside a context that holds only the saga's own variables", () =>
    Effect.gen(function* () {
      const body = input()
      const { saga } = yield* start({ type: "BALANCE_CALCULATION", input: body })
      assert.deepStrictEqual(saga.context, body)
      assert.deepInclude(saga.progress, {
        definitionVersion: 1,
        step: 0,
        attempt: 1,
        completed: [],
        compensation: null
      })
      assert.deepInclude(saga.progress?.awaiting, { kind: "reply", taskType: "gitlab.prepare_branch" })
      const deadline = saga.progress?.deadline
      assert.isDefined(deadline ?? undefined)
      // The first step's reply timeout, 2 minutes, from the engine's clock (the creation instant is the database's).
      assert.closeTo(
        DateTime.toEpochMillis(deadline ?? saga.createdAt) - DateTime.toEpochMillis(saga.createdAt),
        120_000,
        1_000
      )

      yield* toCondenserInput(saga.id)
      const shown = decode(yield* call("GET", `/v1/sagas/${saga.id}`), R.SagaWithHistory)
      assert.deepStrictEqual(shown.context, {
        ...body,
        branch: "calc/x",
        branchCommitSha: "abc123",
        meshRef: "meshes/x.msh"
      })
      assert.deepInclude(shown.progress, {
        step: 2,
        attempt: 0,
        awaiting: { kind: "signal", name: "condenser_input" },
        completed: ["prepareBranch", "meshGeometry"]
      })
      const listed = decode(yield* call("GET", `/v1/sagas?correlationId=${saga.id}`), R.SagaPage)
      assert.deepStrictEqual(listed.items[0]?.progress, shown.progress)

      // The store keeps the engine's bookkeeping beside the context, never in it (the column layout on PostgreSQL
      // is the store's own test).
      const stored = yield* SagaStore.use((store) => store.get(saga.id))
      assert.notProperty(stored.context, "$saga", "the context holds no engine bookkeeping")
      assert.deepInclude(stored.progress, { version: 1, step: 2, attempt: 0 })
    })
  )

  it.effect("shows a saga with its history in version order and its lock version as ETag", () =>
    Effect.gen(function* () {
      const { saga } = yield* start({ type: "BALANCE_CALCULATION", input: input() })
      yield* toCondenserInput(saga.id)
      const reply = yield* call("GET", `/v1/sagas/${saga.id}`)
      assert.strictEqual(reply.status, 200)
      const shown = decode(reply, R.SagaWithHistory)
      assert.strictEqual(shown.currentState, "AWAITING_CONDENSER_INPUT")
      assert.strictEqual(reply.headers.get("etag"), `"${shown.lockVersion}"`)
      assert.deepStrictEqual(
        shown.history.map((entry) => [entry.lockVersion, entry.fromState, entry.toState, entry.status, entry.event]),
        [
          [0, null, "PREPARING_BRANCH", "RUNNING", "SagaStarted"],
          [1, "PREPARING_BRANCH", "MESHING_GEOMETRY", "RUNNING", "StepSucceeded"],
          [2, "MESHING_GEOMETRY", "AWAITING_CONDENSER_INPUT", "RUNNING", "StepSucceeded"]
        ]
      )
      assert.deepStrictEqual(Object.keys(JSON.parse(reply.text).history[0]).sort(), [
        "at",
        "event",
        "fromState",
        "lockVersion",
        "status",
        "toState"
      ])
    })
  )

  it.effect("lists sagas by status, type, state, correlation id and context, newest first, page by page", () =>
    Effect.gen(function* () {
      const batch = `batch-${crypto.randomUUID()}`
      const started = []
      for (let i = 0; i < 5; i++) {
        started.push((yield* start({ type: "BALANCE_CALCULATION", input: input({ requestedBy: batch }) })).saga)
      }
      const [a, b, c] = started
      if (a === undefined || b === undefined || c === undefined) return assert.fail("sagas not started")
      yield* toCondenserInput(b.id)
      const cancelled = yield* call("POST", `/v1/sagas/${c.id}/cancel`, { headers: { "if-match": '"0"' } })
      assert.strictEqual(cancelled.status, 200)

      const ids = (query: string) =>
        call("GET", `/v1/sagas?${query}`).pipe(Effect.map((reply) => decode(reply, R.SagaPage).items.map((s) => s.id)))
      const mine = `context=${encodeURIComponent(JSON.stringify({ requestedBy: batch }))}`

      assert.deepStrictEqual(yield* ids(mine), started.map((s) => s.id).reverse())
      assert.deepStrictEqual(yield* ids(`${mine}&status=COMPENSATING`), [c.id])
      assert.deepStrictEqual(yield* ids(`${mine}&state=AWAITING_CONDENSER_INPUT`), [b.id])
      assert.deepStrictEqual(
        yield* ids(`${mine}&type=BALANCE_CALCULATION&status=RUNNING`).pipe(Effect.map((x) => x.length)),
        4
      )
      assert.deepStrictEqual(yield* ids(`${mine}&type=OTHER_TYPE`), [])
      assert.deepStrictEqual(yield* ids(`correlationId=${a.correlationId}`), [a.id])
      assert.deepStrictEqual(
        yield* ids(`context=${encodeURIComponent(JSON.stringify({ inputRef: a.context.inputRef }))}`),
        [a.id]
      )

      const pages: Array<Array<string>> = []
      let cursor: string | null = null
      do {
        const reply: H.Reply = yield* call("GET", `/v1/sagas?${mine}&limit=2${cursor ? `&cursor=${cursor}` : ""}`)
        const page = decode(reply, R.SagaPage)
        pages.push(page.items.map((s) => s.id))
        cursor = page.nextCursor
      } while (cursor !== null && pages.length < 10)
      assert.deepStrictEqual(
        pages.map((page) => page.length),
        [2, 2, 1]
      )
      assert.deepStrictEqual(pages.flat(), started.map((s) => s.id).reverse())
    })
  )

  it.effect("lists stuck sagas with what each waits for", () =>
    Effect.gen(function* () {
      const waiting = (yield* start({ type: "BALANCE_CALCULATION", input: input() })).saga
      const signalled = (yield* start({ type: "BALANCE_CALCULATION", input: input() })).saga
      yield* toCondenserInput(signalled.id)
      const reply = yield* call("GET", "/v1/sagas/stuck?olderThan=PT0S&limit=500")
      assert.strictEqual(reply.status, 200)
      const stuck = decode(reply, R.StuckSagas)
      assert.strictEqual(JSON.parse(reply.text).olderThan, "PT0S")
      const of = (id: string) => stuck.items.find((item) => item.saga.id === id)?.waitingFor
      assert.deepInclude(of(waiting.id) as object, { kind: "reply", taskType: "gitlab.prepare_branch" })
      assert.deepInclude(of(signalled.id) as object, { kind: "signal", name: "condenser_input" })
      const recent = decode(yield* call("GET", "/v1/sagas/stuck?olderThan=PT1H"), R.StuckSagas)
      assert.isUndefined(recent.items.find((item) => item.saga.id === waiting.id))
      assert.strictEqual(JSON.parse((yield* call("GET", "/v1/sagas/stuck")).text).olderThan, "PT15M")
    })
  )

  it.effect("delivers a signal: 200 and the saga moves on; the same signal again is a 409", () =>
    Effect.gen(function* () {
      const { saga } = yield* start({ type: "BALANCE_CALCULATION", input: input() })
      const early = yield* call("POST", `/v1/sagas/${saga.id}/signals/condenser_input`, {
        body: { data: { condenserDataRef: "condenser/1.json" } }
      })
      assert.strictEqual(early.status, 409)
      assert.deepInclude(problem(early), { currentState: "PREPARING_BRANCH", signal: "condenser_input" })
      yield* toCondenserInput(saga.id)
      const path = `/v1/sagas/${saga.id}/signals/condenser_input`
      const delivered = yield* call("POST", path, { body: { data: { condenserDataRef: "condenser/1.json" } } })
      assert.strictEqual(delivered.status, 200)
      const moved = decode(delivered, R.Saga)
      assert.strictEqual(moved.currentState, "RUNNING_SOLVER")
      assert.strictEqual(moved.context.condenserDataRef, "condenser/1.json")
      assert.strictEqual(delivered.headers.get("etag"), `"${moved.lockVersion}"`)
      const again = yield* call("POST", path, { body: { data: { condenserDataRef: "condenser/1.json" } } })
      assert.strictEqual(again.status, 409)
      assert.strictEqual(problem(again).type, "urn:saga-orchestrator:problem:signal-not-expected")
    })
  )

  it.effect("retries and cancels with If-Match: 428 without it, 412 when stale, 409 when there is nothing to do", () =>
    Effect.gen(function* () {
      const { saga } = yield* start({ type: "BALANCE_CALCULATION", input: input() })
      const retryPath = `/v1/sagas/${saga.id}/retry`
      const missing = yield* call("POST", retryPath)
      assert.strictEqual(missing.status, 428)
      assert.strictEqual(problem(missing).type, "urn:saga-orchestrator:problem:if-match-required")

      const retried = yield* call("POST", retryPath, { headers: { "if-match": '"0"' } })
      assert.strictEqual(retried.status, 200)
      assert.strictEqual(decode(retried, R.Saga).lockVersion, 1)
      assert.strictEqual(retried.headers.get("etag"), '"1"')

      const stale = yield* call("POST", retryPath, { headers: { "if-match": '"0"' } })
      assert.strictEqual(stale.status, 412)
      assert.deepInclude(problem(stale), { expectedVersion: 0, currentVersion: 1 })

      const cancelPath = `/v1/sagas/${saga.id}/cancel`
      assert.strictEqual((yield* call("POST", cancelPath)).status, 428)
      assert.strictEqual((yield* call("POST", cancelPath, { headers: { "if-match": '"0"' } })).status, 412)
      const cancelling = yield* call("POST", cancelPath, { headers: { "if-match": '"1"' } })
      assert.strictEqual(cancelling.status, 200)
      assert.strictEqual(decode(cancelling, R.Saga).status, "COMPENSATING")
      const done = yield* answer(saga.id, {})
      assert.strictEqual(done.status, "CANCELLED")

      const version = `"${done.lockVersion}"`
      const finished = yield* call("POST", retryPath, { headers: { "if-match": version } })
      assert.strictEqual(finished.status, 409)
      assert.strictEqual(problem(finished).type, "urn:saga-orchestrator:problem:saga-finished")
      assert.strictEqual((yield* call("POST", cancelPath, { headers: { "if-match": version } })).status, 409)

      const waiting = (yield* start({ type: "BALANCE_CALCULATION", input: input() })).saga
      const signalStep = yield* toCondenserInput(waiting.id)
      const nothing = yield* call("POST", `/v1/sagas/${waiting.id}/retry`, {
        headers: { "if-match": `"${signalStep.lockVersion}"` }
      })
      assert.strictEqual(nothing.status, 409)
      assert.strictEqual(problem(nothing).type, "urn:saga-orchestrator:problem:nothing-to-retry")
    })
  )
})
