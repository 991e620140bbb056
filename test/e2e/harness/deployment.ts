/**
 * The service (`node src/main.ts`) and the test worker (test/worker/worker.ts) as OS processes, configured as in
 * production, and what the test reads from outside them: the worker's effects file and the vhost's queues.
 */
import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Clock, Context, Effect, Layer, Schema } from "effect"
import type { DatabaseConfig } from "../../../src/Config.ts"
import { decodeCancellation, Exchanges, Queues } from "../../../src/domain/Messages.ts"
import { freePort } from "../../utils/freePort.ts"
import { passwords } from "../../utils/postgres.ts"
import { type RunningProcess, start } from "../../utils/processes.ts"
import { adminConnection, amqpUrl, guest, type RabbitServer } from "../../utils/rabbit.ts"
import { cancellationsFileOf, queue as workerQueue } from "../../worker/worker.ts"

/** Where the service and the worker find PostgreSQL and RabbitMQ. */
export interface Endpoints {
  readonly database: DatabaseConfig
  readonly rabbit: RabbitServer
  readonly vhost: string
}

/** One test file's running service and worker, and where they run. */
export class Deployment extends Context.Service<
  Deployment,
  {
    readonly endpoints: Endpoints
    readonly service: RunningProcess
    readonly worker: RunningProcess
    /** The worker's record of applied effects: one JSON line per task id. */
    readonly effectsFile: string
  }
>()("test/e2e/Deployment") {}

/**
 * A directory for the deployment's lifetime: the secret files the service and the worker read (as in
 * ORCH_SECRETS_DIR, each with the trailing newline an editor leaves; the API token is random and unused) and the
 * worker's effects file.
 */
export const workDirectory = Effect.acquireRelease(
  Effect.sync(() => {
    const directory = mkdtempSync(join(tmpdir(), "orch-e2e-"))
    const secrets = {
      db_password: passwords.app,
      db_migration_password: passwords.owner,
      amqp_password: guest.password,
      api_tokens: randomBytes(24).toString("base64url")
    }
    for (const [name, content] of Object.entries(secrets)) {
      writeFileSync(join(directory, name), `${content}\n`, { mode: 0o600 })
    }
    return directory
  }),
  (directory) => Effect.sync(() => rmSync(directory, { recursive: true, force: true }))
)

/** An OS process for the scope's lifetime: killed by its pid when the scope closes, and waited for. */
export const startScoped = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => start(args, env)),
    (running) =>
      Effect.suspend(() => {
        if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill("SIGKILL")
        return running.exited
      }).pipe(Effect.timeout("10 seconds"), Effect.ignore)
  )

/** The service's environment: passwords only in files, the AMQP URL without one. */
export const serviceEnvironment = (endpoints: Endpoints, secrets: string, httpPort: number) => ({
  ORCH_DB_HOST: endpoints.database.host,
  ORCH_DB_PORT: String(endpoints.database.port),
  ORCH_DB_NAME: endpoints.database.database,
  ORCH_DB_MIGRATION_USER: "orchestrator_owner",
  ORCH_SECRETS_DIR: secrets,
  ORCH_AMQP_URL: amqpUrl(endpoints.vhost, endpoints.rabbit),
  ORCH_HTTP_PORT: String(httpPort)
})

/**
 * The service and the worker, started once the endpoints exist and killed when the scope closes (before the
 * database and the vhost go). Ready once both consume their queues: tasks published earlier could find no worker
 * queue bound and be dropped as unroutable.
 */
export const layer = <E, R>(endpoints: Effect.Effect<Endpoints, E, R>) =>
  Layer.effect(
    Deployment,
    Effect.gen(function* () {
      const resolved = yield* endpoints
      const directory = yield* workDirectory
      const url = amqpUrl(resolved.vhost, resolved.rabbit)
      const effectsFile = join(directory, "effects.jsonl")
      const service = yield* startScoped(["src/main.ts"], serviceEnvironment(resolved, directory, yield* freePort))
      const worker = yield* startScoped(
        ["test/worker/worker.ts", url, join(directory, "amqp_password"), effectsFile],
        {}
      )
      yield* service.waitFor(new RegExp(`consuming queue '${Queues.replies}'`), 30_000)
      yield* worker.waitFor(new RegExp(`consuming queue '${workerQueue}'`), 30_000)
      return Deployment.of({ endpoints: resolved, service, worker, effectsFile })
    }).pipe(Effect.orDie)
  )

/** The last lines a process printed. */
export const tail = (process: RunningProcess, lines = 25) => process.output().split("\n").slice(-lines).join("\n")

/** Freezes a process (SIGSTOP, by its pid) for the scope's lifetime; it goes on (SIGCONT) when the scope closes. */
export const paused = (process: RunningProcess) =>
  Effect.acquireRelease(
    Effect.sync(() => process.child.kill("SIGSTOP")),
    () => Effect.sync(() => process.child.kill("SIGCONT"))
  )

/** Messages waiting in a queue of the deployment's vhost. */
export const queueDepth = (name: string) =>
  Effect.gen(function* () {
    const { endpoints } = yield* Deployment
    const connection = yield* adminConnection(endpoints.vhost, endpoints.rabbit)
    return yield* Effect.promise(async () => {
      const channel = await connection.createChannel()
      const { messageCount } = await channel.checkQueue(name)
      await channel.close()
      return messageCount
    })
  }).pipe(Effect.scoped)

/** Publishes raw bodies to the replies exchange, as a misbehaving worker would, and waits for the confirms. */
export const publishRawReplies = (bodies: ReadonlyArray<{ readonly messageId: string; readonly body: string }>) =>
  Effect.gen(function* () {
    const { endpoints } = yield* Deployment
    const connection = yield* adminConnection(endpoints.vhost, endpoints.rabbit)
    yield* Effect.promise(async () => {
      const channel = await connection.createConfirmChannel()
      for (const { messageId, body } of bodies) {
        channel.publish(Exchanges.replies, "geometry.mesh", Buffer.from(body, "utf8"), {
          messageId,
          contentType: "application/json",
          persistent: true
        })
      }
      await channel.waitForConfirms()
      await channel.close()
    })
  }).pipe(Effect.scoped)

export interface DeadLetter {
  readonly messageId: string
  readonly body: string
  readonly headers: Readonly<Record<string, unknown>>
}

/** Takes `count` messages out of the dead-letter queue, waiting for them until the deadline. */
export const takeDeadLetters = (count: number, deadline: number) =>
  Effect.gen(function* () {
    const { endpoints } = yield* Deployment
    const connection = yield* adminConnection(endpoints.vhost, endpoints.rabbit)
    const channel = yield* Effect.promise(() => connection.createChannel())
    const taken: Array<DeadLetter> = []
    const begin = yield* Clock.currentTimeMillis
    while (taken.length < count) {
      if ((yield* Clock.currentTimeMillis) - begin > deadline) {
        return yield* Effect.die(new Error(`only ${taken.length} of ${count} dead letters within ${deadline} ms`))
      }
      const message = yield* Effect.promise(() => channel.get(Queues.deadLetters, { noAck: true }))
      if (message === false) yield* Effect.sleep("50 millis")
      else {
        taken.push({
          messageId: String(message.properties.messageId ?? ""),
          body: message.content.toString("utf8"),
          headers: message.properties.headers ?? {}
        })
      }
    }
    return taken
  }).pipe(Effect.scoped)

/** One line of the worker's effects file (test/worker/worker.ts `AppliedEffect`). */
const AppliedEffect = Schema.Struct({
  taskId: Schema.String,
  sagaId: Schema.String,
  taskType: Schema.String,
  attempt: Schema.Number,
  outcome: Schema.Literals(["succeeded", "failed"])
})
export type AppliedEffect = typeof AppliedEffect.Type
const decodeEffect = Schema.decodeUnknownEffect(Schema.fromJsonString(AppliedEffect))

/** The cancellation notices the worker received, in order (test/worker/worker.ts writes them down). */
export const cancellationsReceived = Effect.gen(function* () {
  const { effectsFile } = yield* Deployment
  const file = cancellationsFileOf(effectsFile)
  const text = existsSync(file) ? readFileSync(file, "utf8") : ""
  return yield* Effect.forEach(text.split("\n").filter(Boolean), (line) => decodeCancellation(line).pipe(Effect.orDie))
})

/** What the worker's effects file says it applied, in order. */
export const appliedEffects = Effect.gen(function* () {
  const { effectsFile } = yield* Deployment
  const text = existsSync(effectsFile) ? readFileSync(effectsFile, "utf8") : ""
  return yield* Effect.forEach(text.split("\n").filter(Boolean), (line) => decodeEffect(line).pipe(Effect.orDie))
})
