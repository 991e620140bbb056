/** From the domain's classes to the API's representations (src/http/Api/Representations.ts). */
import { type Duration, Option, Schema } from "effect"
import * as Domain from "../../domain/Progress.ts"
import type { Awaiting, SagaInstance, StuckSaga, Transition } from "../../domain/Saga.ts"
import type { SagaPage } from "../../store/SagaStore.ts"
import type * as R from "../Api/Representations.ts"

const decodeProgress = Schema.decodeUnknownOption(Domain.Progress)

const awaited = (awaiting: Awaiting): R.Progress["awaiting"] => {
  switch (awaiting._tag) {
    case "Reply":
      return { kind: "reply", taskId: awaiting.taskId, taskType: awaiting.taskType }
    case "Signal":
      return { kind: "signal", name: awaiting.name }
    case "Timer":
      return { kind: "timer", reason: awaiting.reason }
  }
}

/** The engine's bookkeeping as documented; null when this version cannot read what is stored. */
export const progress = (instance: SagaInstance): R.Progress | null =>
  decodeProgress(instance.progress).pipe(
    Option.map(
      (p): R.Progress => ({
        definitionVersion: p.version,
        step: p.step,
        attempt: p.attempt,
        awaiting: p.awaiting === null ? null : awaited(p.awaiting),
        deadline: p.deadline,
        heartbeat: p.heartbeat ?? null,
        completed: p.completed,
        compensation:
          p.compensation === undefined
            ? null
            : {
                outcome: p.compensation.outcome,
                pending: p.compensation.pending,
                reason: p.compensation.reason,
                stuck: p.compensation.stuck ?? null
              }
      })
    ),
    Option.getOrNull
  )

export const saga = (instance: SagaInstance): R.Saga => ({
  id: instance.id,
  sagaType: instance.sagaType,
  currentState: instance.currentState,
  status: instance.status,
  context: instance.context,
  progress: progress(instance),
  correlationId: instance.correlationId,
  lockVersion: instance.lockVersion,
  createdAt: instance.createdAt,
  updatedAt: instance.updatedAt
})

/** `"<lock_version>"`: a strong entity tag; the version changes with every write, so it identifies the state. */
export const etag = (instance: SagaInstance): string => `"${instance.lockVersion}"`

/**
 * The instance with its history. History and instance are read one after the other; as history is append-only,
 * keeping the rows up to the instance's version gives a consistent picture even when the saga moved in between.
 */
export const withHistory = (instance: SagaInstance, history: ReadonlyArray<Transition>) => ({
  ...saga(instance),
  history: history
    .filter((row) => row.lockVersion <= instance.lockVersion)
    .map((row) => ({
      lockVersion: row.lockVersion,
      fromState: row.fromState,
      toState: row.toState,
      status: row.status,
      event: row.event,
      at: row.at
    }))
})

/** A saga without a timer waits for nothing automatic: a compensation that kept failing waits for an operator. */
const operatorReason = (instance: SagaInstance): string =>
  decodeProgress(instance.progress).pipe(
    Option.flatMap(({ compensation }) => Option.fromUndefinedOr(compensation?.stuck)),
    Option.match({
      onNone: () => "no reply, timer or signal is awaited: retry or cancel it (POST …/retry, …/cancel)",
      onSome: (stuck) =>
        `compensation ${stuck.step} kept failing (${stuck.code}: ${stuck.message}); retry it once the cause is fixed`
    })
  )

export const stuck = ({ saga: instance, timer }: StuckSaga): typeof R.StuckSaga.Type => {
  if (timer === null) {
    return { saga: saga(instance), waitingFor: { kind: "operator", reason: operatorReason(instance) } }
  }
  const awaiting = timer.awaiting
  switch (awaiting._tag) {
    case "Reply":
      return {
        saga: saga(instance),
        waitingFor: { kind: "reply", taskId: awaiting.taskId, taskType: awaiting.taskType, dueAt: timer.dueAt }
      }
    case "Signal":
      return { saga: saga(instance), waitingFor: { kind: "signal", name: awaiting.name, dueAt: timer.dueAt } }
    case "Timer":
      return { saga: saga(instance), waitingFor: { kind: "timer", reason: awaiting.reason, dueAt: timer.dueAt } }
  }
}

export const page = (found: SagaPage): R.SagaPage => ({ items: found.items.map(saga), nextCursor: found.nextCursor })

export const stuckSagas =
  (olderThan: Duration.Duration) =>
  (found: ReadonlyArray<StuckSaga>): R.StuckSagas => ({ olderThan, items: found.map(stuck) })
