/**
 * Waiting in tests without sleeping for a guessed time: poll a condition until it holds, with a deadline. The
 * polling and the deadline run on the live clock even inside a TestClock test, so the same helper serves tests on
 * in-memory fakes (where forked fibers only need turns to run) and tests on real servers.
 */
import { Clock, Duration, Effect } from "effect"

export interface EventuallyOptions<R> {
  /** How long to wait before the test fails; 15 seconds by default. */
  readonly within?: Duration.Input | undefined
  /** Pause between looks; 10 milliseconds by default. */
  readonly every?: Duration.Input | undefined
  /** Added to the failure message: what the test can say about the state it waited on. */
  readonly explain?: Effect.Effect<string, never, R> | undefined
}

/**
 * Polls `check` until it holds and returns how long that took, in milliseconds; past the deadline the test fails
 * saying what it waited for. A check that fails fails the test at once (`Effect.orElseSucceed(() => false)` makes
 * a failure count as "not yet").
 */
export const eventually = <E, R, R2 = never>(
  what: string,
  check: Effect.Effect<boolean, E, R>,
  options: EventuallyOptions<R2> = {}
): Effect.Effect<number, E, R | R2> =>
  Effect.gen(function* () {
    const deadline = Duration.toMillis(options.within ?? "15 seconds")
    const begin = yield* Clock.currentTimeMillis
    while (!(yield* check)) {
      const elapsed = (yield* Clock.currentTimeMillis) - begin
      if (elapsed > deadline) {
        const explanation = options.explain === undefined ? "" : `; ${yield* options.explain}`
        return yield* Effect.die(new Error(`timed out after ${elapsed} ms waiting until ${what}${explanation}`))
      }
      yield* Effect.sleep(options.every ?? "10 millis")
    }
    return (yield* Clock.currentTimeMillis) - begin
  }).pipe(Effect.provideService(Clock.Clock, Clock.Clock.defaultValue()))
