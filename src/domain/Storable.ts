/**
 * What PostgreSQL can store, checked where data enters the service (HTTP requests, messages from workers), so that
 * a value the database would refuse is refused there with its path, as bad input — never sent to the database,
 * whose refusal would look like an outage and be retried.
 *
 * PostgreSQL cannot store U+0000 in `text` or `jsonb`, nor a lone UTF-16 surrogate (not Unicode at all) in JSON.
 * Nesting is bounded too: serializing a value nested thousands deep overflows the stack. The walk is iterative, so
 * checking the deepest value costs no stack either.
 */
import { Schema } from "effect"

/** How deep JSON from outside may nest: far beyond any reference a saga keeps. */
export const maxJsonDepth = 64

const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** Why PostgreSQL could not store `text`, or undefined when it can. */
export const textProblem = (text: string): string | undefined => {
  if (text.includes("\u0000")) return "must not contain the character U+0000"
  if (loneSurrogate.test(text)) return "must not contain a lone UTF-16 surrogate (not valid Unicode)"
  return undefined
}

export interface Unstorable {
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

/** A value still to look at, with the way to it (kept as links, so a path is built only for what is refused). */
interface Visit {
  readonly value: unknown
  readonly key: PropertyKey | undefined
  readonly parent: Visit | undefined
  readonly depth: number
}

const pathOf = (visit: Visit): ReadonlyArray<PropertyKey> => {
  const path: Array<PropertyKey> = []
  for (let at: Visit | undefined = visit; at?.key !== undefined; at = at.parent) path.unshift(at.key)
  return path
}

/** The first string (value or key) PostgreSQL could not store in `value`, or a nesting deeper than `maxDepth`. */
export const findUnstorable = (value: unknown, maxDepth: number = maxJsonDepth): Unstorable | undefined => {
  const pending: Array<Visit> = [{ value, key: undefined, parent: undefined, depth: 0 }]
  for (let visit = pending.pop(); visit !== undefined; visit = pending.pop()) {
    const current = visit.value
    if (typeof current === "string") {
      const problem = textProblem(current)
      if (problem !== undefined) return { path: pathOf(visit), message: problem }
    } else if (typeof current === "object" && current !== null) {
      if (visit.depth >= maxDepth) return { path: pathOf(visit), message: `nests deeper than ${maxDepth} levels` }
      const depth = visit.depth + 1
      if (Array.isArray(current)) {
        // Pushed in reverse, so values are looked at in document order.
        for (let i = current.length - 1; i >= 0; i--) pending.push({ value: current[i], key: i, parent: visit, depth })
      } else {
        const keys = Object.keys(current)
        for (let i = keys.length - 1; i >= 0; i--) {
          const key = keys[i]!
          const item = { value: (current as Record<string, unknown>)[key], key, parent: visit, depth }
          const problem = textProblem(key)
          if (problem !== undefined) return { path: pathOf(item), message: `key ${problem}` }
          pending.push(item)
        }
      }
    }
  }
  return undefined
}

/** A filter for any value: refuses what PostgreSQL could not store, or nests deeper than `maxDepth`, with its path. */
export const storableWithin = (maxDepth: number) =>
  Schema.makeFilter<unknown>((value) => {
    const found = findUnstorable(value, maxDepth)
    return found === undefined ? undefined : { path: found.path, issue: found.message }
  })

/** `storableWithin` the default depth. */
export const storable = storableWithin(maxJsonDepth)

/** Text PostgreSQL can store. */
export const StorableString = Schema.String.check(Schema.makeFilter((text: string) => textProblem(text)))

/** Any JSON value PostgreSQL can store, nested at most `maxJsonDepth` deep. */
export const StorableJson = Schema.Json.check(storable)

/** A JSON object PostgreSQL can store. */
export const StorableJsonObject = Schema.Record(Schema.String, Schema.Json).check(storable)
