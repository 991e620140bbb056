import { configDefaults, defineConfig } from "vitest/config"

/**
 * Two projects. `unit`: the files listed below, which need neither PostgreSQL nor RabbitMQ (in-memory store and
 * broker, TestClock, files on disk); no global setup, so `npm run test:unit` runs with both servers unreachable.
 * `integration`: every other test file, on the machine's PostgreSQL and RabbitMQ, after test/utils/globalSetup.ts
 * checks PostgreSQL and bootstraps the template database. A new test file lands in `integration` unless it is added
 * here. `npm test` runs both; the ops tests (Patroni, HAProxy failovers) run on their own: `npm run test:ops`,
 * vitest.ops.config.ts.
 */
const unit = [
  "test/Config.test.ts",
  "test/random.test.ts",
  "test/broker/MemoryBroker.test.ts",
  "test/contract/Contract.test.ts",
  "test/broker/ReplyConsumer.test.ts",
  "test/http/Api.test.ts",
  "test/http/ApiTokens.test.ts",
  "test/http/BadRequests.test.ts",
  "test/http/Fuzz.test.ts",
  "test/http/OpenApi.test.ts",
  "test/http/Problems.test.ts",
  "test/http/ServerErrors.test.ts",
  "test/observability/Logging.test.ts",
  "test/observability/Metrics.test.ts",
  "test/observability/Observability.test.ts",
  "test/observability/Tracing.test.ts",
  "test/packaging/BuildSteps.test.ts",
  "test/packaging/Compose.test.ts",
  "test/packaging/Configuration.test.ts",
  "test/packaging/Dockerfile.test.ts",
  "test/packaging/Kubernetes.test.ts",
  "test/packaging/PostgresHa.test.ts",
  "test/saga/Cancellation.test.ts",
  "test/saga/Engine.test.ts",
  "test/saga/Heartbeat.test.ts",
  "test/saga/Runtime.test.ts",
  "test/simulation/Workers.test.ts",
  "test/store/MemorySagaStore.test.ts",
  "test/store/Retention.test.ts",
  "test/store/transactions.test.ts"
]

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: unit,
          // PostgreSQL and RabbitMQ where nothing listens: a unit test that reaches for either fails.
          env: { ORCH_TEST_PG_PORT: "1", ORCH_TEST_AMQP_PORT: "1" }
        }
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/**/*.test.ts"],
          exclude: [...configDefaults.exclude, "test/ops/**", ...unit],
          globalSetup: ["test/utils/globalSetup.ts"],
          // Files run in parallel, each on a database and a vhost of its own (test/utils/TestDatabase.ts, rabbit.ts).
          fileParallelism: true
        }
      }
    ]
  }
})
