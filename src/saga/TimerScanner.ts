/**
 * Fires due timers: step timeouts, retry back-offs, signal deadlines. Claims are leased (see `SagaStore.claimDue`)
 * and fired at the claimed lock version, so several instances never fire the same timer twice: the second one
 * finds the saga moved on (a version conflict) and lets it be.
 */
import { DateTime, Duration, Effect, Layer, Schedule } from "effect"
import type { DueTimer } from "../domain/Saga.ts"
import { SagaStore } from "../store/SagaStore.ts"
import { Engine } from "./Engine.ts"

export interface ScannerSettings {
  readonly batchSize: number
  readonly idleDelay: Duration.Input
}

export const defaultScannerSettings: ScannerSettings = { batchSize: 100, idleDelay: "500 millis" }

const fire = (timer: DueTimer) =>
  Effect.flatMap(Engine, (engine) => engine.fire(timer)).pipe(
    Effect.asVoid,
    Effect.catchTags({
      VersionConflict: () => Effect.void,
      UnknownDefinitionVersion: (e) => Effect.logWarning(e.message)
    }),
    Effect.catch((error) => Effect.logError("timer not fired; it comes due again after its lease", error.message)),
    Effect.annotateLogs({ sagaId: timer.sagaId })
  )

/** Claims and fires one batch; returns how many timers were due. Only firing is traced, not the polling. */
export const scanOnce = (batchSize: number) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const due = yield* store.claimDue(yield* DateTime.now, batchSize).pipe(Effect.withTracerEnabled(false))
    yield* Effect.forEach(due, fire, { concurrency: 8, discard: true })
    return due.length
  })

export const run = (settings: ScannerSettings = defaultScannerSettings) =>
  scanOnce(settings.batchSize).pipe(
    Effect.flatMap((fired) => (fired < settings.batchSize ? Effect.sleep(settings.idleDelay) : Effect.void)),
    Effect.catch((error) =>
      Effect.logWarning("timer scan failed; retrying", error.message).pipe(
        Effect.andThen(Effect.sleep(Duration.seconds(1)))
      )
    ),
    Effect.repeat(Schedule.forever),
    Effect.annotateLogs("component", "timer-scanner")
  )

export const layer = (settings: ScannerSettings = defaultScannerSettings) =>
  Layer.effectDiscard(Effect.forkScoped(run(settings)))
