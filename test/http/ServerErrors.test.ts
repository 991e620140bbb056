/**
 * A defect is never an empty 500: it is answered as a problem naming the trace id to look for, and logged, with its
 * cause, at the error level.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as H from "./harness.ts"
import { call, logged, problem } from "./harness.ts"

/** The in-memory store, except that reading a saga hits a bug. */
const brokenStore = Layer.effect(
  SagaStore,
  Effect.map(SagaStore, (store) =>
    SagaStore.of({ ...store, get: () => Effect.die(new Error("a bug in get, for the test")) })
  )
).pipe(Layer.provide(MemorySagaStore.layerMemory()))

layer(H.layerOn(brokenStore), { excludeTestServices: true, timeout: "30 seconds" })("HTTP API v1: defects", (it) => {
  it.effect("answers a defect with a 500 problem naming its trace id, and logs it with its cause", () =>
    Effect.gen(function* () {
      const reply = yield* call("GET", `/v1/sagas/${crypto.randomUUID()}`)
      assert.strictEqual(reply.status, 500)
      const body = problem(reply)
      assert.strictEqual(body.status, 500)
      const traceId = (body as { readonly traceId?: unknown }).traceId
      assert.match(String(traceId), /^[0-9a-f]{32}$/)
      assert.include(body.detail ?? "", String(traceId))
      assert.isTrue(
        logged.some(
          (line) => line.includes("request failed with an unexpected error") && line.includes("a bug in get")
        ),
        logged.slice(-5).join("\n")
      )
    })
  )
})
