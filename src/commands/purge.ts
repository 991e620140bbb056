/**
 * `orchestrator purge`: retention on demand, as the service runs it — finished sagas last changed before the cut-off,
 * with their history, timers and ignored events, and idempotency keys older than it. `--dry-run` only counts.
 */
import { Console, DateTime, Duration, Effect, Layer, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { AppConfig, InvalidConfig } from "../Config.ts"
import * as R from "../http/Api/Representations.ts"
import * as PgSagaStore from "../store/PgSagaStore.ts"
import * as Retention from "../store/Retention.ts"
import { SagaStore } from "../store/SagaStore.ts"

const onDatabase = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    if (config.database._tag === "Embedded") {
      return yield* new InvalidConfig({ reason: "ORCH_DB_HOST is not set: purge needs the database" })
    }
    return PgSagaStore.layerDatabase(config.database.config, { maxConnections: 1 })
  })
)

export const purge = Command.make(
  "purge",
  {
    olderThan: Flag.String("older-than").pipe(
      Flag.withSchema(R.IsoDuration),
      Flag.withDescription("Finished for longer than this ISO 8601 duration (default: ORCH_RETENTION), e.g. P30D"),
      Flag.optional
    ),
    dryRun: Flag.Boolean("dry-run").pipe(
      Flag.withDescription("Count what would go; delete nothing"),
      Flag.withDefault(false)
    )
  },
  Effect.fnUntraced(function* ({ olderThan, dryRun }) {
    const config = yield* AppConfig
    const keep = Option.orElse(olderThan, () => config.retention)
    if (Option.isNone(keep)) {
      return yield* new InvalidConfig({ reason: "ORCH_RETENTION is off: say how old with --older-than, e.g. P30D" })
    }
    const store = yield* SagaStore
    const finishedBefore = DateTime.subtract(yield* DateTime.now, { milliseconds: Duration.toMillis(keep.value) })
    const cutoff = DateTime.formatIso(finishedBefore)
    if (dryRun) {
      const due = yield* store.purge({ finishedBefore, limit: 0, dryRun: true })
      return yield* Console.log(
        `would delete ${due.sagas} finished sagas and ${due.idempotencyKeys} idempotency keys older than ${cutoff}`
      )
    }
    const done = yield* Retention.purgeDue({ ...Retention.defaultRetentionSettings, keep: keep.value })
    yield* Console.log(
      `deleted ${done.sagas} finished sagas and ${done.idempotencyKeys} idempotency keys older than ${cutoff}`
    )
  }, Effect.provide(onDatabase))
).pipe(Command.withDescription("Delete finished sagas and idempotency keys past the retention period"))
