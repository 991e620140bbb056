/** The parts of a loaded configuration that a test expects to be there; a test fails when they are not. */
import { assert } from "@effect/vitest"
import type { AmqpConfig, AppConfigShape, DatabaseConfig } from "../../src/Config.ts"

export const externalDatabase = (config: AppConfigShape): DatabaseConfig => {
  assert.strictEqual(config.database._tag, "External", "expected an external database")
  if (config.database._tag !== "External") throw new Error("unreachable")
  return config.database.config
}

export const rabbitMq = (config: AppConfigShape): AmqpConfig => {
  assert.strictEqual(config.workers._tag, "RabbitMq", "expected RabbitMQ workers")
  if (config.workers._tag !== "RabbitMq") throw new Error("unreachable")
  return config.workers.amqp
}
