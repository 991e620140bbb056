import { configDefaults, defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The ops tests (Patroni, HAProxy failovers) run on their own: `npm run test:ops`, vitest.ops.config.ts.
    exclude: [...configDefaults.exclude, "test/ops/**"],
    globalSetup: ["test/utils/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Files run in parallel, each on a database of its own (see test/utils/TestDatabase.ts).
    fileParallelism: true
  }
})
