/**
 * From the errors of the engine and the store to the API's problems. Bad input and conflicts become 4xx problems
 * that say what is wrong; an unavailable store becomes a 503 (its details are logged, not shown); anything else is a
 * defect (a 500, logged) — never a client's fault.
 */
import { Effect, type Schema, SchemaIssue } from "effect"
import type * as DomainErrors from "../../domain/errors.ts"
import type * as SagaErrors from "../../saga/errors.ts"
import * as Problems from "../Api/Problems.ts"

type Path = ReadonlyArray<string | number>

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** One problem issue per schema issue, each with its path under `prefix` (e.g. `["payload", "input"]`). */
export const issuesOf = (error: Schema.SchemaError, prefix: Path): Array<Problems.ProblemIssue> =>
  formatIssues(error.issue).issues.map((issue) => ({
    path: [
      ...prefix,
      ...(issue.path ?? []).map((segment) => {
        const key = typeof segment === "object" ? segment.key : segment
        return typeof key === "number" ? key : String(key)
      })
    ],
    message: issue.message
  }))

export const sagaNotFound = (error: DomainErrors.SagaNotFound) =>
  new Problems.SagaNotFound({ detail: error.message, sagaId: error.sagaId })

export const versionMismatch = (error: DomainErrors.VersionConflict) =>
  new Problems.VersionMismatch({
    detail: `${error.message}: read the saga again (its ETag is "${error.actual}") and decide again`,
    sagaId: error.sagaId,
    expectedVersion: error.expected,
    currentVersion: error.actual
  })

export const contextTooLarge = (error: DomainErrors.ContextTooLarge, path: Path) =>
  new Problems.ContextTooLarge({
    detail: error.message,
    errors: [{ path, message: `would make the saga context ${error.bytes} bytes, over the limit of ${error.limit}` }],
    bytes: error.bytes,
    limit: error.limit
  })

export const invalidData = (error: DomainErrors.InvalidSagaData, slot: string) =>
  new Problems.InvalidParameter({
    detail: error.message,
    errors: [{ path: [slot, error.field], message: error.reason }]
  })

export const idempotencyConflict = (error: DomainErrors.IdempotencyConflict) =>
  new Problems.IdempotencyConflict({
    detail: `${error.message}: use a new key to start a saga of another type`,
    existingSagaId: error.existingSagaId,
    existingSagaType: error.existingSagaType
  })

export const unknownSagaType = (error: SagaErrors.UnknownSagaType) =>
  new Problems.UnknownSagaType({
    detail: error.message,
    errors: [{ path: ["payload", "type"], message: `unknown saga type; known: ${error.known.join(", ") || "none"}` }],
    knownTypes: error.known
  })

export const signalNotExpected = (error: SagaErrors.SignalNotExpected) =>
  new Problems.SignalNotExpected({
    detail: error.message,
    sagaId: error.sagaId,
    signal: error.signal,
    currentState: error.state,
    sagaStatus: error.status
  })

export const sagaFinished = (error: SagaErrors.SagaFinished) =>
  new Problems.SagaFinished({ detail: error.message, sagaId: error.sagaId, sagaStatus: error.status })

export const nothingToRetry = (error: SagaErrors.NothingToRetry) =>
  new Problems.NothingToRetry({ detail: error.message, sagaId: error.sagaId, currentState: error.state })

/** The store's reason (SQL state, server message) goes to the log; the client learns whether to retry. */
export const storeUnavailable = (error: DomainErrors.StoreUnavailable) =>
  Effect.logWarning("HTTP request failed: state store unavailable", error.message).pipe(
    Effect.andThen(
      Effect.fail(
        new Problems.ServiceUnavailable({
          detail: error.reason.includes("commit was in doubt")
            ? `the state store became unavailable while committing (${error.operation}): the change may have been applied; read the saga before trying again`
            : `the state store is unavailable (${error.operation}); nothing was changed: try again later`
        })
      )
    )
  )

/**
 * A saga this build cannot drive (started on an unknown definition version, or with unreadable engine state): the
 * request was fine, the instance is not, and an operator must look — a 503 here, and the instance's id in the log.
 */
export const cannotDrive = (error: SagaErrors.UnknownDefinitionVersion | SagaErrors.CorruptProgress) =>
  Effect.logError("HTTP request on a saga this build cannot drive", error.message).pipe(
    Effect.andThen(
      Effect.fail(
        new Problems.ServiceUnavailable({ detail: `${error.message}; another version of the service may handle it` })
      )
    )
  )
