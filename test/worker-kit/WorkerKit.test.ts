/**
 * The worker kit on the machine's RabbitMQ, in a vhost of this file's own: the test plays the orchestrator, publishing
 * tasks and notices as the service does and capturing what the worker publishes. Each test uses task types of its own.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Exchanges } from "../../src/domain/Messages.ts"
import { handler, schemaValidator, startWorker, TaskFailed, type WorkerOptions } from "../../src/worker-kit/index.ts"
import { rabbitmqctl, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { eventually, gate, orchestratorSide, task, workerUrl } from "./support.ts"

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/** A worker for the scope's lifetime (stopped at its end), logging into `lines`. */
const worker = (options: Omit<WorkerOptions, "url" | "log">) =>
  Effect.gen(function* () {
    const { name } = yield* TestVhost
    const lines: Array<string> = []
    const started = yield* Effect.acquireRelease(
      Effect.sync(() =>
        startWorker({
          url: workerUrl(name),
          log: (level, message) => lines.push(`${level} ${message}`),
          reconnect: { initialDelayMs: 50, maxDelayMs: 500 },
          replyRetryDelayMs: 100,
          ...options
        })
      ),
      (w) => Effect.promise(() => w.stop())
    )
    yield* Effect.promise(() => started.ready)
    return { worker: started, lines }
  })

layer(testVhost(), { excludeTestServices: true, timeout: "60 seconds" })("worker kit", (it) => {
  it.effect("replies with the handler's result, the task's correlation id and traceparent, then acks the task", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit1.#")
      const { worker: w } = yield* worker({
        queue: "kit1.worker",
        handlers: {
          "kit1.add": handler<{ a: number; b: number }, { sum: number }>({
            payload: (value) =>
              typeof value === "object" && value !== null && "a" in value ? undefined : "payload needs a",
            handle: (payload) => Promise.resolve({ sum: payload.a + payload.b })
          }),
          "kit1.mesh": handler<unknown, { meshRef: string }>({
            result: schemaValidator(Schema.Struct({ meshRef: Schema.NonEmptyString })),
            handle: () => Promise.resolve({ meshRef: "" })
          }),
          "kit1.refuse": handler({
            handle: () =>
              Promise.reject(new TaskFailed({ code: "no_such_repo", message: "repo gone", retryable: false }))
          })
        }
      })
      const add = task("kit1.add", { a: 2, b: 3 })
      const bad = task("kit1.add", { b: 3 })
      const refuse = task("kit1.refuse", {})
      yield* side.publish("kit1.add", add, { traceparent })
      yield* side.publish("kit1.add", bad)
      yield* side.publish("kit1.refuse", refuse)
      const mesh = task("kit1.mesh", {})
      yield* side.publish("kit1.mesh", mesh)
      yield* eventually(
        "four replies arrived",
        Effect.sync(() => side.captured.length >= 4)
      )
      const replyTo = (taskId: string) => side.captured.find((m) => m.body.taskId === taskId)
      const added = replyTo(add.taskId)
      assert.deepStrictEqual(added?.body, {
        sagaId: add.sagaId,
        taskId: add.taskId,
        outcome: "succeeded",
        result: { sum: 5 }
      })
      assert.strictEqual(added?.routingKey, "kit1.add")
      assert.strictEqual(added?.correlationId, "corr-1")
      assert.strictEqual(added?.traceparent, traceparent)
      assert.deepStrictEqual(replyTo(bad.taskId)?.body.error, {
        code: "invalid_payload",
        message: "payload needs a",
        retryable: false
      })
      assert.deepStrictEqual(replyTo(refuse.taskId)?.body.error, {
        code: "no_such_repo",
        message: "repo gone",
        retryable: false
      })
      const meshReply = replyTo(mesh.taskId)?.body
      assert.strictEqual(meshReply?.outcome, "failed")
      assert.deepInclude(meshReply?.error, { code: "invalid_result", retryable: false })
      yield* Effect.promise(() => w.stop())
      assert.strictEqual(yield* side.ready("kit1.worker"), 0, "every task was acked")
    })
  )

  it.effect("does not ack a task whose reply is not confirmed: it comes back and is answered once replies go out", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit2.#")
      let calls = 0
      const { worker: w } = yield* worker({
        queue: "kit2.worker",
        handlers: {
          "kit2.work": handler({
            handle: () => {
              calls += 1
              return Promise.resolve({ done: true })
            }
          })
        }
      })
      // Without the replies exchange, RabbitMQ refuses every reply (404): nothing is confirmed.
      yield* side.admin((channel) => channel.deleteExchange(Exchanges.replies))
      const work = task("kit2.work", {})
      yield* side.publish("kit2.work", work)
      yield* eventually(
        "the task was delivered again",
        Effect.sync(() => calls >= 2)
      )
      assert.strictEqual(side.captured.length, 0)
      yield* side.admin(async (channel, captureQueue) => {
        await channel.assertExchange(Exchanges.replies, "topic", { durable: true })
        await channel.bindQueue(captureQueue, Exchanges.replies, "kit2.#")
      })
      yield* eventually(
        "the reply arrived",
        Effect.sync(() => side.captured.some((m) => m.body.taskId === work.taskId))
      )
      yield* Effect.promise(() => w.stop())
      assert.strictEqual(yield* side.ready("kit2.worker"), 0, "the task was acked")
    })
  )

  it.effect("sends heartbeats, with the latest progress, every third of the timeout while a slow handler runs", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit3.#")
      const release = gate()
      yield* worker({
        queue: "kit3.worker",
        handlers: {
          "kit3.slow": handler({
            handle: async (_payload, context) => {
              await context.reportProgress({ percent: 40, message: "meshing" })
              await release.opened
              return { done: true }
            }
          })
        }
      })
      const slow = task("kit3.slow", {}, { heartbeatTimeoutMs: 150 })
      yield* side.publish("kit3.slow", slow, { traceparent })
      const heartbeats = () => side.captured.filter((m) => m.routingKey === "kit3.slow.heartbeat")
      yield* eventually(
        "three heartbeats arrived",
        Effect.sync(() => heartbeats().length >= 3)
      )
      assert.strictEqual(side.captured.filter((m) => m.routingKey === "kit3.slow").length, 0, "no reply yet")
      for (const heartbeat of heartbeats()) {
        assert.deepStrictEqual(heartbeat.body, {
          sagaId: slow.sagaId,
          taskId: slow.taskId,
          progress: { percent: 40, message: "meshing" }
        })
        assert.strictEqual(heartbeat.correlationId, "corr-1")
        assert.strictEqual(heartbeat.traceparent, traceparent)
      }
      release.open()
      yield* eventually(
        "the reply arrived",
        Effect.sync(() => side.captured.some((m) => m.routingKey === "kit3.slow"))
      )
    })
  )

  it.effect("aborts the running handler on a cancellation notice, acks its task and sends no reply", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit4.#")
      const reasons: Array<unknown> = []
      const started = gate()
      const { worker: w } = yield* worker({
        queue: "kit4.worker",
        prefetch: 1,
        handlers: {
          "kit4.long": handler({
            handle: (_payload, context) => {
              started.open()
              return new Promise((_resolve, reject) =>
                context.signal.addEventListener("abort", () => {
                  reasons.push(context.signal.reason)
                  reject(new Error("stopped"))
                })
              )
            }
          })
        }
      })
      const long = task("kit4.long", {})
      yield* side.publish("kit4.long", long)
      yield* Effect.promise(() => started.opened)
      yield* side.publish("kit4.long.cancel", {
        sagaId: long.sagaId,
        sagaType: long.sagaType,
        taskId: long.taskId,
        taskType: long.taskType,
        stepKey: long.stepKey,
        attempt: 1,
        reason: "saga_cancelled"
      })
      yield* eventually(
        "the handler was aborted",
        Effect.sync(() => reasons.length > 0)
      )
      assert.deepStrictEqual(reasons, ["saga_cancelled"])
      yield* Effect.promise(() => w.stop())
      assert.strictEqual(yield* side.ready("kit4.worker"), 0, "the task was acked")
      // A reply is published before its task is acked: none by now means none at all.
      assert.deepStrictEqual(side.captured, [])
    })
  )

  it.effect("on stop, stops consuming and waits for the running handler, which replies before the close", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit5.#")
      const started = gate()
      const release = gate()
      const { worker: w, lines } = yield* worker({
        queue: "kit5.worker",
        handlers: {
          "kit5.job": handler({
            handle: async () => {
              started.open()
              await release.opened
              return { finished: true }
            }
          })
        }
      })
      const first = task("kit5.job", {})
      yield* side.publish("kit5.job", first)
      yield* Effect.promise(() => started.opened)
      let stopped = false
      const stopping = w.stop().then(() => {
        stopped = true
      })
      yield* eventually(
        "the worker stopped consuming",
        Effect.sync(() => lines.some((line) => line.includes("stopped consuming")))
      )
      const second = task("kit5.job", {})
      yield* side.publish("kit5.job", second)
      assert.isFalse(stopped, "stop waits for the running handler")
      assert.strictEqual(w.running(), 1)
      release.open()
      yield* Effect.promise(() => stopping)
      yield* eventually(
        "the reply arrived",
        Effect.sync(() => side.captured.length > 0)
      )
      assert.deepStrictEqual(
        side.captured.map((m) => m.body.taskId),
        [first.taskId]
      )
      assert.strictEqual(yield* side.ready("kit5.worker"), 1, "the second task waits for the next worker")
    })
  )

  it.effect("reconnects after losing its connection; the interrupted task comes back and is answered", () =>
    Effect.gen(function* () {
      const { name } = yield* TestVhost
      const side = yield* orchestratorSide(name, "kit6.#")
      const reasons: Array<unknown> = []
      const started = gate()
      const { lines } = yield* worker({
        queue: "kit6.worker",
        connectionName: "kit6-worker",
        handlers: {
          "kit6.job": handler({
            handle: (_payload, context) => {
              if (reasons.length > 0) return Promise.resolve({ second: true })
              started.open()
              return new Promise((_resolve, reject) =>
                context.signal.addEventListener("abort", () => {
                  reasons.push(context.signal.reason)
                  reject(new Error("interrupted"))
                })
              )
            }
          })
        }
      })
      const job = task("kit6.job", {})
      yield* side.publish("kit6.job", job)
      yield* Effect.promise(() => started.opened)
      yield* Effect.promise(async () => {
        const rows = await rabbitmqctl(["-q", "--no-table-headers", "list_connections", "pid", "client_properties"])
        const pid = rows
          .split("\n")
          .find((row) => row.includes("kit6-worker"))
          ?.split("\t")[0]
        if (pid === undefined) throw new Error(`no connection named kit6-worker:\n${rows}`)
        await rabbitmqctl(["close_connection", pid, "test closes it"])
      })
      yield* eventually(
        "the worker consumed again",
        Effect.sync(() => lines.filter((line) => line.includes("consuming queue")).length >= 2)
      )
      assert.deepStrictEqual(reasons, ["connection_lost"])
      yield* eventually(
        "the task was answered",
        Effect.sync(() => side.captured.some((m) => m.body.taskId === job.taskId))
      )
      assert.deepStrictEqual(side.captured.find((m) => m.body.taskId === job.taskId)?.body.result, { second: true })
    })
  )
})
