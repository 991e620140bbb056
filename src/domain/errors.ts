import { Effect, Schema, SchemaIssue } from "effect"

/** One thing wrong with a value: where in it (`["repo"]`, `["steps", 0, "name"]`; empty for the value itself), and what. */
export const Issue = Schema.Struct({
  path: Schema.Array(Schema.Union([Schema.String, Schema.Number])),
  message: Schema.String
})
export type Issue = typeof Issue.Type

const standardIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** Every issue of a failed decode, each with its path in the decoded value (decode with `{ errors: "all" }`). */
export const issuesOf = (error: Schema.SchemaError): ReadonlyArray<Issue> =>
  standardIssues(error.issue).issues.map((issue) => ({
    path: (issue.path ?? []).map((segment) => {
      const key = typeof segment === "object" ? segment.key : segment
      return typeof key === "number" ? key : String(key)
    }),
    message: issue.message
  }))

/** `repo: expected a non-empty string; inputRef: …`, for messages and logs. */
export const formatIssues = (issues: ReadonlyArray<Issue>): string =>
  issues
    .map((issue) => (issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`))
    .join("; ")

export class SagaNotFound extends Schema.TaggedError<SagaNotFound>()("SagaNotFound", {
  sagaId: Schema.String
}) {
  override get message() {
    return `saga ${this.sagaId} does not exist`
  }
}

/** The saga moved on since the caller read it (optimistic lock on `lock_version`). */
export class VersionConflict extends Schema.TaggedError<VersionConflict>()("VersionConflict", {
  sagaId: Schema.String,
  expected: Schema.Int,
  actual: Schema.Int
}) {
  override get message() {
    return `saga ${this.sagaId} is at version ${this.actual}, not ${this.expected}`
  }
}

/** The context is larger than the configured limit: business data belongs in GitLab, not in the state store. */
export class ContextTooLarge extends Schema.TaggedError<ContextTooLarge>()("ContextTooLarge", {
  bytes: Schema.Int,
  limit: Schema.Int
}) {
  override get message() {
    return `saga context is ${this.bytes} bytes, over the limit of ${this.limit} bytes; keep references in the context, not data`
  }
}

/** A saga or a step produced data the store refuses: which field, and what is wrong with it. */
export class InvalidSagaData extends Schema.TaggedError<InvalidSagaData>()("InvalidSagaData", {
  field: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `invalid ${this.field}: ${this.reason}`
  }
}

/** The idempotency key already started a saga that differs from this request. */
export class IdempotencyConflict extends Schema.TaggedError<IdempotencyConflict>()("IdempotencyConflict", {
  idempotencyKey: Schema.String,
  existingSagaId: Schema.String,
  existingSagaType: Schema.String
}) {
  override get message() {
    return `idempotency key ${this.idempotencyKey} already started saga ${this.existingSagaId} of type ${this.existingSagaType}`
  }
}

/**
 * The database could not be reached or kept failing after the retries. Nothing was written, unless `commitInDoubt`:
 * the connection died around COMMIT, so the change may have been applied, whole. `reason` is what the server or the
 * driver said, for operators.
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  operation: Schema.String,
  reason: Schema.String,
  commitInDoubt: Schema.Boolean.pipe(Schema.withConstructorDefault(Effect.succeed(false)))
}) {
  override get message() {
    const outcome = this.commitInDoubt ? "; a commit was in doubt: it may have been applied" : ""
    return `state store unavailable during ${this.operation}: ${this.reason}${outcome}`
  }
}
