/**
 * A standalone JSON Schema file (draft 2020-12) from an Effect Schema: what a worker in any language can validate
 * against. The schema describes the JSON on the wire (the encoded side), which is what `toJsonSchemaDocument` gives.
 */
import { Schema } from "effect"

export const dialect = "https://json-schema.org/draft/2020-12/schema"

/** Where the `$id`s of the contract's schemas live: a name, not a location to download from. */
export const idPrefix = "urn:saga-orchestrator:contract:"

export interface FileMeta {
  /** `tasks/gitlab.prepare_branch.payload` → `urn:saga-orchestrator:contract:tasks/gitlab.prepare_branch.payload`. */
  readonly id: string
  readonly title: string
  readonly description: string
}

export type JsonSchema = { readonly [key: string]: unknown }

/** The schema of an Effect Schema's JSON form, its definitions (if any) under `$defs`. */
export const fromSchema = (schema: Schema.Top): JsonSchema => {
  const document = Schema.toJsonSchemaDocument(schema)
  const definitions = document.definitions
  return Object.keys(definitions).length === 0 ? document.schema : { ...document.schema, $defs: definitions }
}

/** A file's content: `$schema`, `$id`, title and description first, then the schema. */
export const standalone = (meta: FileMeta, schema: JsonSchema): JsonSchema => ({
  $schema: dialect,
  $id: `${idPrefix}${meta.id}`,
  title: meta.title,
  description: meta.description,
  ...withoutMeta(schema)
})

const withoutMeta = (schema: JsonSchema): JsonSchema =>
  Object.fromEntries(Object.entries(schema).filter(([key]) => key !== "title" && key !== "description"))

/** Two-space JSON with a final newline: the same bytes every time for the same schema. */
export const render = (schema: JsonSchema): string => `${JSON.stringify(schema, null, 2)}\n`
