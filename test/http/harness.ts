/**
 * The HTTP server in this process on a free port, over the engine and the PostgreSQL store of a test database, with
 * the in-memory broker and nothing consuming it: sagas move only when a test answers their tasks (through the
 * engine, as the reply consumer would) or calls the API. Requests go over real HTTP (fetch).
 */
import { Effect, Layer, Logger, Option, Redacted, Schema } from "effect"
import { HttpServer, ProblemDetails } from "effect/http"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import { awaitedTaskId } from "../../src/domain/Progress.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { ApiTokens } from "../../src/http/ApiTokens.ts"
import * as Server from "../../src/http/Server.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import { Engine, layer as engineLayer } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { layerStore, TestDatabase } from "../utils/TestDatabase.ts"

export const token = `test-token-${crypto.randomUUID()}`

/** Everything logged while the server runs, to check that no token ever shows. */
export const logged: Array<string> = []

const capture = Logger.make(({ message, cause }) => {
  logged.push(`${JSON.stringify(message)} ${String(cause)}`)
})

export const layer = Server.layerPort(0).pipe(
  Layer.provide(Layer.succeed(ApiTokens, ApiTokens.make([Redacted.make(token)]))),
  Layer.provideMerge(engineLayer),
  Layer.provideMerge(SagaRegistry.layer(definitions)),
  Layer.provideMerge(MemoryBroker.layer),
  Layer.provideMerge(layerStore()),
  Layer.provide(Logger.layer([capture]))
)

export interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
}

export interface Call {
  readonly body?: unknown
  /** Sent as is instead of `body`'s JSON. */
  readonly raw?: string
  /** `null`: no Authorization header; default: the valid token. */
  readonly token?: string | null
  readonly headers?: Record<string, string>
}

export const call = (method: string, path: string, options: Call = {}) =>
  Effect.gen(function* () {
    const server = yield* HttpServer.HttpServer
    const port = server.address._tag === "UnixPathAddress" ? 0 : server.address.port
    const headers: Record<string, string> = { ...options.headers }
    const bearer = options.token === undefined ? token : options.token
    if (bearer !== null) headers.authorization = `Bearer ${bearer}`
    const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body))
    if (body !== undefined) headers["content-type"] ??= "application/json"
    return yield* Effect.promise(async (): Promise<Reply> => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, { method, headers, body: body ?? null })
      return { status: response.status, headers: response.headers, text: await response.text() }
    })
  })

/** The body decoded with an API representation, refusing any key the representation does not have. */
export const decode = <S extends Schema.Decoder<unknown>>(reply: Reply, schema: S): S["Type"] =>
  Schema.decodeUnknownSync(schema)(JSON.parse(reply.text), { onExcessProperty: "error" })

/** A problem details body, with its extension members. */
export const problem = (reply: Reply): ProblemDetails.ProblemDetails => {
  if (!reply.headers.get("content-type")?.startsWith("application/problem+json")) {
    throw new Error(`expected a problem, got ${reply.status} ${reply.headers.get("content-type")}: ${reply.text}`)
  }
  return Schema.decodeUnknownSync(ProblemDetails.Schema)(JSON.parse(reply.text))
}

export const input = (overrides: Record<string, unknown> = {}) => ({
  repo: "balance/plant-7",
  baseBranch: "main",
  inputRef: `inputs/${crypto.randomUUID()}.yaml`,
  requestedBy: "http-test",
  ...overrides
})

/** Answers the task the saga waits for, as a worker would, through the engine. */
export const answer = (sagaId: SagaId, result: Record<string, string>) =>
  Effect.gen(function* () {
    const saga = yield* SagaStore.use((store) => store.get(sagaId))
    const progress = yield* readProgress(saga)
    const taskId = Option.getOrThrow(Option.fromNullishOr(awaitedTaskId(progress)))
    return yield* Engine.use((engine) =>
      engine.reply({ sagaId, taskId, outcome: "succeeded", result: result as never })
    )
  }).pipe(Effect.orDie)

/** Drives a fresh saga to AWAITING_CONDENSER_INPUT. */
export const toCondenserInput = (sagaId: SagaId) =>
  answer(sagaId, { branch: "calc/x", commitSha: "abc123" }).pipe(
    Effect.andThen(answer(sagaId, { meshRef: "meshes/x.msh" }))
  )

/**
 * Everything the API could change, in one line: every saga row (version, state, status, context, progress,
 * timestamps) and
 * the row counts of history, outbox, timers, idempotency keys and ignored events.
 */
export const snapshot = Effect.flatMap(TestDatabase, (db) =>
  db.superuser(`
    SELECT concat_ws(' | ',
      (SELECT md5(coalesce(string_agg(
          concat_ws(',', id, lock_version, current_state, status, context::text, progress::text, correlation_id,
            updated_at),
          ';' ORDER BY id), '')) FROM orchestrator.saga_instances),
      (SELECT count(*) FROM orchestrator.saga_instances),
      (SELECT count(*) FROM orchestrator.saga_transitions),
      (SELECT count(*) FROM orchestrator.saga_outbox),
      (SELECT count(*) FROM orchestrator.saga_timers),
      (SELECT count(*) FROM orchestrator.saga_idempotency_keys),
      (SELECT count(*) FROM orchestrator.saga_ignored_events))`)
)
