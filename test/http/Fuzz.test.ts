/**
 * Fuzzing every route of the HTTP API with hostile parameters, headers and bodies — U+0000, lone surrogates, very long
 * and very deeply nested values, wrong types, malformed JSON: never a 5xx, and a 4xx never changes the database.
 */
import { assert, layer } from "@effect/vitest"
import { Arbitrary, Effect, Schema } from "effect"
import * as R from "../../src/http/Api/Representations.ts"
import * as H from "./harness.ts"
import { call, decode, input, snapshot, toCondenserInput } from "./harness.ts"

const hostile = [
  "ok",
  "",
  "a\u0000b",
  "\ud800",
  "x\udbffy",
  "\udc00",
  "l".repeat(5_000),
  "P10000000D",
  "-1",
  "1e309",
  '"3"',
  "{}",
  "null"
] as const

/** JSON text (or not quite): valid shapes with hostile values, wrong types, deep nesting, broken syntax. */
const bodyKinds = ["start", "startKey", "signal", "deep", "wrongType", "broken", "empty", "huge"] as const

const request = Arbitrary.all({
  route: Arbitrary.schema(Schema.Literals(["start", "list", "stuck", "get", "signal", "retry", "cancel"])),
  target: Arbitrary.schema(Schema.Literals(["running", "awaiting", "unknown", "hostile"])),
  text: Arbitrary.schema(Schema.Literals(hostile)),
  other: Arbitrary.schema(Schema.Literals(hostile)),
  body: Arbitrary.schema(Schema.Literals(bodyKinds)),
  ifMatch: Arbitrary.schema(Schema.Literals(["none", "current", "stale", "hostile"]))
})

const json = (value: unknown) => JSON.stringify(value)

/** Percent-encoding that also writes lone surrogates, as their (invalid) three UTF-8-style bytes would go. */
const q = (text: string) =>
  Array.from(text, (char) => {
    const code = char.charCodeAt(0)
    if (char.length > 1 || code < 0xd800 || code > 0xdfff) return encodeURIComponent(char)
    return [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)]
      .map((byte) => `%${byte.toString(16).toUpperCase()}`)
      .join("")
  }).join("")

const bodyOf = (kind: (typeof bodyKinds)[number], text: string, other: string): string | undefined => {
  switch (kind) {
    case "start":
      return json({ type: "BALANCE_CALCULATION", input: input({ repo: text, inputRef: other }) })
    case "startKey":
      return json({ type: text, input: input(), idempotencyKey: other, correlationId: text })
    case "signal":
      return json({ data: { condenserDataRef: text, [other]: other } })
    case "deep":
      return `{"type":"BALANCE_CALCULATION","data":${"[".repeat(20_000)}${"]".repeat(20_000)},"input":{}}`
    case "wrongType":
      return json({ type: 42, input: [text], data: null })
    case "broken":
      return `{"type": "${text}`
    case "empty":
      return undefined
    case "huge":
      return json({
        type: "BALANCE_CALCULATION",
        input: input({ repo: text.repeat(300_000 / Math.max(1, text.length)) })
      })
  }
}

layer(H.layer, { excludeTestServices: true, timeout: "120 seconds" })("HTTP API v1: fuzzed requests", (it) => {
  it.effect("never answer 5xx, and change nothing when they answer 4xx", () =>
    Effect.gen(function* () {
      const running = decode(
        yield* call("POST", "/v1/sagas", { body: { type: "BALANCE_CALCULATION", input: input() } }),
        R.Saga
      )
      const awaiting = decode(
        yield* call("POST", "/v1/sagas", { body: { type: "BALANCE_CALCULATION", input: input() } }),
        R.Saga
      )
      yield* toCondenserInput(awaiting.id)
      const samples = yield* Arbitrary.sampleEffect(request, { count: 120, seed: "http-fuzz" })
      const statuses = new Map<number, number>()
      for (const sample of samples) {
        const id = {
          running: running.id,
          awaiting: awaiting.id,
          unknown: crypto.randomUUID(),
          hostile: q(sample.text)
        }[sample.target]
        const [method, path] = {
          start: ["POST", "/v1/sagas"],
          list: ["GET", `/v1/sagas?status=${q(sample.text)}&limit=${q(sample.other)}&context=${q(sample.other)}`],
          stuck: ["GET", `/v1/sagas/stuck?olderThan=${q(sample.text)}&limit=${q(sample.other)}`],
          get: ["GET", `/v1/sagas/${id}`],
          signal: ["POST", `/v1/sagas/${id}/signals/${q(sample.other)}`],
          retry: ["POST", `/v1/sagas/${id}/retry`],
          cancel: ["POST", `/v1/sagas/${id}/cancel`]
        }[sample.route] as [string, string]
        const ifMatch = { none: undefined, current: '"0"', stale: '"99"', hostile: sample.text }[sample.ifMatch]
        const headers: Record<string, string> = {}
        // A header value must be Latin-1 to be sent at all: hostile text goes in bodies and URLs instead.
        if (ifMatch !== undefined && /^[\u0020-\u007e]*$/.test(ifMatch)) headers["if-match"] = ifMatch
        const raw = method === "POST" ? bodyOf(sample.body, sample.text, sample.other) : undefined
        const before = yield* snapshot
        const reply = yield* call(method, path, { ...(raw === undefined ? {} : { raw }), headers })
        statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1)
        const what = `${method} ${path.slice(0, 120)} ${String(raw).slice(0, 120)} → ${reply.status} ${reply.text.slice(0, 300)}`
        assert.isBelow(reply.status, 500, what)
        if (reply.status >= 400) {
          assert.match(reply.headers.get("content-type") ?? "", /^application\/problem\+json/, what)
          assert.strictEqual(yield* snapshot, before, `a 4xx changed the database: ${what}`)
        }
      }
      assert.isAbove(statuses.size, 3, `a spread of answers: ${JSON.stringify([...statuses])}`)
    })
  )
})
