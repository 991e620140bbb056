/**
 * The chaos run's verdict, from what the state store recorded and what the test worker applied (its effects file):
 * every saga ended as its plan says, with a gap-free history; every task the worker applied is one its saga's
 * history sent (no phantom tasks), none was applied twice and none was lost; nothing is left in the dead-letter
 * queue, the outbox or the timers. Redeliveries the chaos caused are counted: tasks the worker received again and
 * replies the sagas received again, both deduplicated.
 */
import { readFileSync } from "node:fs"
import { Effect, Option, Schema } from "effect"
import type { SagaId, Transition } from "../../src/domain/Saga.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { compensationTaskTypes, expectations, type Plan } from "./plans.ts"

export interface StartedSaga {
  readonly index: number
  readonly plan: Plan
  readonly repo: string
  readonly id: SagaId
}

/** One line of the worker's effects file (test/worker/worker.ts `AppliedEffect`). */
const AppliedEffect = Schema.Struct({
  taskId: Schema.String,
  sagaId: Schema.String,
  taskType: Schema.String,
  attempt: Schema.Number,
  outcome: Schema.String
})
type AppliedEffect = typeof AppliedEffect.Type
const decodeEffect = Schema.decodeUnknownSync(Schema.fromJsonString(AppliedEffect))

export const readEffects = (file: string): ReadonlyArray<AppliedEffect> =>
  readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => decodeEffect(line))

/** A history row that sent a task names it: `{ taskId, attempt }` and `taskType` (or the compensation's name). */
const SentTask = Schema.Struct({
  taskId: Schema.String,
  attempt: Schema.Number,
  taskType: Schema.optionalKey(Schema.String),
  compensation: Schema.optionalKey(Schema.String)
})
const sentTask = Schema.decodeUnknownOption(SentTask)
const IgnoredReply = Schema.Struct({ taskId: Schema.String })
const ignoredReply = Schema.decodeUnknownOption(IgnoredReply)

interface Sent {
  readonly taskType: string
  readonly attempt: number
}

const tasksSent = (history: ReadonlyArray<Transition>): ReadonlyMap<string, Sent> => {
  const sent = new Map<string, Sent>()
  for (const transition of history) {
    const task = sentTask(transition.detail)
    if (Option.isNone(task)) continue
    const { taskId, attempt, taskType, compensation } = task.value
    const type = taskType ?? (compensation === undefined ? undefined : compensationTaskTypes.get(compensation))
    sent.set(taskId, { taskType: type ?? "?", attempt })
  }
  return sent
}

export interface Facts {
  readonly started: ReadonlyArray<StartedSaga>
  readonly effects: ReadonlyArray<AppliedEffect>
  /** The worker's own count of tasks it received again and did not apply again; undefined if it did not say. */
  readonly workerRepeated: number | undefined
  readonly deadLetters: number
  readonly outbox: number
  readonly timers: number
}

export interface Check {
  readonly name: string
  /** NOTE: worth knowing, not a failure. */
  readonly status: "PASS" | "FAIL" | "NOTE"
  readonly detail: string
  /** Up to a few examples of what failed (or of what a NOTE is about). */
  readonly examples: ReadonlyArray<string>
}

export const check = (name: string, failures: ReadonlyArray<string>, detail: string): Check => ({
  name,
  status: failures.length === 0 ? "PASS" : "FAIL",
  detail: failures.length === 0 ? detail : `${failures.length} failed; ${detail}`,
  examples: failures.slice(0, 8)
})

const sameSteps = (a: ReadonlyArray<readonly [string, string]>, b: ReadonlyArray<readonly [string, string]>) =>
  a.length === b.length && a.every(([state, event], i) => b[i]?.[0] === state && b[i]?.[1] === event)

export const verify = (facts: Facts) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const loaded = yield* Effect.forEach(
      facts.started,
      (started) =>
        Effect.all({
          saga: store.get(started.id),
          history: store.history(started.id),
          ignored: store.ignoredEvents(started.id)
        }).pipe(Effect.map((state) => ({ started, ...state }))),
      { concurrency: 8 }
    )

    const byId = new Map(loaded.map((entry) => [entry.started.id as string, entry]))
    const appliedBySaga = new Map<string, Array<AppliedEffect>>()
    for (const effect of facts.effects) {
      const list = appliedBySaga.get(effect.sagaId) ?? []
      list.push(effect)
      appliedBySaga.set(effect.sagaId, list)
    }

    const notTerminal: Array<string> = []
    const versionGaps: Array<string> = []
    const historyOff: Array<string> = []
    const phantoms: Array<string> = []
    const twice: Array<string> = []
    const lostOrOff: Array<string> = []
    const foreignIgnored: Array<string> = []
    let ignoredReplies = 0
    let scriptedExtras = 0
    // Replies ignored beyond the scripted copies: a reply delivered again after its orchestrator died, or the reply to
    // a task the worker received again. Late copies the worker could not publish make this an undercount.
    let redeliveredReplies = 0

    for (const { started, saga, history, ignored } of loaded) {
      const expected = expectations[started.plan]
      const label = started.repo
      if (saga.status !== expected.status) {
        notTerminal.push(`${label}: ${saga.status} in ${saga.currentState}, expected ${expected.status}`)
      }
      const versions = history.map((t) => t.lockVersion)
      if (!versions.every((v, i) => v === i) || saga.lockVersion !== history.length - 1) {
        versionGaps.push(`${label}: saga at version ${saga.lockVersion}, history versions [${versions.join(",")}]`)
      }
      const steps = history.map((t) => [t.toState, t.event] as const)
      if (!sameSteps(steps, expected.history)) {
        historyOff.push(`${label}: ${steps.map(([state, event]) => `${event}→${state}`).join(", ")}`)
      }
      const sent = tasksSent(history)
      const applied = appliedBySaga.get(saga.id) ?? []
      for (const effect of applied) {
        const task = sent.get(effect.taskId)
        if (task === undefined || task.taskType !== effect.taskType || task.attempt !== effect.attempt) {
          phantoms.push(`${label}: applied ${effect.taskType}#${effect.attempt} (${effect.taskId}), not in its history`)
        }
      }
      const appliedIds = new Set(applied.map((effect) => effect.taskId))
      const appliedSteps = applied.map((effect) => `${effect.taskType}#${effect.attempt}`)
      const lost = [...sent.keys()].filter((taskId) => !appliedIds.has(taskId))
      if (lost.length > 0 || appliedSteps.join(" ") !== expected.tasks.join(" ")) {
        lostOrOff.push(`${label}: applied [${appliedSteps.join(", ")}], never applied ${lost.length} sent task(s)`)
      }
      if (new Set(appliedSteps).size !== appliedSteps.length) {
        twice.push(`${label}: one step applied twice under different task ids: [${appliedSteps.join(", ")}]`)
      }
      ignoredReplies += ignored.length
      scriptedExtras += expected.extraReplies
      redeliveredReplies += Math.max(0, ignored.length - expected.extraReplies)
      for (const event of ignored) {
        const reply = ignoredReply(event.detail)
        if (Option.isNone(reply) || !sent.has(reply.value.taskId)) {
          foreignIgnored.push(`${label}: ignored ${event.event} ${JSON.stringify(event.detail)}`)
        }
      }
    }

    for (const effect of facts.effects) {
      if (!byId.has(effect.sagaId)) phantoms.push(`task ${effect.taskId} for saga ${effect.sagaId}, not started here`)
    }
    const seen = new Set<string>()
    for (const effect of facts.effects) {
      if (seen.has(effect.taskId)) twice.push(`task ${effect.taskId} (${effect.taskType}) applied twice`)
      seen.add(effect.taskId)
    }

    const repeated = facts.workerRepeated ?? 0
    const checks: ReadonlyArray<Check> = [
      check(
        "the worker reported its counts",
        facts.workerRepeated === undefined ? ["no {applied, repeated} line in its output"] : [],
        "on SIGTERM"
      ),
      check("every saga terminal, as its plan says", notTerminal, `${loaded.length} sagas`),
      check("lock versions 0..n, no gap, no duplicate", versionGaps, `${loaded.length} histories`),
      check("history as planned", historyOff, "every transition in its order"),
      check("no phantom tasks", phantoms, `${facts.effects.length} tasks applied, each sent by its saga's history`),
      check("no task applied twice", twice, `${seen.size} distinct task ids`),
      check("every task sent was applied, as planned", lostOrOff, "none lost, none extra"),
      check("ignored replies are the saga's own", foreignIgnored, `${ignoredReplies} ignored replies`),
      {
        name: "redeliveries seen and deduplicated",
        // Whether the chaos catches a message between its effect and its acknowledgement is a matter of timing.
        status: repeated + redeliveredReplies > 0 ? "PASS" : "NOTE",
        detail:
          `worker received ${facts.workerRepeated ?? "?"} task(s) again; sagas ignored ${redeliveredReplies} ` +
          `reply(ies) beyond the ${scriptedExtras} scripted copies` +
          (repeated + redeliveredReplies > 0 ? "" : " (no redelivery this time: only the scripted copies were tested)"),
        examples: []
      },
      check("dead-letter queue empty", facts.deadLetters === 0 ? [] : [`${facts.deadLetters}`], `${facts.deadLetters}`),
      check("outbox empty", facts.outbox === 0 ? [] : [`${facts.outbox}`], `${facts.outbox} rows`),
      check("no timers left", facts.timers === 0 ? [] : [`${facts.timers}`], `${facts.timers} rows`)
    ]
    return checks
  })

export const formatChecks = (checks: ReadonlyArray<Check>): string => {
  const width = Math.max(...checks.map((c) => c.name.length))
  return checks
    .flatMap((c) => [
      `  ${c.status}  ${c.name.padEnd(width)}  ${c.detail}`,
      ...c.examples.map((example) => `          ${example}`)
    ])
    .join("\n")
}
