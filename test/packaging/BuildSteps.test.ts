import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { repoPath, run } from "./files.ts"

describe("docker/build-steps.sh (the Dockerfile's build steps, without Docker)", () => {
  it.effect(
    "installs the production dependencies only, and the image's entrypoint starts",
    () =>
      Effect.gen(function* () {
        const result = yield* run("bash", [repoPath("docker/build-steps.sh")], { timeoutMs: 170_000 })
        assert.strictEqual(result.code, 0, result.output)
        assert.include(result.output, "entrypoint: node src/cli.ts --help")
        assert.match(result.output, /ok: image build steps pass/)
      }),
    { timeout: 180_000 }
  )
})
