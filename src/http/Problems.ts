/**
 * The API's errors, as RFC 9457 problem details (`application/problem+json`), and the one table from the engine's and
 * the store's errors to them.
 *
 * Each problem type has its own `type` URI (`urn:saga-orchestrator:problem:<kebab-case name>`), a fixed status and
 * title, a `detail` saying what is wrong, and, for bad input, `errors`: one entry per offending value with its path
 * (`["payload", "input", "repo"]`, `["query", "limit"]`, `["headers", "if-match"]`) and what is wrong with it — the
 * same shape as the 400 the framework gives for a request that fails decoding. Bad input and conflicts become 4xx
 * problems built from the error's fields; an unavailable store becomes a 503 (its details are logged, not shown).
 *
 * No server code here: `Api.ts` declares these. The 4xx the framework answers before any handler runs are made
 * problems by `Problems/responses.ts`.
 */
import { Effect, Schema } from "effect"
import { HttpApiError } from "effect/http-api"
import * as DomainErrors from "../domain/errors.ts"
import * as SagaErrors from "../saga/errors.ts"
import { ReadinessChecks } from "./Api/Representations.ts"

/** Where in the request a value is, and what is wrong with it. */
export const ProblemIssue = HttpApiError.ProblemIssue
export type ProblemIssue = typeof ProblemIssue.Type
type Path = ReadonlyArray<string | number>

type Kebab<S extends string> = S extends `${infer Head}${infer Tail}`
  ? `${Head extends Lowercase<Head> ? Head : `-${Lowercase<Head>}`}${Kebab<Tail>}`
  : ""
type TypeUri<Tag extends string> = `urn:saga-orchestrator:problem:${Kebab<Uncapitalize<Tag>>}`

/** `SagaNotFound` → `urn:saga-orchestrator:problem:saga-not-found`. */
const typeUri = <Tag extends string>(tag: Tag) =>
  `urn:saga-orchestrator:problem:${tag.replace(/(?<!^)[A-Z]/g, (c) => `-${c}`).toLowerCase()}` as TypeUri<Tag>

/** A problem class: its type URI from its name, a `detail`, and its own fields. */
const problem =
  <Self>() =>
  <const Tag extends string, const Status extends number, const Fields extends HttpApiError.ProblemExtensionFields>(
    tag: Tag,
    status: Status,
    title: string,
    fields: Fields
  ) =>
    HttpApiError.Problem<Self>()(tag, { type: typeUri(tag), status, title }, { detail: Schema.String, ...fields })

const errors = Schema.Array(ProblemIssue)
const sagaId = Schema.String

export class Unauthorized extends problem<Unauthorized>()("Unauthorized", 401, "Missing or invalid bearer token", {}) {}

export class UnknownSagaType extends problem<UnknownSagaType>()("UnknownSagaType", 400, "Unknown saga type", {
  errors,
  knownTypes: Schema.Array(Schema.String)
}) {}

export class InvalidSagaInput extends problem<InvalidSagaInput>()(
  "InvalidSagaInput",
  400,
  "Input does not match the saga type's schema",
  { errors }
) {}

export class InvalidSignalData extends problem<InvalidSignalData>()(
  "InvalidSignalData",
  400,
  "Data does not match the signal's schema",
  { errors }
) {}

export class ContextTooLarge extends problem<ContextTooLarge>()("ContextTooLarge", 400, "Saga context too large", {
  errors,
  bytes: Schema.Int,
  limit: Schema.Int
}) {}

export class InvalidParameter extends problem<InvalidParameter>()(
  "InvalidParameter",
  400,
  "Invalid request parameter",
  { errors }
) {}

export class SagaNotFound extends problem<SagaNotFound>()("SagaNotFound", 404, "Saga not found", { sagaId }) {}

export class SignalNotExpected extends problem<SignalNotExpected>()(
  "SignalNotExpected",
  409,
  "The saga does not wait for this signal",
  { sagaId, signal: Schema.String, currentState: Schema.String, sagaStatus: Schema.String }
) {}

export class SagaFinished extends problem<SagaFinished>()("SagaFinished", 409, "The saga has already finished", {
  sagaId,
  sagaStatus: Schema.String
}) {}

export class NothingToRetry extends problem<NothingToRetry>()("NothingToRetry", 409, "The saga has no task to retry", {
  sagaId,
  currentState: Schema.String
}) {}

export class IdempotencyConflict extends problem<IdempotencyConflict>()(
  "IdempotencyConflict",
  409,
  "Idempotency key already used",
  { existingSagaId: Schema.String, existingSagaType: Schema.String }
) {}

export class VersionMismatch extends problem<VersionMismatch>()(
  "VersionMismatch",
  412,
  "The saga changed since it was read",
  { sagaId, expectedVersion: Schema.Int, currentVersion: Schema.Int }
) {}

export class IfMatchRequired extends problem<IfMatchRequired>()("IfMatchRequired", 428, "If-Match required", {}) {}

export class ServiceUnavailable extends problem<ServiceUnavailable>()(
  "ServiceUnavailable",
  503,
  "Service temporarily unavailable",
  {
    commitInDoubt: Schema.Boolean.annotate({
      description:
        "true: the store became unavailable while committing, so the change may have been applied; read the saga " +
        "before trying again. false: nothing was changed"
    })
  }
) {}

export class NotReady extends problem<NotReady>()("NotReady", 503, "Not ready", { checks: ReadinessChecks }) {}

/** Where in the request the data an error is about came from. */
export interface Origin {
  /** The request value that becomes saga data (`["payload", "input"]`): where its issues and its size are. */
  readonly data?: Path
  /** The part of the request whose fields the store checks (`"payload"`, `"query"`). */
  readonly fields?: "payload" | "query"
}

const under = (prefix: Path, issues: ReadonlyArray<DomainErrors.Issue>): Array<ProblemIssue> =>
  issues.map((issue) => ({ path: [...prefix, ...issue.path], message: issue.message }))

/** From each error of the engine and the store to its problem. */
const table = {
  SagaNotFound: (error: DomainErrors.SagaNotFound) =>
    Effect.fail(new SagaNotFound({ detail: error.message, sagaId: error.sagaId })),
  VersionConflict: (error: DomainErrors.VersionConflict) =>
    Effect.fail(
      new VersionMismatch({
        detail: `${error.message}: read the saga again (its ETag is "${error.actual}") and decide again`,
        sagaId: error.sagaId,
        expectedVersion: error.expected,
        currentVersion: error.actual
      })
    ),
  ContextTooLarge: (error: DomainErrors.ContextTooLarge, origin: Origin) =>
    Effect.fail(
      new ContextTooLarge({
        detail: error.message,
        errors: [
          {
            path: origin.data ?? ["payload"],
            message: `would make the saga context ${error.bytes} bytes, over the limit of ${error.limit}`
          }
        ],
        bytes: error.bytes,
        limit: error.limit
      })
    ),
  InvalidSagaData: (error: DomainErrors.InvalidSagaData, origin: Origin) =>
    Effect.fail(
      new InvalidParameter({
        detail: error.message,
        errors: [{ path: [origin.fields ?? "payload", error.field], message: error.reason }]
      })
    ),
  IdempotencyConflict: (error: DomainErrors.IdempotencyConflict) =>
    Effect.fail(
      new IdempotencyConflict({
        detail: `${error.message}: use a new key to start a saga of another type`,
        existingSagaId: error.existingSagaId,
        existingSagaType: error.existingSagaType
      })
    ),
  /** The store's reason (SQL state, server message) goes to the log; the client learns whether to retry. */
  StoreUnavailable: (error: DomainErrors.StoreUnavailable) =>
    Effect.logWarning("HTTP request failed: state store unavailable", error.message).pipe(
      Effect.andThen(
        Effect.fail(
          new ServiceUnavailable({
            detail: error.commitInDoubt
              ? `the state store became unavailable while committing (${error.operation}): the change may have been applied; read the saga before trying again`
              : `the state store is unavailable (${error.operation}); nothing was changed: try again later`,
            commitInDoubt: error.commitInDoubt
          })
        )
      )
    ),
  UnknownSagaType: (error: SagaErrors.UnknownSagaType) =>
    Effect.fail(
      new UnknownSagaType({
        detail: error.message,
        errors: [
          { path: ["payload", "type"], message: `unknown saga type; known: ${error.known.join(", ") || "none"}` }
        ],
        knownTypes: error.known
      })
    ),
  InvalidSagaInput: (error: SagaErrors.InvalidSagaInput, origin: Origin) =>
    Effect.fail(
      new InvalidSagaInput({
        detail: `the input does not match the schema of ${error.sagaType}`,
        errors: under(origin.data ?? ["payload"], error.issues)
      })
    ),
  InvalidSignalData: (error: SagaErrors.InvalidSignalData, origin: Origin) =>
    Effect.fail(
      new InvalidSignalData({
        detail: `the data does not match the schema of signal ${error.signal}`,
        errors: under(origin.data ?? ["payload"], error.issues)
      })
    ),
  SignalNotExpected: (error: SagaErrors.SignalNotExpected) =>
    Effect.fail(
      new SignalNotExpected({
        detail: error.message,
        sagaId: error.sagaId,
        signal: error.signal,
        currentState: error.state,
        sagaStatus: error.status
      })
    ),
  SagaFinished: (error: SagaErrors.SagaFinished) =>
    Effect.fail(new SagaFinished({ detail: error.message, sagaId: error.sagaId, sagaStatus: error.status })),
  NothingToRetry: (error: SagaErrors.NothingToRetry) =>
    Effect.fail(new NothingToRetry({ detail: error.message, sagaId: error.sagaId, currentState: error.state })),
  UnknownDefinitionVersion: (error: SagaErrors.UnknownDefinitionVersion) => cannotDrive(error),
  CorruptProgress: (error: SagaErrors.CorruptProgress) => cannotDrive(error)
}

/**
 * A saga this build cannot drive (started on an unknown definition version, or with unreadable engine state): the
 * request was fine, the instance is not, and an operator must look — a 503 here, and the instance's id in the log.
 */
const cannotDrive = (error: SagaErrors.UnknownDefinitionVersion | SagaErrors.CorruptProgress) =>
  Effect.logError("HTTP request on a saga this build cannot drive", error.message).pipe(
    Effect.andThen(
      Effect.fail(
        new ServiceUnavailable({
          detail: `${error.message}; another version of the service may handle it`,
          commitInDoubt: false
        })
      )
    )
  )

const refusalClasses = [
  DomainErrors.SagaNotFound,
  DomainErrors.VersionConflict,
  DomainErrors.ContextTooLarge,
  DomainErrors.InvalidSagaData,
  DomainErrors.IdempotencyConflict,
  DomainErrors.StoreUnavailable,
  SagaErrors.UnknownSagaType,
  SagaErrors.InvalidSagaInput,
  SagaErrors.InvalidSignalData,
  SagaErrors.SignalNotExpected,
  SagaErrors.SagaFinished,
  SagaErrors.NothingToRetry,
  SagaErrors.UnknownDefinitionVersion,
  SagaErrors.CorruptProgress
] as const

/** An error of the engine or the store that the API answers with a problem. */
export type Refusal = InstanceType<(typeof refusalClasses)[number]>

const isRefusal = (error: unknown): error is Refusal => refusalClasses.some((refusal) => error instanceof refusal)

type Table = typeof table
/** The problem each refusal in `E` becomes. */
export type ProblemOf<E> = E extends Refusal ? Effect.Error<ReturnType<Table[E["_tag"]]>> : never

/**
 * Answers each refusal of the engine or the store with its problem; other errors pass through. Errors that are bugs
 * at an endpoint (a version conflict where no version was given) must be turned into defects before this.
 */
export const refusals =
  (origin: Origin = {}) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, ProblemOf<E> | Exclude<E, Refusal>, R> =>
    // The table is indexed by the error's own tag, so each refusal meets its own entry: TypeScript cannot follow
    // that correlation through a union, hence the widening of the argument and the narrowing of the result.
    Effect.catch(
      self,
      (error): Effect.Effect<never, unknown> =>
        isRefusal(error) ? table[error._tag](error as never, origin) : Effect.fail(error)
    ) as Effect.Effect<A, ProblemOf<E> | Exclude<E, Refusal>, R>
