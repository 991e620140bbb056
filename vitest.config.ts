import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/utils/globalSetup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Files run in parallel, each on a database of its own (see test/utils/TestDatabase.ts).
    fileParallelism: true
  }
})
