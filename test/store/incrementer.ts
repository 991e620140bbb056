/**
 * Worker process for test/store/Concurrency.test.ts. Connects as the service does (ORCH_DB_* settings from the
 * environment, the password from the secrets directory, the runtime role), checks that the saga exists, prints a
 * `ready` line and waits for one line on stdin, so that the test can release several workers at once. Then it
 * applies `increments` `transact` increments to the saga with `fibers` concurrent fibers, prints a `summary` line
 * and exits 0, or 1 when any increment failed or the deadline passed.
 *
 *   node test/store/incrementer.ts <sagaId> <increments> <fibers> [deadlineSeconds=60]
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Clock, Console, Data, Effect, Exit, Option, Schema, Stdio, Stream } from "effect"
import { load } from "../../src/Config.ts"
import { SagaId } from "../../src/domain/Saga.ts"
import * as PgSagaStore from "../../src/store/PgSagaStore.ts"
import { SagaStore, StepOutcome } from "../../src/store/SagaStore.ts"

class WorkerFailed extends Data.TaggedError("WorkerFailed")<{ readonly message: string }> {}

const PositiveInt = Schema.FiniteFromString.check(Schema.isInt(), Schema.isGreaterThan(0))
const Args = Schema.Tuple([SagaId, PositiveInt, PositiveInt, Schema.optionalKey(PositiveInt)])

/** One JSON object per line: the test reads stdout line by line. */
const emit = (line: Record<string, unknown>) => Console.log(JSON.stringify({ ...line, pid: process.pid }))

const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : String(error)
}

const increment = (id: SagaId) =>
  Effect.flatMap(SagaStore, (store) =>
    store.transact(id, (saga) =>
      Effect.succeed(
        StepOutcome.Advance({
          state: "COUNTING",
          status: "RUNNING",
          context: { n: Number(saga.context.n) + 1, lastBy: process.pid },
          event: "Incremented",
          detail: { by: process.pid }
        })
      )
    )
  )

const awaitStartSignal = Effect.gen(function* () {
  const stdio = yield* Stdio.Stdio
  const line = yield* stdio.stdin.pipe(Stream.decodeText(), Stream.splitLines, Stream.runHead)
  if (Option.isNone(line)) return yield* new WorkerFailed({ message: "stdin closed before the start signal" })
})

const run = (id: SagaId, increments: number, fibers: number) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    // Connects (one pool per process, one connection per fiber) and fails fast on a wrong role, password,
    // database or saga id, before the test releases the workers.
    yield* store.get(id)
    yield* emit({ type: "ready" })
    yield* awaitStartSignal
    const started = yield* Clock.currentTimeMillis
    const exits = yield* Effect.forEach(Array.from({ length: increments }), () => Effect.exit(increment(id)), {
      concurrency: fibers
    })
    const failures = exits.filter(Exit.isFailure).map((exit) => describeFailure(exit.cause))
    yield* emit({
      type: "summary",
      done: exits.length - failures.length,
      failures: failures.length,
      errors: [...new Set(failures)],
      millis: (yield* Clock.currentTimeMillis) - started
    })
    if (failures.length > 0) return yield* new WorkerFailed({ message: `${failures.length} increments failed` })
  })

const main = Effect.gen(function* () {
  const stdio = yield* Stdio.Stdio
  const [id, increments, fibers, deadlineSeconds = 60] = yield* Schema.decodeUnknownEffect(Args)(yield* stdio.args)
  // Last resort should even shutting down hang: the process never outlives its deadline by more than 5 s.
  yield* Effect.sync(() => setTimeout(() => process.exit(2), (deadlineSeconds + 5) * 1000).unref())
  const config = yield* load
  if (config.database._tag === "Embedded") return yield* new WorkerFailed({ message: "ORCH_DB_HOST is not set" })
  yield* run(id, increments, fibers).pipe(
    Effect.provide(PgSagaStore.layerDatabase(config.database.config, { maxConnections: fibers })),
    Effect.timeoutOrElse({
      duration: `${deadlineSeconds} seconds`,
      orElse: () => Effect.fail(new WorkerFailed({ message: `deadline of ${deadlineSeconds} s passed` }))
    })
  )
})

main.pipe(Effect.provide(NodeServices.layer), NodeRuntime.runMain)
