import { Schema } from "effect"
import { formatIssues, Issue, issuesOf } from "../domain/errors.ts"

export class UnknownSagaType extends Schema.TaggedError<UnknownSagaType>()("UnknownSagaType", {
  sagaType: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message() {
    return `unknown saga type ${JSON.stringify(this.sagaType)} (known: ${this.known.join(", ") || "none"})`
  }
}

/** The input does not match the saga type's schema: every issue, with its path in the input. */
export class InvalidSagaInput extends Schema.TaggedError<InvalidSagaInput>()("InvalidSagaInput", {
  sagaType: Schema.String,
  issues: Schema.Array(Issue)
}) {
  static fromSchemaError(sagaType: string, error: Schema.SchemaError) {
    return new InvalidSagaInput({ sagaType, issues: issuesOf(error) })
  }

  override get message() {
    return `invalid input for ${this.sagaType}: ${formatIssues(this.issues)}`
  }
}

/** The instance started on a definition version this build does not have: it is parked, never driven by other code. */
export class UnknownDefinitionVersion extends Schema.TaggedError<UnknownDefinitionVersion>()(
  "UnknownDefinitionVersion",
  { sagaId: Schema.String, sagaType: Schema.String, version: Schema.Int }
) {
  override get message() {
    return `saga ${this.sagaId} runs ${this.sagaType} version ${this.version}, which this build does not know: parked`
  }
}

export class SignalNotExpected extends Schema.TaggedError<SignalNotExpected>()("SignalNotExpected", {
  sagaId: Schema.String,
  signal: Schema.String,
  state: Schema.String,
  status: Schema.String
}) {
  override get message() {
    return `saga ${this.sagaId} is in state ${this.state} (${this.status}) and does not wait for signal ${this.signal}`
  }
}

/** The data does not match the signal's schema: every issue, with its path in the data. */
export class InvalidSignalData extends Schema.TaggedError<InvalidSignalData>()("InvalidSignalData", {
  sagaId: Schema.String,
  signal: Schema.String,
  issues: Schema.Array(Issue)
}) {
  static fromSchemaError(target: { readonly sagaId: string; readonly signal: string }, error: Schema.SchemaError) {
    return new InvalidSignalData({ ...target, issues: issuesOf(error) })
  }

  override get message() {
    return `invalid data for signal ${this.signal}: ${formatIssues(this.issues)}`
  }
}

export class SagaFinished extends Schema.TaggedError<SagaFinished>()("SagaFinished", {
  sagaId: Schema.String,
  status: Schema.String
}) {
  override get message() {
    return `saga ${this.sagaId} has already finished (${this.status})`
  }
}

export class NothingToRetry extends Schema.TaggedError<NothingToRetry>()("NothingToRetry", {
  sagaId: Schema.String,
  state: Schema.String
}) {
  override get message() {
    return `saga ${this.sagaId} is in state ${this.state}, which waits for a signal: there is no task to retry`
  }
}

/** The saga's engine bookkeeping is missing or malformed (written by something other than this engine). */
export class CorruptProgress extends Schema.TaggedError<CorruptProgress>()("CorruptProgress", {
  sagaId: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `saga ${this.sagaId} has no readable engine state: ${this.reason}`
  }
}
