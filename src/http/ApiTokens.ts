/**
 * Bearer tokens of the `/v1` routes and the Authorization middleware that checks them. Tokens come from the
 * `api_tokens` secret file (one per line); only their SHA-256 digests are kept, and a presented token is compared
 * with every digest in constant time, so neither the comparison nor which token matched shows in the timing.
 * Tokens are never logged — except the one generated in embedded mode, printed once so a newcomer can call the API.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { AppConfig, InvalidConfig } from "../Config.ts"
import { Authorization } from "./Api/Authorization.ts"
import { Unauthorized } from "./Problems.ts"

const digest = (token: string): Buffer => createHash("sha256").update(token, "utf8").digest()

export class ApiTokens extends Context.Service<
  ApiTokens,
  {
    /** Whether the token is one of the configured ones. */
    readonly verify: (token: Redacted.Redacted<string>) => boolean
  }
>()("saga-orchestrator/http/ApiTokens") {
  /** Verifies against the given tokens. */
  static readonly make = (tokens: ReadonlyArray<Redacted.Redacted<string>>): ApiTokens["Service"] => {
    const digests = tokens.map((token) => digest(Redacted.value(token)))
    return ApiTokens.of({
      verify: (token) => {
        const presented = digest(Redacted.value(token))
        let matched = false
        // Every digest is compared, whatever matched before: all comparisons are equal-length and constant-time.
        for (const known of digests) matched = timingSafeEqual(presented, known) || matched
        return matched
      }
    })
  }

  /**
   * The tokens of the service configuration. Without an `api_tokens` file the API cannot start — except in embedded
   * mode, where a random token is generated for this run and printed once.
   */
  static readonly layer = Layer.effect(
    ApiTokens,
    Effect.gen(function* () {
      const config = yield* AppConfig
      if (Option.isSome(config.apiTokens)) return ApiTokens.make(config.apiTokens.value)
      if (config.database._tag === "External") {
        return yield* new InvalidConfig({
          reason: `missing secret file ${config.secretsDir}/api_tokens (needed for the HTTP API: one bearer token per line)`
        })
      }
      const token = randomBytes(24).toString("base64url")
      // One line, the token last: readable in the JSON log, and easy to copy.
      yield* Effect.logWarning(
        `EMBEDDED MODE: no secret file ${config.secretsDir}/api_tokens, so this run generated an API token, valid ` +
          `until the process stops (production reads tokens from api_tokens only). Call the API with the header ` +
          `Authorization: Bearer ${token}`
      )
      return ApiTokens.make([Redacted.make(token)])
    })
  )
}

/** The server side of the Authorization middleware: 401 with a problem body unless the token is a known one. */
export const layerAuthorization = Layer.effect(
  Authorization,
  Effect.gen(function* () {
    const tokens = yield* ApiTokens
    return Authorization.of({
      bearer: (httpEffect, { credential }) => {
        if (Redacted.value(credential) === "") {
          return Effect.fail(
            new Unauthorized({
              detail: "send the header `Authorization: Bearer <token>` (tokens: the api_tokens file)"
            })
          )
        }
        if (!tokens.verify(credential))
          return Effect.fail(new Unauthorized({ detail: "the bearer token is not valid" }))
        return httpEffect
      }
    })
  })
)
