import { Schema } from "effect"

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
 * The database could not be reached or kept failing after the retries. Nothing was written, unless the reason says
 * that a commit was in doubt (the connection died around COMMIT): then the change may have been applied, whole.
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  operation: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `state store unavailable during ${this.operation}: ${this.reason}`
  }
}
