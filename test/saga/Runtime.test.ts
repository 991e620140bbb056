/**
 * The whole runtime in memory, on the TestClock: sagas started through the engine go out through the outbox relay,
 * simulated workers answer them as scripted, the reply consumer applies the answers and the timer scanner fires
 * timeouts and back-offs. Nothing is driven by hand except the engineer's condenser input and the clock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as MemoryBroker from "../../src/broker/MemoryBroker.ts"
import * as OutboxRelay from "../../src/broker/OutboxRelay.ts"
import * as ReplyConsumer from "../../src/broker/ReplyConsumer.ts"
import * as TimerScanner from "../../src/saga/TimerScanner.ts"
import * as Workers from "../../src/simulation/Workers.ts"
import { type Fleet, fleet, type Started, scenarios, settled, startAll, supplyCondenserInput, verify } from "./fleet.ts"
import { layer as engineLayer } from "./harness.ts"

const runtime = (fleet: Fleet) =>
  Layer.mergeAll(
    engineLayer(),
    Workers.layer({ latency: "200 millis", seed: "runtime", script: fleet.script }).pipe(
      Layer.provideMerge(MemoryBroker.layerMemory)
    )
  )

/** The service's loops, for the life of the test. */
const loops = Effect.all(
  [Effect.forkScoped(OutboxRelay.run()), Effect.forkScoped(ReplyConsumer.run()), Effect.forkScoped(TimerScanner.run())],
  { discard: true }
)

/**
 * Moves the clock 100 ms at a time, supplying condenser input as sagas come to wait for it, until everything has
 * settled; returns how much simulated time that took, or `undefined` when `limitMillis` was not enough.
 */
const runToTheEnd = (started: ReadonlyArray<Started>, limitMillis: number) =>
  Effect.gen(function* () {
    for (let elapsed = 0; elapsed <= limitMillis; elapsed += 100) {
      yield* supplyCondenserInput
      if (yield* settled(started)) return elapsed
      yield* TestClock.adjust("100 millis")
    }
    return undefined
  })

describe("Runtime: relay, workers, reply consumer and timer scanner together", () => {
  const fleetOfSagas = fleet([
    [scenarios.happy, 3],
    [scenarios.meshRetried, 1],
    [scenarios.solverFatal, 1],
    [scenarios.publishFatal, 1],
    [scenarios.duplicated, 1],
    [scenarios.late("10 seconds"), 1],
    [scenarios.silent, 1]
  ])

  it.effect("runs every saga to its planned end: retried, compensated, timed out, deaf to stale replies", () =>
    Effect.gen(function* () {
      yield* loops
      const started = yield* startAll(fleetOfSagas)
      const elapsed = yield* runToTheEnd(started, 5 * 60_000)
      // Checked first, so that a run that never settles shows which saga went wrong.
      yield* verify(started)
      // The silent task holds the fleet up: its 2-minute timeout, then a 5 s back-off, then the rest of the saga.
      assert.isDefined(elapsed, "the sagas settled within 5 simulated minutes")
      assert.isAtLeast(elapsed ?? 0, 125_000)
      assert.isAtMost(elapsed ?? 0, 135_000)
    }).pipe(Effect.provide(runtime(fleetOfSagas)))
  )
})
