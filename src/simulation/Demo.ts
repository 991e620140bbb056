/**
 * Embedded mode's demonstration: starts a few BALANCE_CALCULATION sagas, plays the engineer who supplies the
 * condenser data when a saga asks for it, and prints each saga's progress as it moves.
 */
import { Console, Duration, Effect, Layer, Schedule } from "effect"
import type { SagaId, SagaInstance } from "../domain/Saga.ts"
import { Engine } from "../saga/Engine.ts"
import { SagaStore } from "../store/SagaStore.ts"

export interface DemoSettings {
  readonly sagas: number
  /** How long the simulated engineer takes to supply condenser data once a saga waits for it. */
  readonly engineerDelay: Duration.Input
}

const line = (saga: SagaInstance) =>
  `  saga ${saga.id.slice(-12)}  v${String(saga.lockVersion).padEnd(3)} ${saga.status.padEnd(12)} ${saga.currentState}`

export const run = (settings: DemoSettings) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    const store = yield* SagaStore
    const ids: Array<SagaId> = []
    for (let i = 1; i <= settings.sagas; i++) {
      const { saga } = yield* engine.start("BALANCE_CALCULATION", {
        repo: `balance/plant-${i}`,
        baseBranch: "main",
        inputRef: `inputs/demo/run-${i}.yaml`,
        requestedBy: "demo"
      })
      ids.push(saga.id)
    }
    yield* Console.log(`started ${ids.length} BALANCE_CALCULATION sagas; their progress follows`)

    const supplied = new Set<SagaId>()
    const engineer = Effect.gen(function* () {
      const waiting = yield* store.find({ state: "AWAITING_CONDENSER_INPUT", limit: 500 })
      for (const saga of waiting.items) {
        if (supplied.has(saga.id) || !ids.includes(saga.id)) continue
        supplied.add(saga.id)
        yield* Effect.forkScoped(
          engine
            .signal(saga.id, "condenser_input", { condenserDataRef: `condenser/${saga.id.slice(-12)}.json` })
            .pipe(Effect.delay(settings.engineerDelay), Effect.ignore)
        )
      }
    }).pipe(Effect.ignore, Effect.repeat(Schedule.spaced("500 millis")))

    const seen = new Map<SagaId, number>()
    let reported = false
    const progress = Effect.gen(function* () {
      const sagas = yield* Effect.forEach(ids, (id) => store.get(id))
      for (const saga of sagas) {
        if (seen.get(saga.id) === saga.lockVersion) continue
        seen.set(saga.id, saga.lockVersion)
        yield* Console.log(line(saga))
      }
      if (!reported && sagas.every((saga) => saga.status !== "RUNNING" && saga.status !== "COMPENSATING")) {
        reported = true
        const count = (status: string) => sagas.filter((saga) => saga.status === status).length
        yield* Console.log(
          `all ${sagas.length} demo sagas finished: ${count("COMPLETED")} completed, ${count("FAILED")} failed, ` +
            `${count("CANCELLED")} cancelled. The service keeps running; Ctrl-C stops it.`
        )
      }
    }).pipe(Effect.ignore, Effect.repeat(Schedule.spaced("250 millis")))

    yield* Effect.forkScoped(engineer)
    yield* Effect.forkScoped(progress)
  })

export const layer = (settings: DemoSettings) => Layer.effectDiscard(run(settings))

export const defaultDemoSettings: DemoSettings = { sagas: 3, engineerDelay: Duration.seconds(2) }
