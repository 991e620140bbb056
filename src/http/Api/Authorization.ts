import { HttpApiMiddleware, HttpApiSecurity } from "effect/http-api"
import { Unauthorized } from "../Problems.ts"

/** Bearer-token authentication of the `/v1` routes; the tokens come from the `api_tokens` secret file. */
export class Authorization extends HttpApiMiddleware.Service<Authorization>()("saga-orchestrator/http/Authorization", {
  security: { bearer: HttpApiSecurity.bearer },
  error: Unauthorized
}) {}
