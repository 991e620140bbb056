/**
 * Load for the failover tests: starts a saga every `every` through the engine (the test's own process, writing
 * through HAProxy like the service) and releases its condenser data at once, so that at any moment some sagas wait
 * for replies, some for timers, some for the signal, and some outbox messages and replies are in flight. A start
 * that fails for good (the store gave up) is recorded: the test asserts there is none.
 */
import { type Duration, Effect, Fiber, Ref } from "effect"
import * as Harness from "../e2e/harness.ts"

/** The worker's plans in rotation: mostly happy paths, with retries, compensations, duplicated and late replies. */
const rotation: ReadonlyArray<Harness.Plan> = [
  "ok",
  "retry-mesh",
  "ok",
  "fatal-solver",
  "ok",
  "duplicate",
  "ok",
  "late"
]

export interface Load {
  /** The sagas started so far. */
  readonly started: Effect.Effect<ReadonlyArray<Harness.Started>>
  /** Starts that failed for good, with why. */
  readonly failures: Effect.Effect<ReadonlyArray<string>>
  /** Stops starting sagas (after the start in progress, if any); returns every saga started. */
  readonly stop: Effect.Effect<ReadonlyArray<Harness.Started>>
}

export const feed = Effect.fnUntraced(function* (
  label: string,
  engineer: Effect.Success<typeof Harness.engineer>,
  every: Duration.Input
) {
  const started = yield* Ref.make<ReadonlyArray<Harness.Started>>([])
  const failures = yield* Ref.make<ReadonlyArray<string>>([])
  const feeding = yield* Ref.make(true)
  let n = 0
  const startOne = Effect.gen(function* () {
    const plan = rotation[n % rotation.length] ?? "ok"
    n += 1
    const sagas = yield* Harness.startSagas(`${label}${n}-`, [[plan, 1]])
    yield* Ref.update(started, (all) => [...all, ...sagas])
    yield* engineer.release(sagas)
  }).pipe(Effect.catch((error) => Ref.update(failures, (all) => [...all, `${label}${n}: ${error.message}`])))
  const loop = Effect.gen(function* () {
    while (yield* Ref.get(feeding)) {
      yield* startOne
      yield* Effect.sleep(every)
    }
  })
  const fiber = yield* Effect.forkScoped(loop)
  return {
    started: Ref.get(started),
    failures: Ref.get(failures),
    stop: Ref.set(feeding, false).pipe(Effect.andThen(Fiber.join(fiber)), Effect.andThen(Ref.get(started)))
  } satisfies Load
})
