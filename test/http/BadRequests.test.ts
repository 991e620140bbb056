/**
 * Bad requests get a 4xx problem (`application/problem+json`) that names the offending value and says what is wrong
 * with it — never a 500 — and change nothing: the database is compared before and after.
 */
import { connect } from "node:net"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { HttpServer } from "effect/http"
import * as R from "../../src/http/Api/Representations.ts"
import * as H from "./harness.ts"
import { call, decode, input, problem, snapshot, toCondenserInput } from "./harness.ts"

interface Case {
  readonly name: string
  readonly method: "GET" | "POST"
  readonly path: string
  readonly options?: H.Call
  readonly status: number
  readonly type: string
  /** Paths that `errors` must name. */
  readonly paths?: ReadonlyArray<ReadonlyArray<string | number>>
}

const urn = (name: string) => `urn:saga-orchestrator:problem:${name}`
const blank = "about:blank"
const start = (body: unknown): H.Call => ({ body })
const valid = { type: "BALANCE_CALCULATION", input: input() }
const q = (value: unknown) => encodeURIComponent(JSON.stringify(value))

const cases = (running: string, awaiting: string, unknown: string): ReadonlyArray<Case> => [
  {
    name: "malformed JSON",
    method: "POST",
    path: "/v1/sagas",
    options: { raw: '{"type": "BALANCE_CALCULATION", ' },
    status: 400,
    type: blank,
    paths: [["payload"]]
  },
  {
    name: "a body that is not an object",
    method: "POST",
    path: "/v1/sagas",
    options: start([]),
    status: 400,
    type: blank,
    paths: [["payload"]]
  },
  {
    name: "no input",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "BALANCE_CALCULATION" }),
    status: 400,
    type: blank,
    paths: [["payload", "input"]]
  },
  {
    name: "a misspelt field",
    method: "POST",
    path: "/v1/sagas",
    options: start({ ...valid, idempotencykey: "k" }),
    status: 400,
    type: blank,
    paths: [["payload", "idempotencykey"]]
  },
  {
    name: "an unknown saga type",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "NO_SUCH_SAGA", input: input() }),
    status: 400,
    type: urn("unknown-saga-type"),
    paths: [["payload", "type"]]
  },
  {
    name: "input that does not match the saga's schema, every field reported",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "BALANCE_CALCULATION", input: { repo: "", inputRef: 7 } }),
    status: 400,
    type: urn("invalid-saga-input"),
    paths: [
      ["payload", "input", "repo"],
      ["payload", "input", "baseBranch"],
      ["payload", "input", "inputRef"],
      ["payload", "input", "requestedBy"]
    ]
  },
  {
    name: "an oversized context",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "BALANCE_CALCULATION", input: input({ inputRef: "x".repeat(70_000) }) }),
    status: 400,
    type: urn("context-too-large"),
    paths: [["payload", "input"]]
  },
  {
    name: "a NUL character PostgreSQL cannot store",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "BALANCE_CALCULATION", input: input({ repo: "a\u0000b" }) }),
    status: 400,
    type: blank,
    paths: [["payload", "input", "repo"]]
  },
  {
    name: "a lone surrogate PostgreSQL cannot store, in input",
    method: "POST",
    path: "/v1/sagas",
    options: {
      raw: `{"type":"BALANCE_CALCULATION","input":${JSON.stringify(input()).replace('"repo":"', '"repo":"\\ud800')}}`
    },
    status: 400,
    type: blank,
    paths: [["payload", "input", "repo"]]
  },
  ...["k\\ud800", "k\\udbff"].map(
    (key): Case => ({
      name: `an idempotency key with a lone surrogate (${key})`,
      method: "POST",
      path: "/v1/sagas",
      options: { raw: `{"type":"BALANCE_CALCULATION","input":${JSON.stringify(input())},"idempotencyKey":"${key}"}` },
      status: 400,
      type: blank,
      paths: [["payload", "idempotencyKey"]]
    })
  ),
  {
    name: "input nested 10,000 deep",
    method: "POST",
    path: "/v1/sagas",
    options: { raw: `{"type":"BALANCE_CALCULATION","input":${"[".repeat(10_000)}${"]".repeat(10_000)}}` },
    status: 400,
    type: blank,
    paths: [["payload", "input", ...Array.from({ length: 64 }, () => 0)]]
  },
  {
    name: "signal data with a lone surrogate",
    method: "POST",
    path: `/v1/sagas/${awaiting}/signals/condenser_input`,
    options: { raw: '{"data":{"condenserDataRef":"c\\udc00.json"}}' },
    status: 400,
    type: blank,
    paths: [["payload", "data", "condenserDataRef"]]
  },
  {
    name: "an overlong idempotency key",
    method: "POST",
    path: "/v1/sagas",
    options: start({ ...valid, idempotencyKey: "k".repeat(256) }),
    status: 400,
    type: blank,
    paths: [["payload", "idempotencyKey"]]
  },
  { name: "an unknown id", method: "GET", path: `/v1/sagas/${unknown}`, status: 404, type: urn("saga-not-found") },
  { name: "an id that is no UUID", method: "GET", path: "/v1/sagas/nope", status: 404, type: urn("saga-not-found") },
  {
    name: "a signal to an unknown saga",
    method: "POST",
    path: `/v1/sagas/${unknown}/signals/condenser_input`,
    options: { body: { data: { condenserDataRef: "c.json" } } },
    status: 404,
    type: urn("saga-not-found")
  },
  {
    name: "signal data that does not match the signal's schema",
    method: "POST",
    path: `/v1/sagas/${awaiting}/signals/condenser_input`,
    options: { body: { data: { condenserDataRef: 42 } } },
    status: 400,
    type: urn("invalid-signal-data"),
    paths: [["payload", "data", "condenserDataRef"]]
  },
  {
    name: "signal data that would make the context too large",
    method: "POST",
    path: `/v1/sagas/${awaiting}/signals/condenser_input`,
    options: { body: { data: { condenserDataRef: "c".repeat(70_000) } } },
    status: 400,
    type: urn("context-too-large"),
    paths: [["payload", "data"]]
  },
  {
    name: "a signal the saga does not wait for",
    method: "POST",
    path: `/v1/sagas/${running}/signals/condenser_input`,
    options: { body: { data: { condenserDataRef: "c.json" } } },
    status: 409,
    type: urn("signal-not-expected")
  },
  {
    name: "a signal without data",
    method: "POST",
    path: `/v1/sagas/${awaiting}/signals/condenser_input`,
    options: { body: {} },
    status: 400,
    type: blank,
    paths: [["payload", "data"]]
  },
  {
    name: "a retry without If-Match",
    method: "POST",
    path: `/v1/sagas/${running}/retry`,
    status: 428,
    type: urn("if-match-required")
  },
  {
    name: "a cancel with a stale If-Match",
    method: "POST",
    path: `/v1/sagas/${running}/cancel`,
    options: { headers: { "if-match": '"7"' } },
    status: 412,
    type: urn("version-mismatch")
  },
  ...["*", "0", 'W/"0"', '"0", "1"'].map(
    (ifMatch): Case => ({
      name: `If-Match: ${ifMatch}`,
      method: "POST",
      path: `/v1/sagas/${running}/retry`,
      options: { headers: { "if-match": ifMatch } },
      status: 400,
      type: urn("invalid-parameter"),
      paths: [["headers", "if-match"]]
    })
  ),
  {
    name: "a retry of an unknown saga",
    method: "POST",
    path: `/v1/sagas/${unknown}/retry`,
    options: { headers: { "if-match": '"0"' } },
    status: 404,
    type: urn("saga-not-found")
  },
  ...[
    ["limit=0", ["query", "limit"]],
    ["limit=501", ["query", "limit"]],
    ["limit=ten", ["query", "limit"]],
    ["status=DONE", ["query", "status"]],
    [`context=${encodeURIComponent("{bad")}`, ["query", "context"]],
    [`context=${q([1])}`, ["query", "context"]],
    [`context=${encodeURIComponent('{"repo":"\\ud800"}')}`, ["query", "context", "repo"]],
    ["statuss=RUNNING", ["query", "statuss"]]
  ].map(
    ([query, path]): Case => ({
      name: `GET /v1/sagas?${query}`,
      method: "GET",
      path: `/v1/sagas?${query}`,
      status: 400,
      type: blank,
      paths: [path as ReadonlyArray<string>]
    })
  ),
  {
    name: "a cursor this API did not give",
    method: "GET",
    path: "/v1/sagas?cursor=bm90LWEtY3Vyc29y",
    status: 400,
    type: urn("invalid-parameter"),
    paths: [["query", "cursor"]]
  },
  ...["P1M", "15 minutes", "-PT1M", "P10000000D"].map(
    (olderThan): Case => ({
      name: `stuck?olderThan=${olderThan}`,
      method: "GET",
      path: `/v1/sagas/stuck?olderThan=${encodeURIComponent(olderThan)}`,
      status: 400,
      type: blank,
      paths: [["query", "olderThan"]]
    })
  ),
  { name: "an unknown route", method: "GET", path: "/v2/sagas", status: 404, type: blank },
  {
    name: "a body that is not JSON",
    method: "POST",
    path: "/v1/sagas",
    options: { raw: "type=BALANCE_CALCULATION", headers: { "content-type": "text/plain" } },
    status: 415,
    type: blank
  },
  {
    name: "a body over 1 MiB",
    method: "POST",
    path: "/v1/sagas",
    options: start({ type: "BALANCE_CALCULATION", input: input({ repo: "x".repeat(1_100_000) }) }),
    status: 413,
    type: blank
  }
]

layer(H.layer, { excludeTestServices: true, timeout: "60 seconds" })("HTTP API v1: bad requests", (it) => {
  it.effect("get a 4xx problem naming what is wrong, and change nothing in the database", () =>
    Effect.gen(function* () {
      const running = decode(yield* call("POST", "/v1/sagas", { body: valid }), R.Saga)
      const awaiting = decode(yield* call("POST", "/v1/sagas", { body: { ...valid, input: input() } }), R.Saga)
      yield* toCondenserInput(awaiting.id)
      const before = yield* snapshot

      for (const c of cases(running.id, awaiting.id, crypto.randomUUID())) {
        const reply = yield* call(c.method, c.path, c.options)
        assert.strictEqual(reply.status, c.status, `${c.name}: ${reply.text}`)
        const body = problem(reply)
        assert.strictEqual(body.type, c.type, c.name)
        assert.strictEqual(body.status, c.status, c.name)
        assert.isString(body.title, c.name)
        const errors = (body.errors ?? []) as ReadonlyArray<{ path: Array<unknown>; message: string }>
        for (const path of c.paths ?? []) {
          const entry = errors.find((e) => JSON.stringify(e.path) === JSON.stringify(path))
          assert.isDefined(entry, `${c.name}: no error at ${JSON.stringify(path)} in ${reply.text}`)
          assert.isNotEmpty(entry?.message, c.name)
        }
      }

      assert.strictEqual(yield* snapshot, before, "a bad request changed the database")
    })
  )

  it.effect("answer a body without Content-Type, and what Node's HTTP parser refuses, as problems too", () =>
    Effect.gen(function* () {
      const server = yield* HttpServer.HttpServer
      const port = server.address._tag === "UnixPathAddress" ? 0 : server.address.port
      const before = yield* snapshot
      const untyped = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/v1/sagas`, {
          method: "POST",
          headers: { authorization: `Bearer ${H.token}` },
          body: new Blob([JSON.stringify(valid)])
        }).then(async (response) => ({
          status: response.status,
          headers: response.headers,
          text: await response.text()
        }))
      )
      assert.strictEqual(untyped.status, 415, untyped.text)
      assert.include(problem(untyped).detail ?? "", "no Content-Type")

      const raw = (request: string) =>
        Effect.promise(
          () =>
            new Promise<string>((resolve, reject) => {
              const socket = connect(port, "127.0.0.1", () => socket.end(request))
              let received = ""
              socket.on("data", (chunk) => {
                received += chunk.toString("utf8")
              })
              socket.on("end", () => resolve(received))
              socket.on("error", reject)
            })
        )
      const oversized = yield* raw(`GET /v1/sagas HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`)
      assert.match(oversized, /^HTTP\/1\.1 431 /)
      assert.include(oversized, "Content-Type: application/problem+json")
      assert.strictEqual(JSON.parse(oversized.split("\r\n\r\n")[1] ?? "").status, 431)
      const garbage = yield* raw("NOT HTTP AT ALL\r\n\r\n")
      assert.match(garbage, /^HTTP\/1\.1 400 /)
      assert.strictEqual(JSON.parse(garbage.split("\r\n\r\n")[1] ?? "").status, 400)
      assert.strictEqual(yield* snapshot, before)
    })
  )
})
