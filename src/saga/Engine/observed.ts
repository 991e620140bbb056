/**
 * What the engine tells operators about a step: span attributes, log annotations, metrics and log lines. Metrics and
 * logs are written only once a transition committed, from what the committing attempt saw: a transaction the store
 * retried is counted once, and a reply the saga ignored moves nothing.
 */
import { Clock, Effect, Option, type Tracer } from "effect"
import { isActive, type SagaInstance } from "../../domain/Saga.ts"
import * as Metrics from "../../observability/Metrics.ts"
import { type Loaded, readProgress, taskStep } from "./moves.ts"

export const spanAttributes = (saga: SagaInstance) => ({
  "saga.id": saga.id,
  "saga.type": saga.sagaType,
  "correlation.id": saga.correlationId
})

export const logAnnotations = (saga: SagaInstance) => ({
  sagaId: saga.id,
  sagaType: saga.sagaType,
  correlationId: saga.correlationId
})

/** Puts the saga's attributes on the engine's span for this event. */
export const annotateStepSpan = (span: Option.Option<Tracer.Span>, saga: SagaInstance) => {
  if (Option.isNone(span)) return
  for (const [key, value] of Object.entries(spanAttributes(saga))) span.value.attribute(key, value)
  span.value.attribute("saga.state", saga.currentState)
  span.value.attribute("saga.lock_version", saga.lockVersion)
}

/** The step or compensation the saga was waiting on when the event arrived. */
export const awaitedStep = ({ definition, progress }: Loaded): string => {
  const undoing = progress.compensation?.pending[0]
  if (undoing !== undefined) return taskStep(definition, undoing)?.compensation?.name ?? undoing
  return definition.steps[progress.step]?.name ?? "none"
}

/** The saga counters of every known type from 0. */
export const registerSagaTypes = (sagaTypes: ReadonlyArray<string>) =>
  Effect.forEach(new Set(sagaTypes), Metrics.registerSagaType, { discard: true })

/** A saga was created. */
export const started = (saga: SagaInstance) =>
  Effect.all([Metrics.countStarted(saga.sagaType), Effect.logInfo(`saga started in ${saga.currentState}`)], {
    discard: true
  }).pipe(Effect.annotateLogs(logAnnotations(saga)))

/**
 * After `transact` returned `after` for the attempt that saw `before`: counts and logs what changed.
 * `receivedAt` (epoch millis) is when the reply that caused it arrived, for the step latency.
 */
export const committed = (before: Loaded, after: SagaInstance, receivedAt: number | undefined) =>
  Effect.gen(function* () {
    if (after.lockVersion === before.saga.lockVersion) return
    if (receivedAt !== undefined) {
      const seconds = ((yield* Clock.currentTimeMillis) - receivedAt) / 1000
      yield* Metrics.observeStepLatency(after.sagaType, awaitedStep(before), Math.max(0, seconds))
    }
    const moved = `${before.saga.currentState} -> ${after.currentState}`
    if (after.status === before.saga.status || isActive(after.status)) {
      return yield* Effect.logDebug(`saga moved ${moved} (${after.status})`)
    }
    yield* Metrics.countFinished(after.sagaType, after.status)
    if (after.status !== "FAILED") return yield* Effect.logInfo(`saga ${after.status.toLowerCase()}: ${moved}`)
    // Step, code and message of the failure as the engine recorded it; never context values.
    const reason = yield* readProgress(after).pipe(
      Effect.map((progress) => progress.compensation?.reason),
      Effect.orElseSucceed(() => undefined)
    )
    yield* Effect.logWarning(`saga failed: ${moved}`, ...(reason === undefined ? [] : [reason]))
  }).pipe(Effect.annotateLogs(logAnnotations(after)))
