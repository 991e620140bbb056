/**
 * The API's errors, as RFC 9457 problem details (`application/problem+json`). Each problem type has its own `type`
 * URI, a fixed status and title, a `detail` saying what is wrong, and, for bad input, `errors`: one entry per
 * offending value with its path (`["payload", "input", "repo"]`, `["query", "limit"]`, `["headers", "if-match"]`)
 * and what is wrong with it — the same shape as the 400 the framework gives for a request that fails decoding.
 */
import { Schema } from "effect"
import { HttpApiError } from "effect/http-api"
import { ReadinessChecks } from "./Representations.ts"

const problemType = (name: string) => `urn:saga-orchestrator:problem:${name}` as const

/** Where in the request a value is, and what is wrong with it. */
export const ProblemIssue = HttpApiError.ProblemIssue
export type ProblemIssue = typeof ProblemIssue.Type

const detail = Schema.String
const errors = Schema.Array(ProblemIssue)

export class Unauthorized extends HttpApiError.Problem<Unauthorized>()(
  "Unauthorized",
  { type: problemType("unauthorized"), status: 401, title: "Missing or invalid bearer token" },
  { detail }
) {}

export class UnknownSagaType extends HttpApiError.Problem<UnknownSagaType>()(
  "UnknownSagaType",
  { type: problemType("unknown-saga-type"), status: 400, title: "Unknown saga type" },
  { detail, errors, knownTypes: Schema.Array(Schema.String) }
) {}

export class InvalidSagaInput extends HttpApiError.Problem<InvalidSagaInput>()(
  "InvalidSagaInput",
  { type: problemType("invalid-saga-input"), status: 400, title: "Input does not match the saga type's schema" },
  { detail, errors }
) {}

export class InvalidSignalData extends HttpApiError.Problem<InvalidSignalData>()(
  "InvalidSignalData",
  { type: problemType("invalid-signal-data"), status: 400, title: "Data does not match the signal's schema" },
  { detail, errors }
) {}

export class ContextTooLarge extends HttpApiError.Problem<ContextTooLarge>()(
  "ContextTooLarge",
  { type: problemType("context-too-large"), status: 400, title: "Saga context too large" },
  { detail, errors, bytes: Schema.Int, limit: Schema.Int }
) {}

export class InvalidParameter extends HttpApiError.Problem<InvalidParameter>()(
  "InvalidParameter",
  { type: problemType("invalid-parameter"), status: 400, title: "Invalid request parameter" },
  { detail, errors }
) {}

export class SagaNotFound extends HttpApiError.Problem<SagaNotFound>()(
  "SagaNotFound",
  { type: problemType("saga-not-found"), status: 404, title: "Saga not found" },
  { detail, sagaId: Schema.String }
) {}

export class SignalNotExpected extends HttpApiError.Problem<SignalNotExpected>()(
  "SignalNotExpected",
  { type: problemType("signal-not-expected"), status: 409, title: "The saga does not wait for this signal" },
  { detail, sagaId: Schema.String, signal: Schema.String, currentState: Schema.String, sagaStatus: Schema.String }
) {}

export class SagaFinished extends HttpApiError.Problem<SagaFinished>()(
  "SagaFinished",
  { type: problemType("saga-finished"), status: 409, title: "The saga has already finished" },
  { detail, sagaId: Schema.String, sagaStatus: Schema.String }
) {}

export class NothingToRetry extends HttpApiError.Problem<NothingToRetry>()(
  "NothingToRetry",
  { type: problemType("nothing-to-retry"), status: 409, title: "The saga has no task to retry" },
  { detail, sagaId: Schema.String, currentState: Schema.String }
) {}

export class IdempotencyConflict extends HttpApiError.Problem<IdempotencyConflict>()(
  "IdempotencyConflict",
  { type: problemType("idempotency-conflict"), status: 409, title: "Idempotency key already used" },
  { detail, existingSagaId: Schema.String, existingSagaType: Schema.String }
) {}

export class VersionMismatch extends HttpApiError.Problem<VersionMismatch>()(
  "VersionMismatch",
  { type: problemType("version-mismatch"), status: 412, title: "The saga changed since it was read" },
  { detail, sagaId: Schema.String, expectedVersion: Schema.Int, currentVersion: Schema.Int }
) {}

export class IfMatchRequired extends HttpApiError.Problem<IfMatchRequired>()(
  "IfMatchRequired",
  { type: problemType("if-match-required"), status: 428, title: "If-Match required" },
  { detail }
) {}

export class ServiceUnavailable extends HttpApiError.Problem<ServiceUnavailable>()(
  "ServiceUnavailable",
  { type: problemType("service-unavailable"), status: 503, title: "Service temporarily unavailable" },
  { detail }
) {}

export class NotReady extends HttpApiError.Problem<NotReady>()(
  "NotReady",
  { type: problemType("not-ready"), status: 503, title: "Not ready" },
  { detail, checks: ReadinessChecks }
) {}
