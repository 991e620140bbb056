/**
 * The OpenAPI document the server serves: valid OpenAPI 3.1 (checked against the specification's JSON schema), and
 * complete: every documented route (README, HTTP API) with its methods, parameters, security and responses, and each documented
 * operation really served.
 */
import { assert, layer } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Effect, Schema } from "effect"
import * as Problems from "../../src/http/Problems.ts"
import * as H from "./harness.ts"
import { call } from "./harness.ts"

interface Operation {
  readonly operationId?: string
  readonly security?: ReadonlyArray<Record<string, ReadonlyArray<string>>>
  readonly parameters?: ReadonlyArray<{ readonly name: string; readonly in: string; readonly required?: boolean }>
  readonly requestBody?: { readonly content: Record<string, unknown> }
  readonly responses: Record<string, { readonly content?: Record<string, unknown>; readonly headers?: object }>
}
type Document = {
  readonly openapi: string
  readonly paths: Record<string, Record<string, Operation>>
  readonly components: {
    readonly securitySchemes?: Record<string, { type: string; scheme?: string }>
    readonly schemas?: Record<string, SchemaObject>
  }
}
interface SchemaObject {
  readonly properties?: Record<string, { readonly enum?: ReadonlyArray<unknown> }>
  readonly required?: ReadonlyArray<string>
}

/** Every problem class src/http/Problems.ts declares, with its type URI and the members it carries. */
const declaredProblems = Object.values(Problems).flatMap((value) => {
  if (!Schema.isSchema(value) || !("fields" in value)) return []
  const fields = value.fields as Record<string, Schema.Top>
  const type = fields.type?.ast
  return type?._tag === "Literal" && typeof type.literal === "string"
    ? [{ type: type.literal, members: Object.keys(fields) }]
    : []
})

/** The API as the README documents it, route by route. */
const routes: Record<string, ReadonlyArray<string>> = {
  "/v1/sagas": ["get", "post"],
  "/v1/sagas/stuck": ["get"],
  "/v1/sagas/{id}": ["get"],
  "/v1/sagas/{id}/signals/{name}": ["post"],
  "/v1/sagas/{id}/retry": ["post"],
  "/v1/sagas/{id}/cancel": ["post"],
  "/healthz": ["get"],
  "/readyz": ["get"],
  "/metrics": ["get"]
}

const fetchDocument = call("GET", "/openapi.json", { token: null }).pipe(
  Effect.map((reply) => {
    assert.strictEqual(reply.status, 200)
    return JSON.parse(reply.text) as Document
  })
)

const operations = (document: Document) =>
  Object.entries(document.paths).flatMap(([path, item]) =>
    Object.entries(item).map(([method, operation]) => ({ path, method, operation }))
  )

layer(H.layer, { excludeTestServices: true, timeout: "60 seconds" })("OpenAPI document", (it) => {
  it.effect("is a valid OpenAPI 3.1 document", () =>
    Effect.gen(function* () {
      const document = yield* fetchDocument
      assert.match(document.openapi, /^3\.1\.\d+$/)
      const result = yield* Effect.promise(() => new Validator().validate(document as never))
      assert.isTrue(result.valid, JSON.stringify(result.errors, null, 2))
    })
  )

  it.effect("lists every route of the API with its methods, and no other", () =>
    Effect.gen(function* () {
      const document = yield* fetchDocument
      const listed = Object.fromEntries(
        Object.entries(document.paths).map(([path, item]) => [path, Object.keys(item).sort()])
      )
      assert.deepStrictEqual(listed, routes)
    })
  )

  it.effect("documents security, parameters and responses of every operation", () =>
    Effect.gen(function* () {
      const document = yield* fetchDocument
      const bearer = document.components.securitySchemes?.bearer
      assert.strictEqual(bearer?.type, "http")
      assert.strictEqual(bearer?.scheme?.toLowerCase(), "bearer")
      for (const { path, method, operation } of operations(document)) {
        const name = `${method.toUpperCase()} ${path}`
        const statuses = Object.keys(operation.responses)
        assert.isTrue(
          statuses.some((status) => status.startsWith("2")),
          `${name} declares a success response`
        )
        if (path.startsWith("/v1/")) {
          assert.deepStrictEqual(operation.security, [{ bearer: [] }], `${name} needs the bearer token`)
          assert.include(statuses, "401", name)
          assert.include(statuses, "400", name)
          for (const status of statuses.filter((s) => s.startsWith("4"))) {
            assert.containsAllKeys(operation.responses[status]?.content ?? {}, ["application/problem+json"], name)
          }
        } else {
          assert.isTrue((operation.security ?? []).length === 0, `${name} needs no token`)
        }
        for (const param of path.match(/\{(\w+)\}/g) ?? []) {
          const paramName = param.slice(1, -1)
          assert.isDefined(
            operation.parameters?.find((p) => p.in === "path" && p.name === paramName),
            `${name} documents ${param}`
          )
        }
      }
      const op = (path: string, method: string) => document.paths[path]?.[method] as Operation
      const query = (o: Operation) => (o.parameters ?? []).filter((p) => p.in === "query").map((p) => p.name)
      assert.sameMembers(query(op("/v1/sagas", "get")), [
        "status",
        "type",
        "state",
        "correlationId",
        "context",
        "limit",
        "cursor"
      ])
      assert.sameMembers(query(op("/v1/sagas/stuck", "get")), ["olderThan", "limit"])
      assert.includeMembers(Object.keys(op("/v1/sagas", "post").responses), ["200", "201", "409"])
      assert.containsAllKeys(op("/v1/sagas", "post").requestBody?.content ?? {}, ["application/json"])
      assert.containsAllKeys(op("/v1/sagas/{id}", "get").responses["200"]?.headers ?? {}, ["etag"])
      assert.includeMembers(Object.keys(op("/v1/sagas/{id}", "get").responses), ["404"])
      assert.includeMembers(Object.keys(op("/v1/sagas/{id}/signals/{name}", "post").responses), ["404", "409"])
      for (const repair of ["/v1/sagas/{id}/retry", "/v1/sagas/{id}/cancel"]) {
        assert.includeMembers(Object.keys(op(repair, "post").responses), ["404", "409", "412", "428"], repair)
        assert.isDefined(
          op(repair, "post").parameters?.find((p) => p.in === "header" && p.name === "if-match"),
          `${repair} documents If-Match`
        )
      }
      assert.includeMembers(Object.keys(op("/readyz", "get").responses), ["200", "503"])
      assert.containsAllKeys(op("/metrics", "get").responses["200"]?.content ?? {}, [
        "text/plain; version=0.0.4; charset=utf-8"
      ])
    })
  )

  it.effect("describes every problem the API declares, with all its members", () =>
    Effect.gen(function* () {
      const document = yield* fetchDocument
      const schemas = Object.values(document.components.schemas ?? {})
      assert.isAtLeast(declaredProblems.length, 15)
      for (const { type, members } of declaredProblems) {
        const described = schemas.find((schema) => schema.properties?.type?.enum?.includes(type))
        assert.isDefined(described, `${type} is not in the document`)
        assert.sameMembers(Object.keys(described?.properties ?? {}), members, type)
      }
    })
  )

  it.effect("describes only operations the server serves", () =>
    Effect.gen(function* () {
      const document = yield* fetchDocument
      for (const { path, method } of operations(document)) {
        const concrete = path.replace("{id}", crypto.randomUUID()).replace("{name}", "condenser_input")
        const reply = yield* call(method.toUpperCase(), concrete, method === "post" ? { body: {} } : {})
        // An unknown route is a 404 with the generic problem type; a routed request gets anything else.
        const routeMissing = reply.status === 404 && JSON.parse(reply.text).type === "about:blank"
        assert.isFalse(routeMissing, `${method.toUpperCase()} ${path} is not served`)
      }
    })
  )
})
