/**
 * The HTTP server in this process on a free port, over the engine, the in-memory store and the in-memory broker with
 * nothing consuming it: sagas move only when a test answers their tasks (through the engine, as the reply consumer
 * would) or calls the API. Requests go over real HTTP (fetch). No database: these tests are in the unit project.
 */
import { Duration, Effect, Layer, Logger, Option, Redacted, Schema } from "effect"
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
import * as MemorySagaStore from "../../src/store/MemorySagaStore.ts"
import { type SagaPage, SagaStore } from "../../src/store/SagaStore.ts"

export const token = `test-token-${crypto.randomUUID()}`

/** Everything logged while the server runs, to check that no token ever shows. */
export const logged: Array<string> = []

const capture = Logger.make(({ message, cause }) => {
  logged.push(`${JSON.stringify(message)} ${String(cause)}`)
})

/** The server over a given store (and whatever else that layer provides, e.g. its test database). */
export const layerOn = <A, E>(store: Layer.Layer<A | SagaStore, E>) =>
  Server.layerPort(0).pipe(
    Layer.provide(Layer.succeed(ApiTokens, ApiTokens.make([Redacted.make(token)]))),
    Layer.provideMerge(engineLayer),
    Layer.provideMerge(SagaRegistry.layer(definitions)),
    Layer.provideMerge(MemoryBroker.layerMemory),
    Layer.provideMerge(store),
    Layer.provide(Logger.layer([capture]))
  )

/** On the in-memory store. */
export const layer = layerOn(MemorySagaStore.layerMemory())

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

/** Every saga in the store, newest first. */
const allSagas = Effect.gen(function* () {
  const store = yield* SagaStore
  const sagas: Array<SagaPage["items"][number]> = []
  let cursor: string | undefined
  do {
    const page = yield* store.find({ limit: 500, cursor })
    sagas.push(...page.items)
    cursor = page.nextCursor ?? undefined
  } while (cursor !== undefined)
  return sagas
})

/**
 * Everything the API could change, in one line: every saga (version, state, status, context, progress, timestamps) with its
 * history and ignored events, what each waits for (its timer included), and the outbox backlog.
 */
export const snapshot = Effect.gen(function* () {
  const store = yield* SagaStore
  const sagas = yield* allSagas
  const histories = yield* Effect.forEach(sagas, (saga) => store.history(saga.id))
  const ignored = yield* Effect.forEach(sagas, (saga) => store.ignoredEvents(saga.id))
  const waiting = yield* store.findStuck(Duration.zero, { limit: 100_000 })
  const { outboxPending } = yield* store.summary
  return JSON.stringify({ sagas, histories, ignored, waiting, outboxPending })
}).pipe(Effect.orDie)
