/**
 * The service and the test worker as OS processes on the machine's PostgreSQL and RabbitMQ, in a database and a
 * vhost of this file's own; the test starts sagas through the engine on the same database.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { deadLetterReasonHeader } from "../../src/domain/Messages.ts"
import { awaitedTaskId } from "../../src/domain/Progress.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { rabbit, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { TestDatabase, layerStore as testStore } from "../utils/TestDatabase.ts"
import * as Harness from "./harness.ts"

const deployment = Harness.layer(
  Effect.all({ db: TestDatabase, vhost: TestVhost }).pipe(
    Effect.map(({ db, vhost }) => ({ database: db.config, rabbit, vhost: vhost.name }))
  )
)

const environment = Layer.mergeAll(deployment, Harness.runtime).pipe(
  Layer.provideMerge(testStore()),
  Layer.provideMerge(testVhost())
)

layer(environment, { excludeTestServices: true, timeout: "60 seconds" })("end to end through RabbitMQ", (it) => {
  it.effect(
    "runs sagas of every plan to their planned ends: no phantom task, none applied twice, extra replies ignored",
    () =>
      Effect.gen(function* () {
        const engineer = yield* Harness.engineer
        const started = yield* Harness.startSagas("run-", [
          ["ok", 6],
          ["retry-mesh", 2],
          ["fatal-solver", 2],
          ["duplicate", 2],
          ["late", 2]
        ])
        yield* engineer.release(started)
        yield* Harness.eventually("every saga settled", Harness.settled(started), 30_000, started)
        yield* Harness.verify(started, { ignored: "exact" })
      })
  )

  it.effect("tells the worker to stop when a saga is cancelled while its solver runs", () =>
    Effect.gen(function* () {
      const engineer = yield* Harness.engineer
      const started = yield* Harness.startSagas("cancel-", [["hang-solver", 1]])
      yield* engineer.release(started)
      yield* Harness.eventually("the solver runs", Harness.allIn(started, "RUNNING_SOLVER"), 20_000, started)
      const id = started[0]?.id ?? ("" as SagaId)
      const progress = yield* SagaStore.use((store) => store.get(id)).pipe(Effect.flatMap(readProgress))
      const solver = { taskId: awaitedTaskId(progress) ?? "none" }
      yield* Engine.use((engine) => engine.cancel(id))
      yield* Harness.eventually(
        "the worker received the cancellation notice",
        Effect.map(Harness.cancellationsReceived, (notices) => notices.some((n) => n.taskId === solver.taskId)),
        20_000,
        started
      )
      const notices = yield* Harness.cancellationsReceived
      assert.deepStrictEqual(
        notices.filter((n) => n.sagaId === id),
        [
          {
            sagaId: id,
            sagaType: "BALANCE_CALCULATION",
            taskId: solver.taskId,
            taskType: "solver.balance",
            stepKey: `${id}/runSolver`,
            attempt: 1,
            reason: "saga_cancelled"
          }
        ]
      )
      yield* Harness.eventually("the saga settled", Harness.settled(started), 20_000, started)
      yield* Harness.verify(started, { ignored: "exact" })
    })
  )

  it.effect("dead-letters malformed replies with the reason in a header and keeps running sagas", () =>
    Effect.gen(function* () {
      const unknownSaga = "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192"
      const malformed = [
        { messageId: "invalid-json", body: "{ not json" },
        { messageId: "wrong-shape", body: JSON.stringify({ sagaId: 42, outcome: "maybe" }) },
        {
          messageId: "unknown-saga",
          body: JSON.stringify({ sagaId: unknownSaga, taskId: "t-1", outcome: "succeeded", result: {} })
        }
      ]
      yield* Harness.publishRawReplies(malformed)
      const dead = yield* Harness.takeDeadLetters(malformed.length, 10_000)
      // Handled side by side (prefetch), so in any order; each keeps its body and says why it is here.
      const byId = new Map(dead.map((message) => [message.messageId, message]))
      assert.deepStrictEqual(
        malformed.map(({ messageId }) => byId.get(messageId)?.body),
        malformed.map(({ body }) => body)
      )
      const reason = (messageId: string) => String(byId.get(messageId)?.headers[deadLetterReasonHeader])
      assert.match(reason("invalid-json"), /^malformed reply: .*JSON/)
      assert.match(reason("wrong-shape"), /^malformed reply: .*sagaId/s)
      assert.strictEqual(reason("unknown-saga"), `unknown saga ${unknownSaga}`)

      // The service is still up, and still runs sagas.
      const { service } = yield* Harness.Deployment
      assert.strictEqual(service.child.exitCode, null)
      const engineer = yield* Harness.engineer
      const after = yield* Harness.startSagas("after-dlq-", [["ok", 1]])
      yield* engineer.release(after)
      yield* Harness.eventually("the saga started afterwards settled", Harness.settled(after), 20_000, after)
      yield* Harness.verify(after, { ignored: "exact" })
    })
  )
})
