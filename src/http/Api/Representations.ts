/**
 * The JSON representations of the HTTP API, camelCase, as clients see them: requests, instances, history, pages and
 * stuck sagas. Separate from the domain classes so the wire format changes only on purpose. The CLI's `--json`
 * prints them too.
 */
import { Duration, Effect, Option, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { SagaContext, SagaId, SagaStatus } from "../../domain/Saga.ts"
import { storable } from "../../domain/Storable.ts"

/** A short identifier or name given by a client (saga type, state, correlation id, idempotency key). */
export const Name = Schema.NonEmptyString.check(Schema.isMaxLength(255), storable)

/** Any JSON value that PostgreSQL can store, nested at most 64 deep. */
export const JsonValue = Schema.Json.check(storable)

/** A JSON object that PostgreSQL can store, nested at most 64 deep. */
export const JsonObject = SagaContext.check(storable)

/**
 * `P…`/`PT…` ISO 8601 duration with a fixed length: weeks, days, hours, minutes, seconds (no years or months), at
 * most 100 years, decoded into a `Duration`. The one parser of the durations the API and the CLI take.
 */
const maxDuration = Duration.days(36_500)

export const IsoDuration = Schema.String.annotate({
  description: "ISO 8601 duration, e.g. `PT15M`, `PT2H`, `P1D`",
  examples: ["PT15M"]
}).pipe(
  Schema.decodeTo(
    Schema.Duration,
    SchemaTransformation.transformEffect({
      decode: (text, options) =>
        Option.match(
          Option.filter(
            Duration.fromIso(text),
            (d) => Duration.isGreaterThanOrEqualTo(d, Duration.zero) && Duration.isLessThanOrEqualTo(d, maxDuration)
          ),
          {
            onNone: () =>
              Effect.fail(
                new SchemaIssue.InvalidValue(
                  {
                    message:
                      "expected a non-negative ISO 8601 duration of at most 100 years (P36500D), such as PT15M, PT2H or P1D"
                  },
                  text,
                  options
                )
              ),
            onSome: Effect.succeed
          }
        ),
      encode: (duration) => Effect.succeed(Option.getOrElse(Duration.formatIso(duration), () => "PT0S"))
    })
  )
)

/** A page size from the query string. */
export const PageSize = Schema.NumberFromString.check(Schema.isInt(), Schema.isBetween({ minimum: 1, maximum: 500 }))

const Timestamp = Schema.DateTimeUtcFromString.annotate({ description: "RFC 3339 timestamp, UTC" })

export const StartSagaRequest = Schema.Struct({
  type: Name.annotate({ description: "Saga type, e.g. `BALANCE_CALCULATION`", examples: ["BALANCE_CALCULATION"] }),
  input: JsonValue.annotate({ description: "The saga's input, validated against the saga type's schema" }),
  correlationId: Schema.optionalKey(Name.annotate({ description: "End-to-end trace id; defaults to the saga id" })),
  idempotencyKey: Schema.optionalKey(
    Name.annotate({ description: "Same key → same saga: a repeated start returns the saga the key first started" })
  )
}).annotate({ identifier: "StartSagaRequest" })

export const SignalRequest = Schema.Struct({
  data: JsonValue.annotate({ description: "The signal's data, validated against the signal's schema" })
}).annotate({ identifier: "SignalRequest" })

const StepFailure = Schema.Struct({
  step: Schema.String.annotate({ description: "The step or compensation that failed" }),
  code: Schema.String.annotate({ description: "e.g. `timeout`, `cancelled`, or the worker's error code" }),
  message: Schema.String
}).annotate({ identifier: "StepFailure" })

export const Awaited = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("reply"), taskId: Schema.String, taskType: Schema.String }),
  Schema.Struct({ kind: Schema.Literal("signal"), name: Schema.String }),
  Schema.Struct({
    kind: Schema.Literal("timer"),
    reason: Schema.String.annotate({ description: "e.g. `retry meshGeometry`: a back-off before the next attempt" })
  })
]).annotate({ identifier: "Awaited", description: "What the saga waits for" })

export const Progress = Schema.Struct({
  definitionVersion: Schema.Int.annotate({
    description: "The version of the saga definition the saga started with, and the only one that drives it"
  }),
  step: Schema.Int.annotate({
    description: "Index (from 0) of the forward step in progress; the number of steps once the saga completed"
  }),
  attempt: Schema.Int.annotate({
    description: "Attempts started of the current task (forward step or compensation); 0 while no task is sent"
  }),
  awaiting: Schema.NullOr(Awaited).annotate({ description: "null when nothing automatic is awaited" }),
  deadline: Schema.NullOr(Timestamp).annotate({
    description: "When waiting ends: the reply or signal times out, or the back-off is over"
  }),
  heartbeat: Schema.NullOr(
    Schema.Struct({
      at: Timestamp.annotate({ description: "When the worker last sent one" }),
      percent: Schema.optionalKey(Schema.Number.annotate({ description: "How far the worker says it is, 0 to 100" })),
      message: Schema.optionalKey(Schema.String.annotate({ description: "The worker's own words on its progress" }))
    })
  ).annotate({ description: "The awaited task's last heartbeat, with its progress; null when none came" }),
  completed: Schema.Array(Schema.String).annotate({ description: "Forward steps completed, in order" }),
  compensation: Schema.NullOr(
    Schema.Struct({
      outcome: Schema.Literals(["FAILED", "CANCELLED"]).annotate({ description: "How the saga ends once undone" }),
      pending: Schema.Array(Schema.String).annotate({ description: "Steps still to undo, the next one first" }),
      reason: StepFailure.annotate({ description: "Why the saga is compensating" }),
      stuck: Schema.NullOr(StepFailure).annotate({
        description: "Set when a compensation kept failing: the saga waits for an operator to retry or cancel it"
      })
    })
  ).annotate({ description: "null unless the saga is undoing its steps" })
}).annotate({
  identifier: "Progress",
  description:
    "The engine's bookkeeping, read-only: where the saga is, what it waits for and until when, what it completed, " +
    "and what it is undoing and why"
})
export type Progress = typeof Progress.Type

export const Saga = Schema.Struct({
  id: SagaId.annotate({ description: "UUID (v7: ids sort by creation time)" }),
  sagaType: Schema.String,
  currentState: Schema.String,
  status: SagaStatus,
  context: SagaContext.annotate({
    description:
      "Saga variables, exactly as the saga definition keeps them: references into GitLab and task ids, never " +
      "business data"
  }),
  progress: Schema.NullOr(Progress).annotate({
    description: "null only when the stored bookkeeping cannot be read by this version of the service"
  }),
  correlationId: Schema.String,
  lockVersion: Schema.Int.annotate({ description: "Optimistic lock, +1 on every change; the ETag is its value" }),
  createdAt: Timestamp,
  updatedAt: Timestamp
}).annotate({ identifier: "Saga", description: "A saga instance" })
export type Saga = typeof Saga.Type

export const HistoryEntry = Schema.Struct({
  lockVersion: Schema.Int,
  fromState: Schema.NullOr(Schema.String),
  toState: Schema.String,
  status: SagaStatus,
  event: Schema.String,
  at: Timestamp
}).annotate({ identifier: "HistoryEntry", description: "One transition: exactly one per lock version" })

export const SagaWithHistory = Schema.Struct({
  ...Saga.fields,
  history: Schema.Array(HistoryEntry).annotate({ description: "Every transition, in version order" })
}).annotate({ identifier: "SagaWithHistory" })

export const SagaPage = Schema.Struct({
  items: Schema.Array(Saga),
  nextCursor: Schema.NullOr(Schema.String).annotate({
    description: "Pass as `cursor` for the next page; null on the last page"
  })
}).annotate({ identifier: "SagaPage" })
export type SagaPage = typeof SagaPage.Type

export const WaitingFor = Schema.Union([
  Schema.Struct({
    kind: Schema.Literal("reply"),
    taskId: Schema.String,
    taskType: Schema.String,
    dueAt: Timestamp.annotate({ description: "When the step times out" })
  }),
  Schema.Struct({
    kind: Schema.Literal("signal"),
    name: Schema.String,
    dueAt: Timestamp.annotate({ description: "When waiting for the signal times out" })
  }),
  Schema.Struct({
    kind: Schema.Literal("timer"),
    reason: Schema.String,
    dueAt: Timestamp.annotate({ description: "When the timer fires (e.g. the end of a retry back-off)" })
  }),
  Schema.Struct({
    kind: Schema.Literal("operator"),
    reason: Schema.String.annotate({ description: "Why nothing automatic will move the saga on" })
  })
]).annotate({ identifier: "WaitingFor", description: "What an active saga waits for" })
export type WaitingFor = typeof WaitingFor.Type

export const StuckSaga = Schema.Struct({ saga: Saga, waitingFor: WaitingFor }).annotate({ identifier: "StuckSaga" })

export const StuckSagas = Schema.Struct({
  olderThan: IsoDuration.pipe(
    Schema.annotateEncoded({ description: "The threshold applied, as an ISO 8601 duration" })
  ),
  items: Schema.Array(StuckSaga).annotate({ description: "Oldest change first" })
}).annotate({ identifier: "StuckSagas" })
export type StuckSagas = typeof StuckSagas.Type

export const Liveness = Schema.Struct({ status: Schema.Literal("ok") }).annotate({ identifier: "Liveness" })

export const CheckResult = Schema.Struct({
  ok: Schema.Boolean,
  detail: Schema.optionalKey(Schema.String)
}).annotate({ identifier: "CheckResult" })

export const ReadinessChecks = Schema.Struct({
  database: CheckResult,
  schema: CheckResult,
  broker: CheckResult
}).annotate({ identifier: "ReadinessChecks" })
export type ReadinessChecks = typeof ReadinessChecks.Type

export const Readiness = Schema.Struct({ status: Schema.Literal("ready"), checks: ReadinessChecks }).annotate({
  identifier: "Readiness"
})
