/**
 * Fuzzing the reply path on real RabbitMQ and PostgreSQL: envelopes drawn at random from hostile parts — U+0000, lone
 * surrogates, very long and very deeply nested values, wrong types, unknown sagas, real sagas' awaited task ids with
 * poisoned results and errors. Every message must be applied, ignored or dead-lettered within seconds, none may be
 * taken for a database outage (and so requeued), and the service must keep working afterwards.
 */
import { assert, layer } from "@effect/vitest"
import { Arbitrary, Effect, Layer, Logger, Schema } from "effect"
import * as AmqpBroker from "../../src/broker/AmqpBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import { Exchanges, Queues } from "../../src/domain/Messages.ts"
import { awaitedTaskId } from "../../src/domain/Progress.ts"
import { readProgress } from "../../src/saga/Engine/moves.ts"
import * as Engine from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import { eventually } from "../utils/eventually.ts"
import { adminConnection, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { TestDatabase, layerStore as testStore } from "../utils/TestDatabase.ts"

/** Every warning and error the service logs while the fuzz runs. */
const warnings: Array<string> = []
const capture = Logger.make(({ logLevel, message }) => {
  if (logLevel === "Warn" || logLevel === "Error") warnings.push(`${logLevel} ${JSON.stringify(message)}`)
})

const runtime = Layer.unwrap(
  Effect.map(TestVhost, (vhost) =>
    Engine.layer.pipe(
      Layer.provideMerge(SagaRegistry.layer(definitions)),
      Layer.provideMerge(AmqpBroker.layerConfig(vhost.options()))
    )
  )
).pipe(Layer.provideMerge(testStore()), Layer.provideMerge(testVhost()), Layer.provide(Logger.layer([capture])))

/** JSON text nested `depth` deep (built as text: such a value would overflow a recursive walk). */
const deep = (depth: number) => `${"[".repeat(depth)}0${"]".repeat(depth)}`

/** Strings PostgreSQL cannot store, or that are too long to keep whole, beside harmless ones. */
const hostileText = Arbitrary.schema(
  Schema.Literals([
    "ok",
    "",
    "a\u0000b",
    "\u0000",
    "\ud800",
    "x\udbffy",
    "\udc00",
    "t".repeat(300),
    "e".repeat(100_000)
  ])
)

/** A result, as JSON text: a valid one, or one poisoned by a hostile string, a hostile key or deep nesting. */
const hostileResult = Arbitrary.all({
  kind: Arbitrary.schema(Schema.Literals(["valid", "value", "key", "deep", "array", "none"])),
  text: hostileText
}).pipe(
  Arbitrary.map(
    ({ kind, text }): unknown =>
      ({
        valid: { branch: "calc/fuzz", commitSha: "f".repeat(40) },
        value: { branch: text, commitSha: text },
        key: { [text]: "value", commitSha: "f" },
        deep: { branch: deep(5_000) },
        array: [text],
        none: undefined
      })[kind]
  )
)

const envelope = Arbitrary.all({
  saga: Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 9 }))),
  sagaKind: Arbitrary.schema(Schema.Literals(["real", "unknown", "hostile", "number"])),
  taskKind: Arbitrary.schema(Schema.Literals(["awaited", "other", "hostile"])),
  outcome: Arbitrary.schema(Schema.Literals(["succeeded", "failed", "bogus"])),
  result: hostileResult,
  errorMessage: hostileText,
  errorCode: hostileText,
  text: hostileText
})

layer(runtime, { excludeTestServices: true, timeout: "90 seconds" })("hostile replies through RabbitMQ", (it) => {
  it.effect("applies, ignores or dead-letters every fuzzed reply within seconds, none taken for an outage", () =>
    Effect.gen(function* () {
      const vhost = yield* TestVhost
      const store = yield* SagaStore
      const engine = yield* Engine.Engine
      yield* Effect.forkScoped(OutboxRelay.run({ batchSize: 200, idleDelay: "20 millis" }))
      yield* Effect.forkScoped(ReplyConsumer.run())
      const sagas = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, n) => n),
        (n) =>
          engine
            .start("BALANCE_CALCULATION", {
              repo: `fuzz/plant-${n}`,
              baseBranch: "main",
              inputRef: `inputs/fuzz-${n}.yaml`,
              requestedBy: "fuzz"
            })
            .pipe(Effect.map(({ saga }) => saga))
      )
      const awaited = yield* Effect.forEach(sagas, (saga) =>
        readProgress(saga).pipe(Effect.map((progress) => awaitedTaskId(progress) ?? ""))
      )

      const samples = yield* Arbitrary.sampleEffect(envelope, { count: 150, seed: "hostile-replies" })
      const bodies = samples.map((sample, n) => {
        const saga = sagas[sample.saga]!
        const sagaId = {
          real: saga.id,
          unknown: "0190f5a4-7c1e-7d2a-9b3c-4d5e6f708192",
          hostile: sample.text,
          number: 42
        }[sample.sagaKind]
        const taskId = { awaited: awaited[sample.saga], other: `task-${n}`, hostile: sample.text }[sample.taskKind]
        const reply: Record<string, unknown> = { sagaId, taskId, outcome: sample.outcome }
        if (sample.outcome === "failed") {
          reply.error = { code: sample.errorCode, message: sample.errorMessage, retryable: n % 2 === 0 }
        }
        const text = JSON.stringify(reply)
        const body = sample.result === undefined ? text : `${text.slice(0, -1)},"result":${sample.result}}`
        return { messageId: `fuzz-${n}`, body }
      })

      const connection = yield* adminConnection(vhost.name)
      yield* Effect.promise(async () => {
        const channel = await connection.createConfirmChannel()
        for (const { messageId, body } of bodies) {
          channel.publish(Exchanges.replies, "gitlab.prepare_branch", Buffer.from(body), {
            messageId,
            persistent: true,
            contentType: "application/json"
          })
        }
        await channel.waitForConfirms()
        await channel.close()
      })

      // One reply, one outcome: a transition, an ignored event, or a dead letter — all of them, within seconds.
      const db = yield* TestDatabase
      const count = (query: string) => Effect.map(db.superuser(query), (out) => Number(out.trim()))
      const channel = yield* Effect.promise(() => connection.createChannel())
      const outcomes = Effect.gen(function* () {
        const transitions = yield* count("SELECT count(*) FROM orchestrator.saga_transitions WHERE lock_version > 0")
        const ignored = yield* count("SELECT count(*) FROM orchestrator.saga_ignored_events")
        const deadLettered = (yield* Effect.promise(() => channel.checkQueue(Queues.deadLetters))).messageCount
        return { transitions, ignored, deadLettered, all: transitions + ignored + deadLettered }
      })
      yield* eventually(
        "every reply settled",
        Effect.map(outcomes, (now) => now.all >= bodies.length),
        { within: "30 seconds", every: "100 millis", explain: Effect.map(outcomes, (now) => JSON.stringify(now)) }
      )
      const settled = yield* outcomes
      const { transitions, deadLettered } = settled
      assert.strictEqual(settled.all, bodies.length, "no reply was processed twice")
      assert.strictEqual((yield* Effect.promise(() => channel.checkQueue(Queues.replies))).messageCount, 0)
      assert.isAbove(deadLettered, 0, "some replies were malformed")
      assert.isAbove(transitions, 0, "some replies were applied")
      assert.deepStrictEqual(
        warnings.filter((line) => line.includes("unavailable")),
        [],
        "no reply was taken for a database outage"
      )
      // Still serving: the store answers, and a valid reply to a saga still waiting is applied.
      const waiting = (yield* store.find({ state: "PREPARING_BRANCH", limit: 1 })).items[0]
      if (waiting !== undefined) {
        const progress = yield* readProgress(waiting)
        yield* engine.reply({
          sagaId: waiting.id,
          taskId: awaitedTaskId(progress) ?? "",
          outcome: "succeeded",
          result: { branch: "calc/after", commitSha: "a".repeat(40) }
        })
        assert.strictEqual((yield* store.get(waiting.id)).currentState, "MESHING_GEOMETRY")
      }
    })
  )
})
