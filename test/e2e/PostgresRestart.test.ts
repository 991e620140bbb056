/**
 * PostgreSQL restarts mid-run (`pg_ctl restart -m fast`: sessions terminated, transactions in flight cut off), and
 * stops while workers' replies arrive: the service must ride through by itself — its pool, its outbox listener, its
 * consumer and relay — and no saga may be lost, stepped twice or have a task applied twice. The cluster is this
 * file's own (test/utils/PrivateCluster.ts), so the machine's PostgreSQL keeps serving the other test files.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Queues } from "../../src/domain/Messages.ts"
import { isActive } from "../../src/domain/Saga.ts"
import * as PrivateCluster from "../utils/PrivateCluster.ts"
import { rabbit, rabbitmqctl, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import * as Harness from "./harness.ts"

const deployment = Harness.layer(
  Effect.all({ cluster: PrivateCluster.PrivateCluster, vhost: TestVhost }).pipe(
    Effect.map(({ cluster, vhost }) => ({ database: cluster.config, rabbit, vhost: vhost.name }))
  )
)

const environment = Layer.mergeAll(deployment, Harness.runtime).pipe(
  Layer.provideMerge(PrivateCluster.layerStore()),
  Layer.provideMerge(testVhost())
)

layer(environment, { excludeTestServices: true, timeout: "120 seconds" })("PostgreSQL restarted mid-run", (it) => {
  it.effect(
    "the service rides through a restart by itself and every saga still ends as planned, none applied twice",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PrivateCluster.PrivateCluster
        const engineer = yield* Harness.engineer
        const { early, late, all } = yield* Harness.startParkedBatches

        // Mid-run: the early sagas get their data and move on while the late ones keep waiting; then the restart.
        yield* engineer.release(early)
        yield* Harness.eventually(
          "some early sagas are past the signal while others still run",
          Harness.sagasAre(
            all,
            (sagas) =>
              sagas.some((saga) => saga.currentState !== "AWAITING_CONDENSER_INPUT") &&
              sagas.some((saga) => isActive(saga.status))
          ),
          10_000,
          all
        )
        yield* cluster.restart("fast")
        yield* engineer.release(late)

        yield* Harness.eventually("every saga settled", Harness.settled(all), 40_000, all)
        yield* Harness.verify(all, { ignored: "atLeast" })
        // The same process throughout: it noticed the restart (its outbox listener lost its connection) and went on.
        const { service } = yield* Harness.Deployment
        assert.include(service.output(), "outbox notifications lost")
        assert.strictEqual(service.child.exitCode, null)
      })
  )

  it.effect(
    "replies that arrive while PostgreSQL is down are held, then applied once it is back, each exactly once",
    () =>
      Effect.gen(function* () {
        const cluster = yield* PrivateCluster.PrivateCluster
        const { service, worker, endpoints } = yield* Harness.Deployment
        // A reply handed back to the queue even twice would be dead-lettered by RabbitMQ itself: held replies are not.
        yield* Effect.promise(() =>
          rabbitmqctl([
            "set_policy",
            "-p",
            endpoints.vhost,
            "--apply-to",
            "queues",
            "delivery-limit",
            `^${Queues.replies.replaceAll(".", "\\.")}$`,
            '{"delivery-limit":2}'
          ])
        )
        const engineer = yield* Harness.engineer
        const sagas = yield* Harness.startSagas("outage-", [
          ["ok", 4],
          ["fatal-solver", 2]
        ])
        yield* Harness.eventually(
          "every saga waits for condenser data",
          Harness.allIn(sagas, "AWAITING_CONDENSER_INPUT"),
          20_000,
          sagas
        )

        // The worker is frozen while the solver tasks go out, so that its replies come while PostgreSQL is down.
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* Harness.paused(worker)
            yield* engineer.release(sagas)
            yield* Harness.eventually(
              "every solver task is out of the outbox",
              Effect.zipWith(
                Harness.allIn(sagas, "RUNNING_SOLVER"),
                Harness.outboxEmpty,
                (running, empty) => running && empty
              ),
              10_000,
              sagas
            )
            yield* cluster.stop("fast")
          })
        )
        const ids = new Set<string>(sagas.map((saga) => saga.id))
        yield* Harness.eventually(
          "the worker answered every solver task while PostgreSQL is down",
          Effect.map(
            Harness.appliedEffects,
            (effects) =>
              effects.filter((effect) => ids.has(effect.sagaId) && effect.taskType === "solver.balance").length ===
              sagas.length
          ),
          10_000
        )
        // The outage outlasts the store's own retries (30 s): the consumer then holds those replies and retries them
        // in place, many times over, without handing them back to the queue.
        yield* Effect.sleep("35 seconds")
        yield* cluster.start

        yield* Harness.eventually("every saga settled", Harness.settled(sagas), 40_000, sagas)
        yield* Harness.verify(sagas, { ignored: "atLeast" })
        assert.strictEqual(yield* Harness.queueDepth(Queues.deadLetters), 0, "no reply was dead-lettered")
        assert.include(service.output(), "reply held: database unavailable")
        assert.strictEqual(service.child.exitCode, null)
      })
  )
})
