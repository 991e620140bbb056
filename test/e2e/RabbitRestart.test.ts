/**
 * RabbitMQ goes down mid-run and comes back: the service and the worker must reconnect by themselves, and no saga may
 * be lost, stepped twice or have a task applied twice. The node is this file's own (test/utils/PrivateRabbit.ts), so
 * the machine's RabbitMQ keeps serving the other test files.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as PrivateRabbit from "../utils/PrivateRabbit.ts"
import { TestDatabase, layerStore as testStore } from "../utils/TestDatabase.ts"
import * as Harness from "./harness.ts"

const deployment = Harness.layer(
  Effect.all({ db: TestDatabase, node: PrivateRabbit.PrivateRabbit }).pipe(
    Effect.map(({ db, node }) => ({ database: db.config, rabbit: node.server, vhost: "/" }))
  )
)

const environment = Layer.mergeAll(deployment, Harness.runtime).pipe(
  Layer.provideMerge(testStore()),
  Layer.provideMerge(PrivateRabbit.layer)
)

layer(environment, { excludeTestServices: true, timeout: "90 seconds" })("RabbitMQ restarted mid-run", (it) => {
  it.effect(
    "the service and the worker reconnect by themselves and every saga still ends as planned, nothing applied twice",
    () =>
      Effect.gen(function* () {
        const node = yield* PrivateRabbit.PrivateRabbit
        const store = yield* SagaStore
        const engineer = yield* Harness.engineer
        const { early, late, all } = yield* Harness.startParkedBatches

        // Mid-run: the early sagas get their data and move on, the late ones keep waiting; then RabbitMQ goes down.
        yield* engineer.release(early)
        yield* Harness.eventually(
          "some early sagas are past the signal",
          Harness.sagasAre(early, (sagas) => sagas.some((saga) => saga.currentState !== "AWAITING_CONDENSER_INPUT")),
          10_000,
          all
        )
        yield* node.stopApp

        // While it is down, the late sagas get their data: their solver tasks wait in the outbox.
        yield* engineer.release(late)
        yield* Harness.eventually("the late sagas run the solver", Harness.allIn(late, "RUNNING_SOLVER"), 10_000, all)
        assert.isAtLeast((yield* store.summary).outboxPending, late.length, "tasks held in the outbox")

        yield* node.startApp
        yield* Harness.eventually("every saga settled", Harness.settled(all), 40_000, all)
        yield* Harness.verify(all, { ignored: "atLeast" })
        // Both lost their connection and opened a new one by themselves, in the same processes.
        const { service, worker } = yield* Harness.Deployment
        for (const process of [service, worker]) {
          assert.include(process.output(), "lost the connection to RabbitMQ")
          assert.isAtLeast(process.output().match(/connected to RabbitMQ/g)?.length ?? 0, 2)
          assert.strictEqual(process.child.exitCode, null)
        }
      })
  )
})
