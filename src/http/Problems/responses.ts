/**
 * Every 4xx is a problem (`application/problem+json`), including the ones the framework answers before any API
 * handler runs: an unknown route (404), an unsupported or missing content type (415), a body over the size limit
 * (413), and what Node's parser refuses before that (431, 400). A 401 also says how to authenticate
 * (`WWW-Authenticate: Bearer`). A defect is logged with its cause and answered as a 500 problem with its trace id.
 */
import { STATUS_CODES } from "node:http"
import type { Duplex } from "node:stream"
import { ByteSize, Cause, Effect } from "effect"
import { HttpRouter, HttpServerError, HttpServerRequest, HttpServerResponse, ProblemDetails } from "effect/http"

/** Requests carry references, never data: no legitimate body comes near this. */
export const maxBodySize = ByteSize.mebibytes(1)

const isClientError = (status: number) => status >= 400 && status < 499

const contentType = (response: HttpServerResponse.HttpServerResponse): string =>
  (response.body._tag === "Empty" ? undefined : response.body.contentType) ?? ""

const isProblem = (response: HttpServerResponse.HttpServerResponse) =>
  contentType(response).startsWith(ProblemDetails.contentType)

const bodyText = (response: HttpServerResponse.HttpServerResponse): string | undefined => {
  const body = response.body
  if (body._tag !== "Uint8Array" || !contentType(response).startsWith("text/")) return undefined
  return new TextDecoder().decode(body.body).trim() || undefined
}

const bodyHeaders = new Set(["content-length", "content-type", "transfer-encoding"])

const detailFor = (status: number, request: HttpServerRequest.HttpServerRequest, text: string | undefined) => {
  switch (status) {
    case 404:
      return `no route ${request.method} ${request.url.split("?")[0]}; see /openapi.json`
    case 405:
      return `${request.method} is not allowed here; see /openapi.json`
    case 413:
      return `the request body is over ${ByteSize.format(maxBodySize)}: send references, not data`
    case 415:
      return `${text ?? "unsupported content type"}; send application/json`
    default:
      return text
  }
}

const asProblem = (response: HttpServerResponse.HttpServerResponse) =>
  Effect.gen(function* () {
    if (!isClientError(response.status)) return response
    const withChallenge =
      response.status === 401 ? HttpServerResponse.setHeader(response, "www-authenticate", "Bearer") : response
    if (isProblem(withChallenge)) return withChallenge
    const request = yield* HttpServerRequest.HttpServerRequest
    const detail = detailFor(response.status, request, bodyText(response))
    const problem = ProblemDetails.toResponse({
      type: ProblemDetails.blankType,
      status: response.status,
      title: STATUS_CODES[response.status] ?? "Client error",
      ...(detail === undefined ? {} : { detail })
    })
    // Keep what else the response said (`connection: close` after a body too large, the 401 challenge), not how
    // long its old body was.
    const kept = Object.entries(withChallenge.headers).filter(([name]) => !bodyHeaders.has(name.toLowerCase()))
    return HttpServerResponse.setHeaders(problem, Object.fromEntries(kept))
  })

/** A body without a `Content-Type`: refused like any other body that is not JSON, not guessed to be JSON. */
const hasUntypedBody = (request: HttpServerRequest.HttpServerRequest) => {
  const headers = request.headers
  if (headers["content-type"] !== undefined) return false
  const length = Number(headers["content-length"] ?? "0")
  return length > 0 || headers["transfer-encoding"] !== undefined
}

const untypedBody = ProblemDetails.toResponse({
  type: ProblemDetails.blankType,
  status: 415,
  title: STATUS_CODES[415] ?? "Unsupported Media Type",
  detail: "the request has a body but no Content-Type; send application/json"
})

/**
 * A request Node's HTTP parser itself refuses (headers too large: 431; a malformed request line or header: 400)
 * never reaches the router: this answers it as a problem too, on the raw socket, and closes the connection.
 */
export const onClientError = (error: Error & { readonly code?: string }, socket: Duplex) => {
  if (!socket.writable) return socket.destroy()
  const status = error.code === "HPE_HEADER_OVERFLOW" ? 431 : 400
  const title = STATUS_CODES[status] ?? "Bad Request"
  const body = JSON.stringify({
    type: ProblemDetails.blankType,
    title,
    status,
    detail:
      status === 431
        ? "the request's headers are too large"
        : `the request could not be parsed as HTTP (${error.code ?? "malformed"})`
  })
  socket.end(
    `HTTP/1.1 ${status} ${title}\r\nContent-Type: ${ProblemDetails.contentType}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  )
}

/** An unexpected failure: logged whole, and answered with a problem that says how to find it in the logs and traces. */
const serverError = (cause: Cause.Cause<unknown>) =>
  Effect.gen(function* () {
    const span = yield* Effect.option(Effect.currentSpan)
    const traceId = span._tag === "Some" ? span.value.traceId : undefined
    yield* Effect.logError("request failed with an unexpected error", cause)
    return ProblemDetails.toResponse({
      type: ProblemDetails.blankType,
      status: 500,
      title: STATUS_CODES[500] ?? "Internal Server Error",
      detail:
        traceId === undefined
          ? "an unexpected error; it was logged"
          : `an unexpected error; it was logged with trace id ${traceId}`,
      ...(traceId === undefined ? {} : { traceId })
    })
  })

export const layer = HttpRouter.middleware(
  (app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      hasUntypedBody(request) ? Effect.succeed(untypedBody) : app
    ).pipe(
      Effect.provideService(HttpServerRequest.MaxBodySize, maxBodySize),
      // A failure that maps to a 4xx (no route, a body too large to read, a malformed request) is answered here as a
      // problem; a defect is logged with its cause and answered as a 500 problem naming its trace id; an interrupted
      // request is left to the server.
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.failCause(cause)
          : Effect.flatMap(HttpServerError.causeResponse(cause), ([response]) =>
              isClientError(response.status) ? Effect.succeed(response) : serverError(cause)
            )
      ),
      Effect.flatMap(asProblem)
    ),
  { global: true }
)
