/**
 * The chaos run: BALANCE_CALCULATION sagas through three orchestrator OS processes while they are SIGKILLed one after
 * the other and started again, and while RabbitMQ and PostgreSQL are each taken down once. At the end it checks (see
 * verify.ts) that every saga ended as its plan says with a gap-free history, that the test worker applied every task
 * exactly once and none its saga did not send, that the dead-letter queue and the outbox are empty; it prints a
 * report and the sagas/s achieved, and exits 1 when a check failed.
 *
 *   node test/chaos/chaos.ts [--sagas N] [--seconds S] [--kill-every S] [--pg-stop immediate|fast] [--keep-logs]
 *
 * Everything runs on a private PostgreSQL cluster and a private RabbitMQ node (never the machine's own servers, which
 * other tests use meanwhile), started for the run and removed afterwards with every process it started.
 *
 * Timeline (S = --seconds, default 60): the sagas (--sagas, default 300) are started at an even pace during the first
 * three quarters of S; one orchestrator is SIGKILLed every --kill-every seconds (default 4), round robin, and started
 * again at once; RabbitMQ is down for a few seconds at 30 % of S and PostgreSQL at 60 % (a crash, `-m immediate`, by
 * default). Then the run waits, at most 90 s, until every saga has ended, and checks. Its files (process logs, the
 * worker's effects file) are deleted when it passes, kept when it fails or with --keep-logs.
 */
import { randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { NodeRuntime } from "@effect/platform-node"
import { Clock, Duration, Effect, Exit, Fiber, Layer, References } from "effect"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { freePort } from "../utils/freePort.ts"
import * as PrivateClusterLayer from "../utils/PrivateCluster.ts"
import { PrivateCluster, type ShutdownMode } from "../utils/PrivateCluster.ts"
import * as PrivateRabbitLayer from "../utils/PrivateRabbit.ts"
import { PrivateRabbit } from "../utils/PrivateRabbit.ts"
import { passwords } from "../utils/postgres.ts"
import { rabbitmqctl } from "../utils/rabbit.ts"
import { killRoundRobin, serverOutages } from "./disruptions.ts"
import { awaitTerminal, ChaosFailed, monitor, startSagas, supplyCondenserInput } from "./driver.ts"
import { plans } from "./plans.ts"
import { count, formatReport, queueDepths, quiesce, sagaTimings, seconds } from "./report.ts"
import { type Log, supervise } from "./supervised.ts"
import { type Check, check, readEffects, verify } from "./verify.ts"

interface Settings {
  readonly sagas: number
  readonly seconds: number
  readonly killEvery: number
  readonly pgStop: ShutdownMode
  /** Keep the run directory (process logs, the worker's effects file) even when the run passes. */
  readonly keepLogs: boolean
}

const usage =
  "usage: node test/chaos/chaos.ts [--sagas N] [--seconds S] [--kill-every S] [--pg-stop immediate|fast] [--keep-logs]"

const parseSettings = (args: ReadonlyArray<string>): Settings => {
  const { values } = parseArgs({
    args: [...args],
    options: {
      sagas: { type: "string", default: "300" },
      seconds: { type: "string", default: "60" },
      "kill-every": { type: "string", default: "4" },
      "pg-stop": { type: "string", default: "immediate" },
      "keep-logs": { type: "boolean", default: false }
    }
  })
  const settings = {
    sagas: Number(values.sagas),
    seconds: Number(values.seconds),
    killEvery: Number(values["kill-every"]),
    pgStop: values["pg-stop"] === "fast" ? "fast" : "immediate",
    keepLogs: values["keep-logs"]
  } satisfies Settings
  const valid =
    Number.isInteger(settings.sagas) &&
    settings.sagas > 0 &&
    settings.seconds >= 10 &&
    settings.killEvery > 0 &&
    (values["pg-stop"] === "fast" || values["pg-stop"] === "immediate")
  if (!valid) {
    console.error(`${usage}\n(--sagas a positive integer, --seconds at least 10, --kill-every above 0)`)
    process.exit(2)
  }
  return settings
}

const orchestratorCount = 3
/** After the chaos, how long the sagas get to end: a mesh retry backs off 30 s, a lost timer claim 30 s more. */
const drainDeadline = Duration.seconds(90)

/** Lines prefixed with the wall-clock time and the time since the run began. */
const makeLog =
  (origin: number): Log =>
  (line) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() =>
        console.log(
          `${new Date(now).toISOString().slice(11, 23)} +${((now - origin) / 1000).toFixed(1).padStart(6)}s  ${line}`
        )
      )
    )

/** The run's files: secrets, the worker's effects, process logs. All but the secrets are kept when the run fails. */
const runDirectory = (amqpPassword: string, keep: boolean) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const root = mkdtempSync(join(tmpdir(), `orch-chaos-${process.pid}-`))
      const secrets = join(root, "secrets")
      mkdirSync(secrets, { mode: 0o700 })
      mkdirSync(join(root, "logs"))
      const files = {
        db_password: passwords.app,
        db_migration_password: passwords.owner,
        amqp_password: amqpPassword,
        api_tokens: randomBytes(24).toString("hex")
      }
      for (const [name, content] of Object.entries(files)) {
        writeFileSync(join(secrets, name), `${content}\n`, { mode: 0o600 })
      }
      const effectsFile = join(root, "effects.jsonl")
      writeFileSync(effectsFile, "")
      return { root, secrets, effectsFile }
    }),
    ({ root, secrets }, exit) =>
      Effect.sync(() => {
        rmSync(secrets, { recursive: true, force: true })
        if (Exit.isSuccess(exit) && !keep) rmSync(root, { recursive: true, force: true })
        else console.log(`the process logs and the worker's effects file are kept in ${root}`)
      })
  )

const program = (settings: Settings, log: Log, origin: number) =>
  Effect.gen(function* () {
    const cluster = yield* PrivateCluster
    const rabbit = yield* PrivateRabbit
    // Hex: a password starting with `-` would read as an option to rabbitmqctl.
    const amqpPassword = randomBytes(18).toString("hex")
    yield* Effect.tryPromise({
      try: async () => {
        await rabbitmqctl(["add_user", "orchestrator", amqpPassword], rabbit.server)
        await rabbitmqctl(["set_permissions", "-p", "/", "orchestrator", ".*", ".*", ".*"], rabbit.server)
      },
      // The failed command line names the password.
      catch: (error) => new Error(`cannot create the RabbitMQ user: ${String(error).replaceAll(amqpPassword, "***")}`)
    })
    const { root, secrets, effectsFile } = yield* runDirectory(amqpPassword, settings.keepLogs)
    const amqpUrl = `amqp://orchestrator@${rabbit.server.host}:${rabbit.server.port}/`
    yield* log(
      `PostgreSQL on port ${cluster.server.port} (${cluster.directory}), RabbitMQ ${rabbit.server.node} on port ` +
        `${rabbit.server.port}; files in ${root}`
    )

    // The worker binds its queue before any task is published: a task with no queue bound would be dropped.
    const worker = yield* supervise({
      name: "worker",
      args: ["test/worker/worker.ts", amqpUrl, join(secrets, "amqp_password"), effectsFile, "50"],
      env: {},
      ready: /consuming queue 'test\.worker\.tasks'/,
      logFile: join(root, "logs", "worker.log"),
      log
    })
    yield* worker.awaitUp("60 seconds")
    const orchestrators = yield* Effect.forEach(
      Array.from({ length: orchestratorCount }, (_, i) => `orch-${i + 1}`),
      (name) =>
        Effect.flatMap(freePort, (httpPort) =>
          supervise({
            name,
            args: ["src/main.ts"],
            env: {
              ORCH_DB_HOST: cluster.server.host,
              ORCH_DB_PORT: String(cluster.server.port),
              ORCH_DB_NAME: cluster.config.database,
              ORCH_DB_MIGRATION_USER: "orchestrator_owner",
              ORCH_SECRETS_DIR: secrets,
              ORCH_AMQP_URL: amqpUrl,
              ORCH_HTTP_PORT: String(httpPort)
            },
            ready: /saga orchestrator started/,
            logFile: join(root, "logs", `${name}.log`),
            log
          })
        )
    )
    const allUp = Effect.forEach(orchestrators, (slot) => slot.awaitUp("60 seconds"), { concurrency: "unbounded" })
    yield* allUp
    const setupDone = yield* Clock.currentTimeMillis
    yield* log(`setup done in ${seconds(setupDone - origin)}: chaos begins`)

    const chaos = Duration.seconds(settings.seconds)
    const starting = yield* Effect.forkScoped(
      startSagas(settings.sagas, Duration.divideUnsafe(Duration.times(chaos, 0.75), settings.sagas), log)
    )
    const signals = yield* Effect.forkScoped(supplyCondenserInput(log))
    const orchestratorsUp = () => `${orchestrators.filter((slot) => slot.isUp()).length}/${orchestrators.length}`
    const watching = yield* Effect.forkScoped(monitor(log, effectsFile, orchestratorsUp))
    const killing = yield* Effect.forkScoped(killRoundRobin(orchestrators, Duration.seconds(settings.killEvery), log))
    const outages = yield* Effect.forkScoped(
      serverOutages(
        {
          rabbitAt: Duration.times(chaos, 0.3),
          postgresAt: Duration.times(chaos, 0.6),
          downFor: Duration.seconds(3),
          postgresStop: settings.pgStop
        },
        log
      )
    )
    yield* Effect.sleep(chaos)
    yield* Fiber.interrupt(killing)
    const { rabbitDown, postgresDown } = yield* Fiber.join(outages)
    const started = yield* Fiber.join(starting)
    const chaosDone = yield* Clock.currentTimeMillis
    yield* log("chaos over: waiting for every orchestrator to be up and every saga to end")
    yield* allUp
    yield* awaitTerminal(settings.sagas, drainDeadline, log)
    const endedAt = yield* Clock.currentTimeMillis
    yield* log(`every saga ended, ${seconds(endedAt - chaosDone)} after the chaos`)
    yield* Fiber.interrupt(signals)
    yield* Fiber.interrupt(watching)
    yield* quiesce

    const workerCounts = /\{"applied":(\d+),"repeated":(\d+)\}/.exec(yield* worker.stop)
    const depths = yield* queueDepths
    const facts = {
      started,
      effects: readEffects(effectsFile),
      workerRepeated: workerCounts === null ? undefined : Number(workerCounts[2]),
      deadLetters: depths.deadLetters,
      outbox: yield* count("SELECT count(*) FROM orchestrator.saga_outbox"),
      timers: yield* count("SELECT count(*) FROM orchestrator.saga_timers")
    }
    const crashes = [worker, ...orchestrators].flatMap((slot) => {
      const n = slot.stats().crashes
      return n > 0 ? [`${slot.name} ended on its own ${n} time(s) after it was up (see its log)`] : []
    })
    const logged = [worker, ...orchestrators].flatMap((slot) =>
      [...slot.stats().errors].map(([message, n]) => ({ line: `${slot.name}: ${n}× ${message.slice(0, 160)}`, n }))
    )
    const errorCount = logged.reduce((sum, { n }) => sum + n, 0)
    const checks: ReadonlyArray<Check> = [
      ...(yield* verify(facts).pipe(Effect.orDie)),
      check("no process ended on its own once up", crashes, "every exit after startup was one of the run's kills"),
      {
        // Expected during the outages (a timer that could not fire, say); worth reading when a check fails.
        name: "errors logged by processes that were up",
        status: errorCount === 0 ? "PASS" : "NOTE",
        detail: `${errorCount} error line(s) (in the process logs)`,
        examples: logged
          .sort((a, b) => b.n - a.n)
          .map(({ line }) => line)
          .slice(0, 8)
      }
    ]

    const stats = orchestrators.map((slot) => slot.stats())
    const sum = (f: (s: (typeof stats)[number]) => number) => stats.reduce((n, s) => n + f(s), 0)
    console.log(
      formatReport({
        sagas: plans.map((plan) => `${plan} ${started.filter((s) => s.plan === plan).length}`).join(", "),
        kills: sum((s) => s.kills),
        rabbitDown,
        postgresDown,
        postgresStop: settings.pgStop,
        orchestratorStarts: sum((s) => s.starts),
        failedStarts: sum((s) => s.failedStarts),
        workerStarts: worker.stats().starts,
        workerRepeated: facts.workerRepeated,
        depths,
        setup: setupDone - origin,
        chaosSeconds: settings.seconds,
        drain: endedAt - chaosDone,
        timings: yield* sagaTimings,
        checks
      })
    )
    const failed = checks.filter((c) => c.status === "FAIL")
    if (failed.length > 0) return yield* new ChaosFailed({ reason: failed.map((c) => c.name).join("; ") })
    yield* log("chaos run passed")
  }).pipe(
    Effect.onExit(() => log("cleaning up: every process, then the private servers")),
    Effect.scoped
  )

/** The driver's engine and state store on the private cluster (room for four pools at once), and the private node. */
const infrastructure = Layer.mergeAll(
  Engine.layer.pipe(
    Layer.provideMerge(SagaRegistry.layer(definitions)),
    Layer.provideMerge(PrivateClusterLayer.layerStore({ postgresql: { max_connections: "100" }, maxConnections: 5 }))
  ),
  PrivateRabbitLayer.layer
)

const main = (settings: Settings) =>
  Effect.gen(function* () {
    const origin = yield* Clock.currentTimeMillis
    const log = makeLog(origin)
    const deadline = Duration.seconds(settings.seconds + 240)
    yield* log(
      `chaos run: ${settings.sagas} sagas (${plans.join(", ")}), ${settings.seconds} s of chaos, ` +
        `${orchestratorCount} orchestrators, one SIGKILLed every ${settings.killEvery} s; ` +
        "starting a private PostgreSQL cluster and RabbitMQ node"
    )
    yield* program(settings, log, origin).pipe(
      Effect.provide(infrastructure),
      // The engine in this process logs every saga it starts; the run's own lines are what matters here.
      Effect.provideService(References.MinimumLogLevel, "Warn"),
      Effect.timeoutOrElse({
        duration: deadline,
        orElse: () =>
          Effect.fail(new ChaosFailed({ reason: `the hard deadline of ${Duration.format(deadline)} passed` }))
      }),
      Effect.ensuring(log("cleaned up"))
    )
  })

// Not src/runMain.ts: an interrupted run (Ctrl-C) must not exit 0 as the service does on SIGINT.
if (import.meta.main) NodeRuntime.runMain(main(parseSettings(process.argv.slice(2))))
