/**
 * The example worker (examples/balance-worker.ts, built on the worker kit and the committed JSON Schemas) against the
 * real service: both run as OS processes on the machine's PostgreSQL and RabbitMQ, in a database and a vhost of this
 * file's own. The test starts BALANCE_CALCULATION sagas through the engine on the same database, supplies the
 * condenser data, and checks that they complete with the worker's results.
 */
import { join } from "node:path"
import { assert, layer } from "@effect/vitest"
import { Clock, Context, Effect, Layer } from "effect"
import type { SagaId } from "../../src/domain/Saga.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { freePort } from "../utils/freePort.ts"
import type { RunningProcess } from "../utils/processes.ts"
import { guest, rabbit, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { TestDatabase, layerStore as testStore } from "../utils/TestDatabase.ts"
import { serviceEnvironment, startScoped, tail, workDirectory } from "./harness/deployment.ts"
import * as Harness from "./harness.ts"

class ExampleDeployment extends Context.Service<
  ExampleDeployment,
  { readonly service: RunningProcess; readonly worker: RunningProcess }
>()("test/e2e/ExampleDeployment") {}

const deployment = Layer.effect(
  ExampleDeployment,
  Effect.gen(function* () {
    const db = yield* TestDatabase
    const vhost = yield* TestVhost
    const endpoints = { database: db.config, rabbit, vhost: vhost.name }
    const directory = yield* workDirectory
    const service = yield* startScoped(["src/main.ts"], serviceEnvironment(endpoints, directory, yield* freePort))
    const url = `amqp://${guest.user}:${guest.password}@${rabbit.host}:${rabbit.port}/${encodeURIComponent(vhost.name)}`
    const worker = yield* startScoped([join("examples", "balance-worker.ts")], { AMQP_URL: url, SOLVER_MS: "50" })
    yield* service.waitFor(/consuming queue 'orchestrator.replies'/, 30_000)
    yield* worker.waitFor(/consuming queue 'balance.worker'/, 30_000)
    return ExampleDeployment.of({ service, worker })
  }).pipe(Effect.orDie)
)

const environment = Layer.mergeAll(deployment, Harness.runtime).pipe(
  Layer.provideMerge(testStore()),
  Layer.provideMerge(testVhost())
)

/** Polls until the sagas are all in `state`; past the deadline fails with where they are and what the processes said. */
const allIn = Effect.fnUntraced(function* (ids: ReadonlyArray<SagaId>, state: string, deadline: number) {
  const store = yield* SagaStore
  const begin = yield* Clock.currentTimeMillis
  for (;;) {
    const sagas = yield* Effect.forEach(ids, (id) => store.get(id))
    if (sagas.every((saga) => saga.currentState === state)) return sagas
    if ((yield* Clock.currentTimeMillis) - begin > deadline) {
      const { service, worker } = yield* ExampleDeployment
      return yield* Effect.die(
        new Error(
          `timed out waiting for ${state}; sagas in ${sagas.map((s) => s.currentState).join(", ")}\n` +
            `--- service:\n${tail(service)}\n--- worker:\n${tail(worker)}`
        )
      )
    }
    yield* Effect.sleep("50 millis")
  }
})

layer(environment, { excludeTestServices: true, timeout: "90 seconds" })("the example worker", (it) => {
  it.effect("runs balance calculations to completion against the service", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const ids = yield* Effect.forEach([1, 2, 3], (n) =>
        engine
          .start("BALANCE_CALCULATION", {
            repo: `example/unit-${n}`,
            baseBranch: "main",
            inputRef: `inputs/unit-${n}.yaml`,
            requestedBy: "example-test"
          })
          .pipe(Effect.map(({ saga }) => saga.id))
      )
      yield* allIn(ids, "AWAITING_CONDENSER_INPUT", 30_000)
      yield* Effect.forEach(ids, (id) =>
        engine.signal(id, "condenser_input", { condenserDataRef: `condenser/${id}.json` })
      )
      const done = yield* allIn(ids, "COMPLETED", 30_000)
      for (const saga of done) {
        assert.strictEqual(saga.status, "COMPLETED")
        assert.strictEqual(saga.context.resultsCommitSha, "d".repeat(40))
        assert.match(String(saga.context.meshRef), /^meshes\/.+\.msh$/)
        assert.match(String(saga.context.solverRunId), /^run-/)
        assert.strictEqual(saga.context.condenserDataRef, `condenser/${saga.id}.json`)
      }
    })
  )
})
