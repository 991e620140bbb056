/**
 * The running service, as one composition: the HTTP API (src/http) on ORCH_HTTP_PORT, the outbox relay, reply
 * consumer, timer scanner and retention around the saga engine; the store on PostgreSQL (the configured database or an embedded
 * one); the broker (RabbitMQ, or an in-memory one answered by simulated workers); tracing and logging outermost. The
 * run mode is decided in src/Config.ts (`database`, `workers`); this file only matches on it.
 */
import { NodeServices } from "@effect/platform-node"
import { Duration, Effect, Layer, Schedule } from "effect"
import * as AmqpBroker from "./broker/AmqpBroker.ts"
import * as MemoryBroker from "./broker/MemoryBroker.ts"
import * as OutboxRelay from "./broker/OutboxRelay.ts"
import * as ReplyConsumer from "./broker/ReplyConsumer.ts"
import { AppConfig, Database, Workers as WorkersMode } from "./Config.ts"
import * as HttpMetrics from "./http/Metrics.ts"
import * as HttpServer from "./http/Server.ts"
import * as Observability from "./observability/Observability.ts"
import * as Engine from "./saga/Engine.ts"
import { SagaRegistry } from "./saga/Registry.ts"
import * as TimerScanner from "./saga/TimerScanner.ts"
import { definitions } from "./sagas/index.ts"
import * as Demo from "./simulation/Demo.ts"
import * as Workers from "./simulation/Workers.ts"
import * as PgSagaStore from "./store/PgSagaStore.ts"
import * as Retention from "./store/Retention.ts"
import { SagaStore } from "./store/SagaStore.ts"

/** Every 30 s, the store's state in the log. */
const reportHealth = Layer.effectDiscard(
  Effect.gen(function* () {
    const store = yield* SagaStore
    const report = store.summary.pipe(
      Effect.flatMap(({ byStatus, outboxPending }) =>
        Effect.logInfo("state store healthy", { sagas: byStatus, outboxPending })
      ),
      Effect.catch((error) => Effect.logError("state store unavailable", error.message))
    )
    yield* Effect.logInfo("saga orchestrator started")
    yield* report.pipe(Effect.repeat(Schedule.spaced(Duration.seconds(30))), Effect.forkScoped)
  })
)

/** Simulated workers as the demonstration runs them: quick, with some retryable and some fatal failures. */
const demoWorkers: Workers.Options = {
  latency: "400 millis",
  byTaskType: {
    "gitlab.prepare_branch": { failureRate: 0.25, retryableRate: 1 },
    "solver.balance": { failureRate: 0.2, retryableRate: 0 }
  }
}

const embedded = Database.$is("Embedded")

/**
 * RabbitMQ, or an in-memory broker answered by simulated workers (quick and flaky in embedded mode). The workers
 * bind their queue when built, before anything is published: a task with no queue bound would be dropped.
 */
const broker = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    WorkersMode.$match(config.workers, {
      RabbitMq: () => AmqpBroker.layer,
      Simulated: () =>
        Workers.layer(embedded(config.database) ? demoWorkers : {}).pipe(
          Layer.orDie,
          Layer.provideMerge(MemoryBroker.layerMemory),
          Layer.tap(() =>
            embedded(config.database)
              ? Effect.void
              : Effect.logWarning("ORCH_AMQP_URL is unset: tasks go to an in-memory broker and simulated workers")
          )
        )
    })
  )
)

/** In embedded mode with simulated workers, a demonstration starts a few sagas. */
const demo = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    embedded(config.database) && config.workers._tag === "Simulated"
      ? Demo.layer(Demo.defaultDemoSettings)
      : Layer.empty
  )
)

// The relay wakes when a step of this process commits messages (and, on PostgreSQL, when another process announces
// some); it looks once a second anyway.
const relay = OutboxRelay.layer({ ...OutboxRelay.defaultRelaySettings, idleDelay: "1 second" })

export const layer = Layer.mergeAll(
  HttpServer.layer,
  relay,
  ReplyConsumer.layer,
  TimerScanner.layer(),
  Retention.layer,
  reportHealth,
  demo
).pipe(
  Layer.provide(HttpMetrics.layerPrometheus),
  Layer.provide(Engine.layer),
  Layer.provide(SagaRegistry.layer(definitions)),
  Layer.provide(broker),
  Layer.provide(PgSagaStore.layer),
  // Outermost, after the configuration: everything inside logs as JSON and traces into one tracer.
  Layer.provide(Observability.layer),
  Layer.provide(AppConfig.layer),
  Layer.provide(NodeServices.layer)
)
