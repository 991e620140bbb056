/**
 * The worker kit: write a worker for the saga orchestrator in TypeScript on amqplib. See docs/workers.md.
 *
 *   const worker = startWorker({ url, queue: "gitlab-worker", handlers: { "gitlab.prepare_branch": handler({…}) } })
 *   process.on("SIGTERM", () => worker.stop())
 */
import { Cause, Exit, Schema } from "effect"
import type { Validator } from "./types.ts"

export {
  type AbortReason,
  type CancellationReason,
  handler,
  type Logger,
  type LogLevel,
  type TaskContext,
  TaskFailed,
  type TaskHandler,
  type TaskInfo,
  type TaskProgress,
  type Validator,
  type Worker,
  type WorkerOptions
} from "./types.ts"
export { startWorker } from "./Worker.ts"

/** A validator from an Effect Schema (for workers written with Effect). */
export const schemaValidator = (schema: Schema.Decoder<unknown>): Validator => {
  const decode = Schema.decodeUnknownExit(schema)
  return (value) => {
    const exit = decode(value)
    if (Exit.isSuccess(exit)) return undefined
    const error = Cause.squash(exit.cause)
    return error instanceof Error ? error.message : String(error)
  }
}

/** What a compiled JSON Schema validator looks like (Ajv's `ValidateFunction`, for one). */
export interface CompiledJsonSchema {
  (value: unknown): boolean
  readonly errors?: ReadonlyArray<{ readonly instancePath?: string; readonly message?: string }> | null | undefined
}

/**
 * A validator from a compiled JSON Schema, e.g. Ajv's `new Ajv2020().compile(schema)` for one of the files in
 * docs/contract/tasks. The kit does not bundle a JSON Schema library: bring the one you use.
 */
export const jsonSchemaValidator =
  (validate: CompiledJsonSchema): Validator =>
  (value) =>
    validate(value)
      ? undefined
      : (validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "is invalid"}`).join("; ") ||
        "does not match the schema"
