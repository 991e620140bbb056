import { defineConfig } from "vitest/config"

/**
 * The ops tests (test/ops): PostgreSQL HA under Patroni and HAProxy, failovers and switchovers; backups and restores
 * with pgBackRest and pg_dump (docker/backup). They install the Debian packages they drive when missing
 * (globalSetup), start their own daemons on loopback, and run one file at a time: each failover takes the whole
 * machine's attention for a while. `npm run test:ops`.
 */
export default defineConfig({
  test: {
    include: ["test/ops/**/*.test.ts"],
    globalSetup: ["test/ops/globalSetup.ts"],
    testTimeout: 150_000,
    hookTimeout: 150_000,
    fileParallelism: false
  }
})
