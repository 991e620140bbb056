import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Broker, type Delivery } from "../../src/broker/Broker.ts"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import {
  deadLetterReasonHeader,
  decodeReply,
  Exchanges,
  Queues,
  type ReplyMessage,
  type TaskMessage
} from "../../src/domain/Messages.ts"
import * as Workers from "../../src/simulation/Workers.ts"
import { eventually } from "../utils/eventually.ts"

const sagaId = "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192"
const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

const task = (taskType: string, taskId: string, attempt = 1): TaskMessage => ({
  sagaId,
  sagaType: "BALANCE_CALCULATION",
  taskId,
  taskType,
  stepKey: `${sagaId}/${taskType}`,
  attempt,
  replyTo: "orchestrator.replies",
  payload: { repo: "balance/plant-7" }
})

const send = (...tasks: ReadonlyArray<TaskMessage>) =>
  Effect.flatMap(Broker, (broker) =>
    broker.publish(
      tasks.map((t) => ({
        exchange: Exchanges.tasks,
        routingKey: t.taskType,
        messageId: `msg-${t.taskId}`,
        correlationId: "corr-1",
        headers: { traceparent },
        body: JSON.stringify(t)
      }))
    )
  )

/** Replies waiting in `orchestrator.replies`, with the message each came in. */
const replies = Effect.gen(function* () {
  const memory = yield* MemoryBroker.MemoryBroker
  const deliveries = yield* memory.messages(Queues.replies)
  return yield* Effect.forEach(deliveries, (delivery) =>
    Effect.map(decodeReply(delivery.body), (reply): [ReplyMessage, Delivery] => [reply, delivery])
  )
})

/** Waits until `count` replies wait; fails the test if they never do. */
const awaitReplies = (count: number) =>
  eventually(
    `${count} replies`,
    Effect.map(replies, (current) => current.length >= count)
  ).pipe(Effect.andThen(replies))

/** Waits until the workers picked up `count` tasks, so their latency starts now. */
const pickedUp = (count: number) =>
  eventually(
    `the workers picked up ${count} tasks`,
    Effect.flatMap(MemoryBroker.MemoryBroker, (memory) => memory.unacknowledged(Workers.defaultQueue)).pipe(
      Effect.map((unacked) => unacked.length === count)
    )
  )

/** Gives the workers' fibers a chance to run, then returns what waits. */
const quietReplies = Effect.gen(function* () {
  for (let round = 0; round < 50; round++) yield* Effect.yieldNow
  return yield* replies
})

const withWorkers = (options: Workers.Options) =>
  Effect.provide(Workers.layer(options).pipe(Layer.provideMerge(MemoryBroker.layerMemory)))

const sha = /^[0-9a-f]{40}$/

describe("simulated workers", () => {
  it.effect("replies to every reference task with references after the latency", () =>
    Effect.gen(function* () {
      yield* send(
        task("gitlab.prepare_branch", "t-1"),
        task("geometry.mesh", "t-2"),
        task("solver.balance", "t-3"),
        task("gitlab.publish_results", "t-4"),
        task("gitlab.delete_branch", "t-5"),
        task("solver.discard_run", "t-6")
      )
      yield* pickedUp(6)
      yield* TestClock.adjust("4999 millis")
      assert.deepStrictEqual(yield* quietReplies, [])
      yield* TestClock.adjust("1 millis")
      const got = yield* awaitReplies(6)
      const byTask = new Map(got.map(([reply, delivery]) => [reply.taskId, { reply, delivery }]))
      for (const [taskId, taskType] of [
        ["t-1", "gitlab.prepare_branch"],
        ["t-2", "geometry.mesh"],
        ["t-3", "solver.balance"],
        ["t-4", "gitlab.publish_results"],
        ["t-5", "gitlab.delete_branch"],
        ["t-6", "solver.discard_run"]
      ] as const) {
        const entry = byTask.get(taskId)
        assert.isDefined(entry)
        assert.strictEqual(entry?.reply.outcome, "succeeded")
        assert.strictEqual(entry?.reply.sagaId, sagaId)
        assert.strictEqual(entry?.delivery.exchange, Exchanges.replies)
        assert.strictEqual(entry?.delivery.routingKey, taskType)
        assert.strictEqual(entry?.delivery.correlationId, "corr-1")
        assert.deepStrictEqual(entry?.delivery.headers, { traceparent })
      }
      const prepared = byTask.get("t-1")?.reply.result ?? {}
      assert.strictEqual(prepared.branch, "calc/0190f5a4")
      assert.match(String(prepared.commitSha), sha)
      assert.deepStrictEqual(byTask.get("t-2")?.reply.result, { meshRef: "meshes/t-2.msh" })
      const solved = byTask.get("t-3")?.reply.result ?? {}
      assert.match(String(solved.runId), /^run-[0-9a-f]{12}$/)
      assert.strictEqual(solved.resultsRef, `results/${solved.runId}/balance.json`)
      const published = byTask.get("t-4")?.reply.result ?? {}
      assert.match(String(published.commitSha), sha)
      assert.strictEqual(published.resultsPath, `results/${sagaId}/balance.json`)
      assert.deepStrictEqual(byTask.get("t-5")?.reply.result, {})
      assert.deepStrictEqual(byTask.get("t-6")?.reply.result, {})
      assert.strictEqual(new Set(got.map(([, delivery]) => delivery.messageId)).size, 6)
    }).pipe(withWorkers({ latency: "5 seconds" }))
  )

  it.effect("follows a script: the first mesh attempt fails retryably, the second succeeds", () =>
    Effect.gen(function* () {
      yield* send(task("geometry.mesh", "mesh-1", 1))
      yield* TestClock.adjust("1 second")
      const [[first]] = (yield* awaitReplies(1)) as [[ReplyMessage, Delivery]]
      assert.deepStrictEqual(first, {
        sagaId,
        taskId: "mesh-1",
        outcome: "failed",
        error: { code: "SIMULATED_TRANSIENT_FAILURE", message: "simulated transient failure", retryable: true }
      })
      yield* send(task("geometry.mesh", "mesh-2", 2))
      yield* TestClock.adjust("1 second")
      const second = (yield* awaitReplies(2))[1]?.[0]
      assert.deepStrictEqual(second, {
        sagaId,
        taskId: "mesh-2",
        outcome: "succeeded",
        result: { meshRef: "meshes/mesh-2.msh" }
      })
    }).pipe(
      withWorkers({
        latency: "1 second",
        script: (t) =>
          t.taskType === "geometry.mesh" && t.attempt === 1 ? Workers.Plan.fail({ retryable: true }) : undefined
      })
    )
  )

  it.effect("reports a fatal failure as not retryable", () =>
    Effect.gen(function* () {
      yield* send(task("solver.balance", "s-1"))
      yield* TestClock.adjust("1 second")
      const [[reply]] = (yield* awaitReplies(1)) as [[ReplyMessage, Delivery]]
      assert.deepStrictEqual(reply.error, { code: "DIVERGED", message: "solver diverged", retryable: false })
    }).pipe(
      withWorkers({
        script: () => Workers.Plan.fail({ retryable: false, code: "DIVERGED", message: "solver diverged" })
      })
    )
  )

  it.effect("fails a task type no simulated worker knows, fatally", () =>
    Effect.gen(function* () {
      yield* send(task("thermal.unknown", "u-1"))
      yield* TestClock.adjust("1 second")
      const [[reply]] = (yield* awaitReplies(1)) as [[ReplyMessage, Delivery]]
      assert.strictEqual(reply.outcome, "failed")
      assert.strictEqual(reply.error?.code, "UNKNOWN_TASK_TYPE")
      assert.strictEqual(reply.error?.retryable, false)
    }).pipe(withWorkers({}))
  )

  it.effect("sends a duplicate reply as the same message twice", () =>
    Effect.gen(function* () {
      const workers = yield* Workers.Workers
      yield* send(task("geometry.mesh", "m-1"))
      yield* TestClock.adjust("1 second")
      const got = yield* awaitReplies(2)
      assert.strictEqual(got.length, 2)
      const [[a, da], [b, db]] = got as [[ReplyMessage, Delivery], [ReplyMessage, Delivery]]
      assert.deepStrictEqual(a, b)
      assert.strictEqual(da.messageId, db.messageId)
      assert.deepStrictEqual(
        (yield* workers.sent).map((s) => s.kind),
        ["reply", "duplicate"]
      )
    }).pipe(withWorkers({ latency: "1 second", script: () => Workers.Plan.succeed({ duplicate: true }) }))
  )

  it.effect("sends the reply again, as a new message, after the late-reply delay", () =>
    Effect.gen(function* () {
      yield* send(task("gitlab.prepare_branch", "p-1"))
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* awaitReplies(1)).length, 1)
      yield* TestClock.adjust("59 seconds")
      assert.strictEqual((yield* quietReplies).length, 1)
      yield* TestClock.adjust("1 second")
      const [[first, d1], [late, d2]] = (yield* awaitReplies(2)) as [[ReplyMessage, Delivery], [ReplyMessage, Delivery]]
      assert.deepStrictEqual(late, first)
      assert.notStrictEqual(d1.messageId, d2.messageId)
    }).pipe(withWorkers({ latency: "1 second", lateReplyRate: 1, lateReplyDelay: "1 minute" }))
  )

  it.effect("stays silent when the plan says so", () =>
    Effect.gen(function* () {
      const workers = yield* Workers.Workers
      yield* send(task("solver.balance", "s-1"))
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(yield* quietReplies, [])
      assert.deepStrictEqual(
        (yield* workers.handled).map((h) => [h.task?.taskId, h.outcome]),
        [["s-1", "silent"]]
      )
    }).pipe(withWorkers({ script: () => Workers.Plan.silent() }))
  )

  it.effect("applies per-task-type behaviour over the global one", () =>
    Effect.gen(function* () {
      yield* send(task("geometry.mesh", "m-1"), task("solver.balance", "s-1"))
      yield* TestClock.adjust("1 second")
      const early = yield* awaitReplies(1)
      yield* TestClock.adjust("8 seconds")
      assert.strictEqual((yield* quietReplies).length, 1)
      assert.deepStrictEqual(
        early.map(([reply]) => [reply.taskId, reply.outcome]),
        [["m-1", "succeeded"]]
      )
      yield* TestClock.adjust("1 second")
      const [, [solver]] = (yield* awaitReplies(2)) as [unknown, [ReplyMessage, Delivery]]
      assert.strictEqual(solver.taskId, "s-1")
      assert.strictEqual(solver.outcome, "failed")
      assert.isTrue(solver.error?.retryable)
    }).pipe(
      withWorkers({ latency: "1 second", byTaskType: { "solver.balance": { latency: "10 seconds", failureRate: 1 } } })
    )
  )

  it.effect("answers a task received again with the same reply, without doing it again", () =>
    Effect.gen(function* () {
      const workers = yield* Workers.Workers
      const prepare = task("gitlab.prepare_branch", "p-1")
      yield* send(prepare)
      yield* TestClock.adjust("1 second")
      yield* awaitReplies(1)
      yield* send(prepare)
      const [[first, d1], [again, d2]] = (yield* awaitReplies(2)) as [
        [ReplyMessage, Delivery],
        [ReplyMessage, Delivery]
      ]
      assert.deepStrictEqual(again, first)
      assert.notStrictEqual(d1.messageId, d2.messageId)
      assert.deepStrictEqual(
        (yield* workers.handled).map((h) => [h.task?.taskId, h.outcome]),
        [
          ["p-1", "succeeded"],
          ["p-1", "repeated"]
        ]
      )
    }).pipe(withWorkers({ latency: "1 second" }))
  )

  it.effect("requeues a task it could not answer and answers it once the broker is back", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const workers = yield* Workers.Workers
      yield* send(task("geometry.mesh", "m-1"))
      yield* memory.setAvailable(false)
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* quietReplies, [])
      yield* memory.setAvailable(true)
      yield* TestClock.adjust("1 second")
      const got = yield* awaitReplies(1)
      assert.deepStrictEqual(
        got.map(([reply]) => [reply.taskId, reply.outcome]),
        [["m-1", "succeeded"]]
      )
      assert.deepStrictEqual(
        (yield* workers.handled).map((h) => [h.task?.taskId, h.redelivered, h.outcome]),
        [["m-1", true, "repeated"]]
      )
    }).pipe(withWorkers({ latency: "1 second" }))
  )

  it.effect("dead-letters a malformed task with the reason", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryBroker.MemoryBroker
      const workers = yield* Workers.Workers
      yield* memory.inject(Exchanges.tasks, "geometry.mesh", "not json", { messageId: "bad-1" })
      yield* memory.inject(Exchanges.tasks, "geometry.mesh", JSON.stringify({ sagaId: 7 }), { messageId: "bad-2" })
      yield* eventually(
        "both tasks dead-lettered",
        Effect.map(memory.messages(Queues.deadLetters), (dead) => dead.length >= 2)
      )
      const dead = yield* memory.messages(Queues.deadLetters)
      assert.deepStrictEqual(
        dead.map((d) => d.messageId),
        ["bad-1", "bad-2"]
      )
      for (const d of dead) assert.match(d.headers[deadLetterReasonHeader] ?? "", /^malformed task: /)
      assert.deepStrictEqual(yield* memory.messages(Workers.defaultQueue), [])
      assert.deepStrictEqual(
        (yield* workers.handled).map((h) => [h.messageId, h.outcome]),
        [
          ["bad-1", "malformed"],
          ["bad-2", "malformed"]
        ]
      )
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(yield* quietReplies, [])
    }).pipe(withWorkers({}))
  )

  describe("with a failure rate and a seed", () => {
    const tasks = Array.from({ length: 40 }, (_, i) => task("geometry.mesh", `m-${i}`))
    const outcomes = (seed: string) =>
      Effect.gen(function* () {
        yield* send(...tasks)
        yield* pickedUp(tasks.length)
        yield* TestClock.adjust("1 second")
        const got = yield* awaitReplies(tasks.length)
        return got
          .map(([reply]) => `${reply.taskId}:${reply.outcome}:${reply.error?.retryable ?? "-"}`)
          .sort()
          .join(",")
      }).pipe(withWorkers({ seed, failureRate: 0.5, retryableRate: 0.5 }))

    it.effect("gives the same outcomes for the same seed", () =>
      Effect.gen(function* () {
        const first = yield* outcomes("seed-1")
        const second = yield* outcomes("seed-1")
        assert.strictEqual(first, second)
        assert.include(first, ":succeeded:")
        assert.include(first, ":failed:true")
        assert.include(first, ":failed:false")
        assert.notStrictEqual(yield* outcomes("seed-2"), first)
      })
    )
  })
})
