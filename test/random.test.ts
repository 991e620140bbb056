import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SecureRandom } from "effect/crypto"
import * as Random from "../src/random.ts"

const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

describe("pooled SecureRandom", () => {
  it.effect("hands out UUIDv7s that are valid, distinct and ordered across many refills of the pool", () =>
    Effect.gen(function* () {
      const random = yield* SecureRandom.SecureRandom
      // 10 random bytes per UUIDv7: 20,000 of them refill the 4 KiB pool about 50 times.
      const ids = yield* Effect.replicateEffect(random.uuidV7(), 20_000)
      for (const id of ids) assert.match(id, uuidV7)
      assert.strictEqual(new Set(ids).size, ids.length)
      assert.deepStrictEqual([...ids].sort(), ids)
    }).pipe(Effect.provide(Random.layer))
  )

  it.effect("never hands out the same bytes twice, and serves requests larger than the pool", () =>
    Effect.gen(function* () {
      const random = yield* SecureRandom.SecureRandom
      const chunks = yield* Effect.replicateEffect(random.randomBytes(16), 2_000)
      const distinct = new Set(chunks.map((bytes) => Buffer.from(bytes).toString("hex")))
      assert.strictEqual(distinct.size, chunks.length)
      const large = yield* random.randomBytes(100_000)
      assert.strictEqual(large.length, 100_000)
      // 100,000 random bytes take every value.
      assert.strictEqual(new Set(large).size, 256)
    }).pipe(Effect.provide(Random.layer))
  )
})
