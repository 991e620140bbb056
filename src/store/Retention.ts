/**
 * Retention: finished sagas (and expired idempotency keys) older than the retention period are deleted, in small
 * batches with a pause between them, so that retention never competes with steps for long. Every instance runs the
 * loop; the store lets one purge at a time (the others find it busy and wait for their next turn).
 */
import { DateTime, Duration, Effect, Layer, Option } from "effect"
import { AppConfig } from "../Config.ts"
import * as Metrics from "../observability/Metrics.ts"
import { SagaStore } from "./SagaStore.ts"

export interface RetentionSettings {
  /** How long finished sagas and idempotency keys are kept. */
  readonly keep: Duration.Duration
  /** Sagas (and keys) deleted per transaction. */
  readonly batchSize: number
  /** Between two batches of one round. */
  readonly pause: Duration.Input
  /** Between two rounds. */
  readonly interval: Duration.Input
}

export const defaultRetentionSettings: Omit<RetentionSettings, "keep"> = {
  batchSize: 500,
  pause: "100 millis",
  interval: "1 minute"
}

/** One round: batches until what is due is gone, or another instance has the turn. Returns what this round deleted. */
export const purgeDue = (settings: RetentionSettings) =>
  Effect.gen(function* () {
    const store = yield* SagaStore
    const finishedBefore = DateTime.subtract(yield* DateTime.now, { milliseconds: Duration.toMillis(settings.keep) })
    let sagas = 0
    let idempotencyKeys = 0
    for (;;) {
      const batch = yield* store.purge({ finishedBefore, limit: settings.batchSize })
      sagas += batch.sagas
      idempotencyKeys += batch.idempotencyKeys
      yield* Metrics.countPurged(batch.sagas, batch.idempotencyKeys)
      if (batch.busy || (batch.sagas < settings.batchSize && batch.idempotencyKeys < settings.batchSize)) break
      yield* Effect.sleep(settings.pause)
    }
    if (sagas + idempotencyKeys > 0) {
      yield* Effect.logInfo("retention: deleted finished sagas and expired idempotency keys", {
        sagas,
        idempotencyKeys
      })
    }
    return { sagas, idempotencyKeys }
  })

export const run = (settings: RetentionSettings) =>
  purgeDue(settings).pipe(
    Effect.catch((error) => Effect.logWarning("retention: purge failed; trying again next round", error.message)),
    Effect.andThen(Effect.sleep(settings.interval)),
    Effect.forever,
    Effect.annotateLogs("component", "retention")
  )

/** Retention as configured (`ORCH_RETENTION`; `off` runs none), over the SagaStore in context. */
export const layer = Layer.unwrap(
  Effect.map(AppConfig, (config) =>
    Option.match(config.retention, {
      onNone: () => Layer.empty,
      onSome: (keep) => Layer.effectDiscard(Effect.forkScoped(run({ ...defaultRetentionSettings, keep })))
    })
  )
)
