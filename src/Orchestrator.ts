/**
 * The running service: the state store on the configured database (migrated at startup when migration credentials
 * are given, otherwise checked to be current) or, with none configured, on the embedded one; the saga engine; the
 * outbox relay, reply consumer and timer scanner; and the broker: RabbitMQ with ORCH_AMQP_URL, otherwise one in
 * memory whose tasks simulated workers answer (and then, in embedded mode, a demonstration starts a few sagas); and
 * the HTTP API (src/http) on ORCH_HTTP_PORT.
 */
import { NodeServices } from "@effect/platform-node"
import { Duration, Effect, Layer, Option, Schedule } from "effect"
import * as AmqpBroker from "./broker/AmqpBroker.ts"
import * as MemoryBroker from "./broker/MemoryBroker.ts"
import * as OutboxRelay from "./broker/OutboxRelay.ts"
import * as ReplyConsumer from "./broker/ReplyConsumer.ts"
import { AppConfig, type DatabaseConfig } from "./Config.ts"
import * as HttpServer from "./http/Server.ts"
import * as Metrics from "./observability/Metrics.ts"
import * as Observability from "./observability/Observability.ts"
import * as Engine from "./saga/Engine.ts"
import { SagaRegistry } from "./saga/Registry.ts"
import * as TimerScanner from "./saga/TimerScanner.ts"
import { definitions } from "./sagas/index.ts"
import * as Demo from "./simulation/Demo.ts"
import * as Workers from "./simulation/Workers.ts"
import {
  checkLeastPrivilege,
  checkSchemaCurrent,
  migrate,
  nameSecretFileOnAuthFailure,
  runtimeClient
} from "./store/Database.ts"
import * as Embedded from "./store/Embedded.ts"
import * as OutboxNotifications from "./store/OutboxNotifications.ts"
import * as PgSagaStore from "./store/PgSagaStore.ts"
import { SagaStore } from "./store/SagaStore.ts"

const announceEmbedded = Effect.logWarning(
  [
    "EMBEDDED MODE: no database configured (ORCH_DB_HOST is unset).",
    "State lives in an in-process PostgreSQL (PGlite) and is lost when the process stops; tasks go to an in-memory",
    "broker answered by simulated workers. For real use, set ORCH_DB_HOST, ORCH_DB_PORT, ORCH_DB_NAME, ORCH_DB_USER",
    "(and ORCH_DB_MIGRATION_USER) with the password files db_password (and db_migration_password) in",
    "ORCH_SECRETS_DIR, and ORCH_AMQP_URL with amqp_password; see README.md."
  ].join("\n")
)

const prepare = Effect.fnUntraced(function* (db: DatabaseConfig) {
  if (Option.isNone(db.migration)) return
  const applied = yield* migrate(db)
  yield* Effect.logInfo(
    applied.length === 0
      ? "schema is up to date"
      : `applied migrations: ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
  )
})

/** The runtime pool on the configured or embedded database, after migrations. */
const database = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    const embedded = Option.isNone(config.database)
    if (embedded) yield* announceEmbedded
    const db = Option.isSome(config.database) ? config.database.value : yield* Embedded.start
    yield* prepare(db)
    // PGlite has a single backend: one connection, or transactions of different fibers would interleave.
    return runtimeClient(db, embedded ? 1 : 10)
  })
)

/**
 * Before serving: the schema is current, and the runtime role can do no more than DML (TR-DB-6). The embedded
 * database has a single all-powerful user and is exempt.
 */
const startupChecks = Effect.gen(function* () {
  const config = yield* AppConfig
  // The first queries as the runtime role: a refused login names the secret file of its password.
  yield* Option.match(config.database, {
    onNone: () => checkSchemaCurrent,
    onSome: (db) => checkSchemaCurrent.pipe(nameSecretFileOnAuthFailure(db.user, "db_password"))
  })
  if (Option.isSome(config.database)) yield* checkLeastPrivilege(config.allowPrivilegedDbRole)
})

const store = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    PgSagaStore.layerNoDeps({ maxContextBytes: config.maxContextBytes }).pipe(
      // The embedded database has a single connection, which a listener would hold; nothing else writes to it.
      Layer.provideMerge(Option.isSome(config.database) ? OutboxNotifications.layerPg : OutboxNotifications.layerLocal)
    )
  )
).pipe(
  Layer.provideMerge(database),
  Layer.tap((context) => Effect.provideContext(startupChecks, context))
)

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

const services = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    const embedded = Option.isNone(config.database)
    const simulated = Option.isNone(config.amqp)
    // The relay wakes when a step of this process commits messages (and, on PostgreSQL, when another process
    // announces some); it looks once a second anyway.
    const relay = OutboxRelay.layer({ ...OutboxRelay.defaultRelaySettings, idleDelay: "1 second" })
    const runtime = Layer.mergeAll(
      reportHealth,
      relay,
      ReplyConsumer.layer(),
      TimerScanner.layer(),
      HttpServer.layer,
      embedded && simulated ? Demo.layer(Demo.defaultDemoSettings) : Layer.empty
    )
    if (Option.isSome(config.amqp)) return runtime.pipe(Layer.provide(AmqpBroker.layerConfig(config.amqp.value)))
    if (!embedded) {
      yield* Effect.logWarning("ORCH_AMQP_URL is unset: tasks go to an in-memory broker and simulated workers")
    }
    // The workers bind their queue before anything is published: a task with no queue bound would be dropped.
    const workers = Workers.layer(embedded ? demoWorkers : {}).pipe(Layer.orDie)
    return runtime.pipe(Layer.provide(workers), Layer.provide(MemoryBroker.layer))
  })
)

export const layer = services.pipe(
  Layer.provide(Engine.layer),
  Layer.provide(SagaRegistry.layer(definitions)),
  Layer.provide(Metrics.layerMetricsText),
  Layer.provide(store),
  // Outermost, after the configuration: everything inside logs as JSON and traces into one tracer.
  Layer.provide(Observability.layer),
  Layer.provide(AppConfig.layer),
  Layer.provide(NodeServices.layer)
)
