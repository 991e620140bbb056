/**
 * The checks at the end of a run: each saga against its plan, and the deployment against "nothing extra, nothing left
 * over".
 */
import { assert } from "@effect/vitest"
import { Effect, Option, Schema } from "effect"
import { Queues } from "../../../src/domain/Messages.ts"
import { SagaId, type Transition } from "../../../src/domain/Saga.ts"
import { SagaStore } from "../../../src/store/SagaStore.ts"
import { type AppliedEffect, appliedEffects, queueDepth } from "./deployment.ts"
import { expected, type Started } from "./plans.ts"

/** A transition that sent a task names it in its detail (the SagaStarted row names the first one). */
const SentTask = Schema.Struct({ taskId: Schema.String, attempt: Schema.Number })
const sentTask = Schema.decodeUnknownOption(SentTask)
const IgnoredReply = Schema.Struct({ taskId: Schema.String })
const ignoredReply = Schema.decodeUnknownOption(IgnoredReply)

/** The tasks a saga's history says it sent: task id → attempt. */
const tasksSent = (history: ReadonlyArray<Transition>) => {
  const sent = new Map<string, number>()
  for (const transition of history) {
    const task = sentTask(transition.detail)
    if (Option.isSome(task)) sent.set(task.value.taskId, task.value.attempt)
  }
  return sent
}

const show = (effect: AppliedEffect) => `${effect.sagaId} ${effect.taskType}#${effect.attempt} ${effect.taskId}`

export interface VerifyOptions {
  /**
   * `exact`: each saga recorded exactly its plan's ignored replies. `atLeast`: an outage may add redelivered replies
   * (a reply applied, its acknowledgement lost), all of them to the saga's own tasks.
   */
  readonly ignored: "exact" | "atLeast"
}

/**
 * Checks the sagas against their plans, and the whole deployment against "nothing extra, nothing left over": every
 * effect the worker applied belongs to a task its saga's history sent (no phantom task), no task was applied twice,
 * each saga's versions run 0..n without gaps, and the outbox and the dead-letter queue are empty.
 */
export const verify = Effect.fnUntraced(function* (started: ReadonlyArray<Started>, options: VerifyOptions) {
  const store = yield* SagaStore
  const effects = yield* appliedEffects

  const applications = new Map<string, number>()
  for (const effect of effects) applications.set(effect.taskId, (applications.get(effect.taskId) ?? 0) + 1)
  const twice = effects.filter((effect) => (applications.get(effect.taskId) ?? 0) > 1)
  assert.deepStrictEqual(twice.map(show), [], "effects applied twice")

  // Every effect in the file, whichever test started its saga: its saga exists and sent that task.
  const sentBySaga = new Map<string, Map<string, number>>()
  for (const effect of effects) {
    if (!sentBySaga.has(effect.sagaId)) {
      const history = yield* Schema.decodeUnknownEffect(SagaId)(effect.sagaId).pipe(
        Effect.flatMap(store.history),
        Effect.orElseSucceed((): ReadonlyArray<Transition> => [])
      )
      sentBySaga.set(effect.sagaId, tasksSent(history))
    }
  }
  const phantoms = effects.filter((effect) => sentBySaga.get(effect.sagaId)?.get(effect.taskId) !== effect.attempt)
  assert.deepStrictEqual(phantoms.map(show), [], "effects of tasks no saga sent")

  for (const { plan, repo, id } of started) {
    const plannedEnd = expected[plan]
    const saga = yield* store.get(id)
    const history = yield* store.history(id)
    assert.deepStrictEqual(
      { repo, status: saga.status, history: history.map((t) => `${t.toState} ${t.event}`) },
      { repo, status: plannedEnd.status, history: [...plannedEnd.history] }
    )
    // One transition per version, 0..n: no step applied twice, none lost.
    assert.deepStrictEqual(
      history.map((t) => t.lockVersion),
      history.map((_, v) => v),
      repo
    )
    assert.strictEqual(saga.lockVersion, history.length - 1, repo)
    assert.deepStrictEqual(
      effects.filter((e) => e.sagaId === id).map((e) => `${e.taskType}#${e.attempt}`),
      [...plannedEnd.tasks],
      `${repo}: effects applied`
    )
    const sent = tasksSent(history)
    const ignored = yield* store.ignoredEvents(id)
    if (options.ignored === "exact") assert.strictEqual(ignored.length, plannedEnd.ignored, `${repo}: ignored replies`)
    else assert.isAtLeast(ignored.length, plannedEnd.ignored, `${repo}: ignored replies`)
    for (const event of ignored) {
      const reply = ignoredReply(event.detail)
      assert.strictEqual(event.event, "ReplyIgnored", repo)
      assert.isTrue(Option.isSome(reply) && sent.has(reply.value.taskId), `${repo}: ignored a reply to its own task`)
    }
  }
  assert.strictEqual((yield* store.summary).outboxPending, 0, "outbox messages left")
  assert.strictEqual(yield* queueDepth(Queues.deadLetters), 0, "dead-lettered messages")
})
