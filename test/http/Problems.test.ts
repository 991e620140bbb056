import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ContextTooLarge, InvalidSagaData, StoreUnavailable } from "../../src/domain/errors.ts"
import * as Problems from "../../src/http/Problems.ts"
import { InvalidSignalData } from "../../src/saga/errors.ts"

const problemOf = <E>(error: E, origin?: Problems.Origin) =>
  Effect.fail(error).pipe(Problems.refusals(origin), Effect.flip)

describe("Problems", () => {
  it("names each problem type after its class", () => {
    const notFound = new Problems.SagaNotFound({ detail: "gone", sagaId: "s" })
    assert.strictEqual(notFound.type, "urn:saga-orchestrator:problem:saga-not-found")
    assert.strictEqual(notFound.status, 404)
    const ifMatch = new Problems.IfMatchRequired({ detail: "send If-Match" })
    assert.deepInclude(ifMatch, { type: "urn:saga-orchestrator:problem:if-match-required", status: 428 })
  })

  it.effect("answers a store outage around COMMIT with a 503 that says the change may have been applied", () =>
    Effect.gen(function* () {
      const inDoubt = yield* problemOf(
        new StoreUnavailable({ operation: "transact", reason: "ConnectionError", commitInDoubt: true })
      )
      assert.instanceOf(inDoubt, Problems.ServiceUnavailable)
      assert.deepInclude(inDoubt, { status: 503, commitInDoubt: true })
      assert.include(inDoubt.detail, "may have been applied")
      const nothingWritten = yield* problemOf(new StoreUnavailable({ operation: "transact", reason: "refused" }))
      assert.deepInclude(nothingWritten, { status: 503, commitInDoubt: false })
      assert.include(nothingWritten.detail, "nothing was changed")
    })
  )

  it.effect("puts each issue of refused data under the request value it came from", () =>
    Effect.gen(function* () {
      const error = new InvalidSignalData({
        sagaId: "s",
        signal: "condenser_input",
        issues: [
          { path: ["condenserDataRef"], message: "Expected string, got 42" },
          { path: ["refs", 0], message: "Expected string, got null" }
        ]
      })
      const problem = yield* problemOf(error, { data: ["payload", "data"] })
      assert.instanceOf(problem, Problems.InvalidSignalData)
      assert.deepStrictEqual(problem.errors, [
        { path: ["payload", "data", "condenserDataRef"], message: "Expected string, got 42" },
        { path: ["payload", "data", "refs", 0], message: "Expected string, got null" }
      ])
      const tooLarge = yield* problemOf(new ContextTooLarge({ bytes: 70_000, limit: 65_536 }), {
        data: ["payload", "input"]
      })
      assert.deepStrictEqual(
        tooLarge.errors.map((issue) => issue.path),
        [["payload", "input"]]
      )
      const badQuery = yield* problemOf(new InvalidSagaData({ field: "cursor", reason: "malformed" }), {
        fields: "query"
      })
      assert.deepStrictEqual(badQuery.errors, [{ path: ["query", "cursor"], message: "malformed" }])
    })
  )

  it.effect("passes other errors through unchanged", () =>
    Effect.gen(function* () {
      const ifMatch = new Problems.IfMatchRequired({ detail: "send If-Match" })
      assert.strictEqual(yield* problemOf(ifMatch), ifMatch)
    })
  )
})
