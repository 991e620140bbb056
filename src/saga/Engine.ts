/**
 * The saga engine. Every event — a worker's reply, a signal, a due timer, an operator's retry or cancel — is applied
 * through `SagaStore.transact`, so each change is one locked, versioned transaction writing state, outbox messages,
 * timer and history together. The decisions themselves live in `Engine/transitions.ts`.
 */
import { Clock, Context, Effect, Layer, Option, Schema } from "effect"
import { SecureRandom } from "effect/crypto"
import { SagaNotFound } from "../domain/errors.ts"
import type { ReplyMessage } from "../domain/Messages.ts"
import { type DueTimer, SagaId, type SagaInstance } from "../domain/Saga.ts"
import * as Random from "../random.ts"
import type { Created, CreateSaga, TransactError } from "../store/SagaStore.ts"
import { SagaStore } from "../store/SagaStore.ts"
import type { AnySagaDefinition } from "./Definition.ts"
import * as Observed from "./Engine/observed.ts"
import * as Transitions from "./Engine/transitions.ts"
import {
  type CorruptProgress,
  InvalidSagaInput,
  type InvalidSignalData,
  type NothingToRetry,
  type SagaFinished,
  type SignalNotExpected,
  type UnknownDefinitionVersion,
  type UnknownSagaType
} from "./errors.ts"
import { SagaRegistry } from "./Registry.ts"

export interface StartOptions {
  readonly correlationId?: string | undefined
  readonly idempotencyKey?: string | undefined
}

type Driven<E = never> = Effect.Effect<SagaInstance, E | TransactError | UnknownDefinitionVersion | CorruptProgress>

export class Engine extends Context.Service<
  Engine,
  {
    /** Starts a saga of the newest version of its type; its first task is in the outbox when this returns. */
    readonly start: (
      sagaType: string,
      input: unknown,
      options?: StartOptions
    ) => Effect.Effect<Created, UnknownSagaType | InvalidSagaInput | Exclude<CreateError, never>>
    /** Applies a worker's reply; a reply the saga is not waiting for is recorded and changes nothing. */
    readonly reply: (reply: ReplyMessage) => Driven
    /** Delivers a signal (human input); refused with a typed error, changing nothing, when unexpected or invalid. */
    readonly signal: (sagaId: SagaId, name: string, data: unknown) => Driven<SignalNotExpected | InvalidSignalData>
    /** Fires a claimed timer: a step timeout, a retry back-off, or a signal deadline. */
    readonly fire: (timer: DueTimer) => Driven
    /** Operator repair: sends the current task again (a stuck compensation too). */
    readonly retry: (sagaId: SagaId, expectedVersion?: number) => Driven<SagaFinished | NothingToRetry>
    /** Operator cancel: compensates what was done and ends CANCELLED. */
    readonly cancel: (sagaId: SagaId, expectedVersion?: number) => Driven<SagaFinished>
  }
>()("saga-orchestrator/saga/Engine") {}

type CreateError = Effect.Error<ReturnType<SagaStore["Service"]["create"]>>

interface DriveOptions {
  readonly expectedVersion?: number | undefined
  /** When the reply being applied arrived (epoch millis), for the step latency. */
  readonly receivedAt?: number | undefined
}

export const make = Effect.gen(function* () {
  const store = yield* SagaStore
  const registry = yield* SagaRegistry
  yield* Observed.registerSagaTypes(registry.definitions.map((definition) => definition.type))
  const random = yield* SecureRandom.SecureRandom
  // The decisions draw task ids from the engine's SecureRandom.
  const withRandom = Effect.provideService(SecureRandom.SecureRandom, random)

  /**
   * Loads the definition the saga started with, then applies `decide` in the saga's transaction. Runs in the span of
   * the engine operation (`Engine.reply`, …): the span gets the saga's attributes, and the decision runs with it as
   * the current span (not the store's transaction span), so the tasks it sends name it as their `traceparent`.
   */
  const drive = <E>(sagaId: SagaId, decide: Transitions.Decide<E>, options: DriveOptions = {}) =>
    Effect.gen(function* () {
      const span = yield* Effect.option(Effect.currentSpan)
      // The store may run the step more than once (a retried transaction): the last run is the one that committed.
      let last: Transitions.Loaded | undefined
      const step = (saga: SagaInstance) =>
        Effect.gen(function* () {
          Observed.annotateStepSpan(span, saga)
          const { progress, context } = yield* Transitions.load(saga)
          const definition = yield* registry.get(saga.sagaType, progress.version, saga.id)
          last = { saga, definition, context, progress }
          return yield* decide(last)
        })
      const after = yield* store.transact(
        sagaId,
        (saga) => (Option.isSome(span) ? Effect.withParentSpan(step(saga), span.value) : step(saga)),
        { expectedVersion: options.expectedVersion }
      )
      if (last !== undefined) yield* Observed.committed(last, after, options.receivedAt)
      return after
    }).pipe(withRandom, Effect.annotateLogs({ sagaId }))

  const start = Effect.fn("Engine.start")(function* (sagaType: string, input: unknown, options: StartOptions = {}) {
    const definition: AnySagaDefinition = yield* registry.latest(sagaType)
    const decoded = yield* Schema.decodeUnknownEffect(definition.input)(input, { errors: "all" }).pipe(
      Effect.mapError((error) => InvalidSagaInput.fromSchemaError(sagaType, error))
    )
    const id = (yield* random.uuidV7()) as SagaId
    yield* Effect.annotateCurrentSpan({ "saga.id": id, "saga.type": sagaType })
    const first = yield* Transitions.begin(definition, id, definition.initialContext(decoded)).pipe(
      withRandom,
      // A first step that cannot even build its task is a definition bug, not bad input.
      Effect.orDie
    )
    const create: CreateSaga = {
      id,
      sagaType,
      state: first.state,
      context: first.context,
      correlationId: options.correlationId,
      idempotencyKey: options.idempotencyKey,
      messages: first.messages,
      timer: first.timer,
      detail: first.detail
    }
    const created = yield* store.create(create)
    yield* Effect.annotateCurrentSpan(Observed.spanAttributes(created.saga))
    if (created.created) yield* Observed.started(created.saga)
    return created
  })

  return Engine.of({
    start,
    reply: (reply) =>
      // The id comes from outside: one that is not even a saga id names no saga (the database would refuse it).
      Schema.decodeUnknownEffect(SagaId)(reply.sagaId).pipe(
        Effect.mapError(() => new SagaNotFound({ sagaId: reply.sagaId })),
        Effect.flatMap((sagaId) =>
          Effect.flatMap(Clock.currentTimeMillis, (receivedAt) =>
            drive(sagaId, Transitions.onReply(reply), { receivedAt })
          )
        ),
        Effect.withSpan("Engine.reply", { attributes: { "saga.id": reply.sagaId, "task.id": reply.taskId } })
      ),
    signal: (sagaId, name, data) =>
      drive(sagaId, Transitions.onSignal(name, data)).pipe(
        Effect.withSpan("Engine.signal", { attributes: { "saga.id": sagaId, "signal.name": name } })
      ),
    fire: (timer) =>
      drive(timer.sagaId, Transitions.onTimer(timer), { expectedVersion: timer.lockVersion }).pipe(
        Effect.withSpan("Engine.fire", { attributes: { "saga.id": timer.sagaId } })
      ),
    retry: (sagaId, expectedVersion) =>
      drive(sagaId, Transitions.onRetry, { expectedVersion }).pipe(
        Effect.withSpan("Engine.retry", { attributes: { "saga.id": sagaId } })
      ),
    cancel: (sagaId, expectedVersion) =>
      drive(sagaId, Transitions.onCancel, { expectedVersion }).pipe(
        Effect.withSpan("Engine.cancel", { attributes: { "saga.id": sagaId } })
      )
  })
})

/** The engine over the SagaStore and SagaRegistry in context. */
export const layer = Layer.effect(Engine, make).pipe(Layer.provide(Random.layer))
