/**
 * The saga engine. Every event — a worker's reply, a signal, a due timer, an operator's retry or cancel — is applied
 * through `SagaStore.transact`, so each change is one locked, versioned transaction writing state, outbox messages,
 * timer and history together. The decisions themselves live in `Engine/transitions.ts`.
 */
import { Clock, Context, DateTime, Effect, Layer, Option, Schema } from "effect"
import { SecureRandom } from "effect/crypto"
import { SagaNotFound, type StoreUnavailable } from "../domain/errors.ts"
import type { HeartbeatMessage, ReplyMessage } from "../domain/Messages.ts"
import { awaitedTaskId, heartbeatJson } from "../domain/Progress.ts"
import { type DueTimer, isActive, SagaId, type SagaInstance } from "../domain/Saga.ts"
import * as Random from "../random.ts"
import type { Created, CreateSaga, TransactError } from "../store/SagaStore.ts"
import { SagaStore } from "../store/SagaStore.ts"
import type { AnySagaDefinition } from "./Definition.ts"
import { begin, heartbeatDue, type Loaded, readProgress } from "./Engine/moves.ts"
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
    /**
     * Records a worker's heartbeat for the task the saga waits for, pushing the attempt's heartbeat deadline on;
     * returns whether it counted. One for any other task (late, unknown, for a saga that moved on) changes nothing.
     */
    readonly heartbeat: (
      message: HeartbeatMessage
    ) => Effect.Effect<boolean, StoreUnavailable | UnknownDefinitionVersion | CorruptProgress>
    /** Fires a claimed timer: a step timeout, a retry back-off, or a signal deadline. */
    readonly fire: (timer: DueTimer) => Driven
    /** Operator repair: sends the current task again (a stuck compensation too). */
    readonly retry: (sagaId: SagaId, expectedVersion?: number) => Driven<SagaFinished | NothingToRetry>
    /** Operator cancel: compensates what was done and ends CANCELLED. */
    readonly cancel: (sagaId: SagaId, expectedVersion?: number) => Driven<SagaFinished>
  }
>()("saga-orchestrator/saga/Engine") {}

const isSagaId = Schema.is(SagaId)

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
      let last: Loaded | undefined
      const step = (saga: SagaInstance) =>
        Effect.gen(function* () {
          Observed.annotateStepSpan(span, saga)
          const progress = yield* readProgress(saga)
          const definition = yield* registry.get(saga.sagaType, progress.version, saga.id)
          last = { saga, definition, context: saga.context, progress }
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
    const first = yield* begin(definition, id, definition.initialContext(decoded)).pipe(
      withRandom,
      // A first step that cannot even build its task is a definition bug, not bad input.
      Effect.orDie
    )
    const create: CreateSaga = {
      id,
      sagaType,
      state: first.state,
      context: first.context,
      progress: first.progress,
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

  const reply = Effect.fn("Engine.reply")(function* (reply: ReplyMessage) {
    yield* Effect.annotateCurrentSpan({ "saga.id": reply.sagaId, "task.id": reply.taskId })
    const receivedAt = yield* Clock.currentTimeMillis
    // The id comes from outside: one that is not even a saga id names no saga (the database would refuse it).
    const sagaId = yield* Schema.decodeUnknownEffect(SagaId)(reply.sagaId).pipe(
      Effect.mapError(() => new SagaNotFound({ sagaId: reply.sagaId }))
    )
    return yield* drive(sagaId, Transitions.onReply(reply), { receivedAt })
  })

  const signal = Effect.fn("Engine.signal")(function* (sagaId: SagaId, name: string, data: unknown) {
    yield* Effect.annotateCurrentSpan({ "saga.id": sagaId, "signal.name": name })
    return yield* drive(sagaId, Transitions.onSignal(name, data))
  })

  const heartbeat = Effect.fn("Engine.heartbeat")(function* (message: HeartbeatMessage) {
    yield* Effect.annotateCurrentSpan({ "saga.id": message.sagaId, "task.id": message.taskId })
    if (!isSagaId(message.sagaId)) return false
    const saga = yield* store.get(message.sagaId).pipe(Effect.catchTag("SagaNotFound", () => Effect.succeed(undefined)))
    if (saga === undefined || !isActive(saga.status)) return false
    const progress = yield* readProgress(saga)
    if (awaitedTaskId(progress) !== message.taskId) return false
    const definition = yield* registry.get(saga.sagaType, progress.version, saga.id)
    const step = progress.compensation === undefined ? definition.steps[progress.step] : undefined
    const heartbeatTimeout = step?._tag === "Task" ? step.heartbeatTimeout : undefined
    const dueAt =
      heartbeatTimeout === undefined || progress.deadline === null
        ? undefined
        : yield* heartbeatDue(progress.deadline, heartbeatTimeout)
    const at = yield* DateTime.now
    return yield* store.recordHeartbeat(saga.id, message.taskId, {
      progress: heartbeatJson({ at, ...message.progress }),
      dueAt
    })
  })

  const fire = Effect.fn("Engine.fire")(function* (timer: DueTimer) {
    yield* Effect.annotateCurrentSpan({ "saga.id": timer.sagaId })
    return yield* drive(timer.sagaId, Transitions.onTimer(timer), { expectedVersion: timer.lockVersion })
  })

  const retry = Effect.fn("Engine.retry")(function* (sagaId: SagaId, expectedVersion?: number) {
    yield* Effect.annotateCurrentSpan({ "saga.id": sagaId })
    return yield* drive(sagaId, Transitions.onRetry, { expectedVersion })
  })

  const cancel = Effect.fn("Engine.cancel")(function* (sagaId: SagaId, expectedVersion?: number) {
    yield* Effect.annotateCurrentSpan({ "saga.id": sagaId })
    return yield* drive(sagaId, Transitions.onCancel, { expectedVersion })
  })

  return Engine.of({ start, reply, signal, heartbeat, fire, retry, cancel })
})

/** The engine over the SagaStore and SagaRegistry in context. */
export const layer = Layer.effect(Engine, make).pipe(Layer.provide(Random.layer))
