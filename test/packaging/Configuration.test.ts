import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option } from "effect"
import { load } from "../../src/Config.ts"
import { externalDatabase, rabbitMq } from "../utils/config.ts"
import { secretsDirectory } from "../utils/processes.ts"
import { at, readCompose, record, stringRecord, strings } from "./files.ts"
import { configMap, deployment, environmentOf, job, mountedSecretFiles } from "./workloads.ts"

/**
 * The service's own configuration loader, given what a deployment gives a container: its environment, and the
 * secret files it mounts (with placeholder contents) standing in for /run/secrets.
 */
const loadAs = (env: Record<string, string>, secretFiles: ReadonlyArray<string>) => {
  assert.strictEqual(env.ORCH_SECRETS_DIR, "/run/secrets")
  const secretsDir = secretsDirectory(Object.fromEntries(secretFiles.map((file) => [file, `placeholder-${file}`])))
  return load.pipe(
    Effect.provideService(
      ConfigProvider.ConfigProvider,
      ConfigProvider.fromEnv({ env: { ...env, ORCH_SECRETS_DIR: secretsDir } })
    ),
    Effect.provide(NodeServices.layer)
  )
}

const compose = readCompose()

describe("the service's configuration accepts what each deployment gives it", () => {
  it.effect("the Kubernetes Deployment: the runtime role, RabbitMQ, no migration credentials", () =>
    Effect.gen(function* () {
      const config = yield* loadAs(environmentOf(deployment), mountedSecretFiles(deployment))
      const db = externalDatabase(config)
      assert.strictEqual(db.host, "orchestrator-db")
      assert.strictEqual(db.user, "orchestrator_app")
      assert.strictEqual(db.ssl, "require")
      assert.isTrue(Option.isNone(db.migration))
      assert.strictEqual(config.workers._tag, "RabbitMq")
      assert.strictEqual(config.httpPort, 8080)
    })
  )

  it.effect("the migration Job: the schema owner, and nothing it does not mount", () =>
    Effect.gen(function* () {
      const config = yield* loadAs(environmentOf(job), mountedSecretFiles(job))
      const db = externalDatabase(config)
      assert.strictEqual(Option.getOrThrow(db.migration).user, "orchestrator_owner")
      assert.strictEqual(config.workers._tag, "Simulated")
    })
  )

  it.effect("the Job with the whole ConfigMap would fail: it does not mount amqp_password (the check can fail)", () =>
    Effect.gen(function* () {
      const env = { ...stringRecord(at(configMap, "data")), ...environmentOf(job) }
      const error = yield* Effect.flip(loadAs(env, mountedSecretFiles(job)))
      assert.include(error.reason, "amqp_password")
    })
  )

  it.effect("the compose replicas: migrations at startup as the owner, RabbitMQ, through HAProxy", () =>
    Effect.gen(function* () {
      for (const replica of ["orchestrator-1", "orchestrator-2"]) {
        const service = record(at(compose, "services", replica))
        const config = yield* loadAs(stringRecord(service.environment), strings(service.secrets))
        const db = externalDatabase(config)
        assert.strictEqual(db.host, "haproxy")
        assert.strictEqual(Option.getOrThrow(db.migration).user, "orchestrator_owner")
        assert.strictEqual(rabbitMq(config).url, "amqp://orchestrator@rabbitmq:5672/")
      }
    })
  )
})
