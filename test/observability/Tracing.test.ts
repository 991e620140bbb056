/**
 * Tracing across the message boundary: the engine's span for a step carries the saga's attributes and is what the
 * step's task message names as its `traceparent`; the relay publishes each task in a producer span under it; a reply
 * with a `traceparent` is handled in a span of the worker's trace, and the next task stays in that trace.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, type Tracer } from "effect"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import { decodeTask, Exchanges, Queues } from "../../src/domain/Messages.ts"
import type { PendingMessage } from "../../src/domain/Saga.ts"
import { traceparent } from "../../src/observability/TraceContext.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { layer as engineLayer, input, results, succeeded } from "../saga/harness.ts"
import { eventually } from "../utils/eventually.ts"
import { layerRecordingTracer, parentOf, spansNamed } from "./support.ts"

const runtime = engineLayer().pipe(
  Layer.provideMerge(MemoryBroker.layerMemory),
  Layer.provideMerge(layerRecordingTracer)
)

/** The outbox as it is, without publishing it. */
const outbox = Effect.flatMap(SagaStore, (store) => {
  const seen: Array<PendingMessage> = []
  return store
    .publishOutbox(1000, (messages) =>
      Effect.sync(() => void seen.push(...messages)).pipe(Effect.andThen(Effect.fail("keep them" as const)))
    )
    .pipe(
      Effect.catch(() => Effect.void),
      Effect.as(seen)
    )
})

const only = <A>(items: ReadonlyArray<A>, what: string): A => {
  assert.strictEqual(items.length, 1, what)
  return items[0]!
}

const assertSagaAttributes = (span: Tracer.Span, saga: { id: string; sagaType: string; correlationId: string }) => {
  assert.strictEqual(span.attributes.get("saga.id"), saga.id)
  assert.strictEqual(span.attributes.get("saga.type"), saga.sagaType)
  assert.strictEqual(span.attributes.get("correlation.id"), saga.correlationId)
}

describe("Tracing", () => {
  it.effect("a step's span carries the saga's attributes, and its task names that span as traceparent", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* engine.start("BALANCE_CALCULATION", input, { correlationId: "order-77" })
      const startSpan = only(yield* spansNamed("Engine.start"), "one Engine.start span")
      assertSagaAttributes(startSpan, saga)
      assert.strictEqual(saga.correlationId, "order-77")

      const first = only(yield* outbox, "one task in the outbox")
      assert.strictEqual(first.headers.traceparent, `00-${startSpan.traceId}-${startSpan.spanId}-01`)
      assert.match(first.headers.traceparent ?? "", /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)

      // The next step, decided on the reply: the task names the Engine.reply span, not the store's.
      const task = yield* decodeTask(JSON.stringify(first.payload))
      yield* Effect.flatMap(SagaStore, (store) => store.publishOutbox(10, () => Effect.void))
      yield* engine.reply(succeeded(task, results["gitlab.prepare_branch"]))
      const replySpan = only(yield* spansNamed("Engine.reply"), "one Engine.reply span")
      assertSagaAttributes(replySpan, saga)
      assert.strictEqual(replySpan.status._tag, "Ended")
      const mesh = only(yield* outbox, "the meshing task")
      assert.strictEqual(mesh.routingKey, "geometry.mesh")
      assert.strictEqual(mesh.headers.traceparent, traceparent(replySpan))
    }).pipe(Effect.provide(runtime))
  )

  it.effect("the relay publishes each task in a producer span under the deciding span, headers unchanged", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const memory = yield* MemoryBroker.MemoryBroker
      yield* memory.bind("test.tasks", Exchanges.tasks, "#")
      const started = yield* Effect.forEach([1, 2], () => engine.start("BALANCE_CALCULATION", input))
      assert.strictEqual(yield* OutboxRelay.relayOnce(100), 2)

      const deciding = yield* spansNamed("Engine.start")
      const publishing = yield* spansNamed("OutboxRelay.publish")
      assert.strictEqual(publishing.length, 2)
      const published = yield* memory.messages("test.tasks")
      for (const [index, { saga }] of started.entries()) {
        const decided = deciding[index]!
        const span = publishing.find((s) => s.attributes.get("saga.id") === saga.id)
        assert.isDefined(span)
        assert.strictEqual(span?.kind, "producer")
        assert.strictEqual(span?.traceId, decided.traceId)
        assert.strictEqual(parentOf(span!)?.spanId, decided.spanId)
        assert.strictEqual(span?.status._tag, "Ended")
        const message = published.find((m) => m.correlationId === saga.correlationId)
        assert.strictEqual(message?.headers.traceparent, traceparent(decided))
        assert.strictEqual(span?.attributes.get("messaging.message.id"), message?.messageId)
      }
    }).pipe(Effect.provide(runtime))
  )

  it.effect("a reply carrying a traceparent continues the worker's trace", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const memory = yield* MemoryBroker.MemoryBroker
      const store = yield* SagaStore
      const { saga } = yield* engine.start("BALANCE_CALCULATION", input)
      const task = yield* decodeTask(JSON.stringify(only(yield* outbox, "the first task").payload))
      yield* store.publishOutbox(10, () => Effect.void)
      yield* Effect.forkScoped(ReplyConsumer.run())

      const worker = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7" }
      const body = JSON.stringify(succeeded(task, results["gitlab.prepare_branch"]))
      yield* memory.inject(Exchanges.replies, task.taskType, body, {
        messageId: "reply-1",
        headers: { traceparent: `00-${worker.traceId}-${worker.spanId}-01` }
      })
      yield* eventually(
        "the reply is applied",
        // `get` reads the store when called: a fresh call each look.
        Effect.suspend(() => Effect.map(store.get(saga.id), (s) => s.currentState === "MESHING_GEOMETRY"))
      )
      yield* eventually(
        "the reply is acknowledged",
        Effect.suspend(() => Effect.map(memory.unacknowledged(Queues.replies), (pending) => pending.length === 0))
      )

      const consumed = only(yield* spansNamed("ReplyConsumer.handle"), "one consumer span")
      assert.strictEqual(consumed.kind, "consumer")
      assert.strictEqual(consumed.traceId, worker.traceId)
      assert.strictEqual(parentOf(consumed)?.spanId, worker.spanId)
      assert.strictEqual(consumed.attributes.get("reply.disposition"), "Ack")
      const applied = only(yield* spansNamed("Engine.reply"), "one Engine.reply span")
      assert.strictEqual(applied.traceId, worker.traceId)
      assert.strictEqual(parentOf(applied)?.spanId, consumed.spanId)
      assertSagaAttributes(applied, saga)
      const next = only(yield* outbox, "the meshing task")
      assert.strictEqual(next.headers.traceparent, `00-${worker.traceId}-${applied.spanId}-01`)
    }).pipe(Effect.provide(runtime))
  )

  it.effect("a reply without a usable traceparent starts a trace of its own", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const memory = yield* MemoryBroker.MemoryBroker
      const store = yield* SagaStore
      const { saga } = yield* engine.start("BALANCE_CALCULATION", input)
      const task = yield* decodeTask(JSON.stringify(only(yield* outbox, "the first task").payload))
      yield* store.publishOutbox(10, () => Effect.void)
      yield* Effect.forkScoped(ReplyConsumer.run())
      const body = JSON.stringify(succeeded(task, results["gitlab.prepare_branch"]))
      yield* memory.inject(Exchanges.replies, task.taskType, body, { headers: { traceparent: "00-zz-yy-01" } })
      yield* eventually(
        "the reply is applied",
        Effect.suspend(() => Effect.map(store.get(saga.id), (s) => s.lockVersion === 1))
      )
      const consumed = only(yield* spansNamed("ReplyConsumer.handle"), "one consumer span")
      assert.isTrue(Option.isNone(consumed.parent))
    }).pipe(Effect.provide(runtime))
  )
})
