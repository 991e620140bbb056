/**
 * The service's logs: one JSON object per line, annotated with the saga (id, type, correlation id) and the span they
 * were written in, with secrets redacted.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Layer, Redacted } from "effect"
import { TestConsole } from "effect/testing"
import * as Logging from "../../src/observability/Logging.ts"
import { Engine } from "../../src/saga/Engine.ts"
import { completeTask, layer as engineLayer, failed, input, reply, takeTask } from "../saga/harness.ts"
import { jsonLogs, layerLogCapture, layerRecordingTracer, spansNamed } from "./support.ts"

const runtime = engineLayer().pipe(Layer.provideMerge(layerLogCapture), Layer.provideMerge(layerRecordingTracer))

describe("JSON logs", () => {
  it.effect("logs a saga's start and end annotated with its id, type, correlation id and span", () =>
    Effect.gen(function* () {
      const engine = yield* Engine
      const { saga } = yield* engine.start("BALANCE_CALCULATION", input, { correlationId: "order-1" })
      yield* reply(failed(yield* takeTask, "REPO_ARCHIVED", false))
      yield* completeTask

      const logs = yield* jsonLogs
      for (const line of logs) {
        assert.match(String(line.timestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
        assert.oneOf(line.level, ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])
        assert.isString(line.message)
      }
      const annotations = { sagaId: saga.id, sagaType: "BALANCE_CALCULATION", correlationId: "order-1" }
      const startLine = logs.find((line) => line.message === "saga started in PREPARING_BRANCH")
      assert.deepInclude(startLine, { level: "INFO", ...annotations })
      const [startSpan] = yield* spansNamed("Engine.start")
      assert.deepInclude(startLine, { traceId: startSpan?.traceId, spanId: startSpan?.spanId })

      const failedLine = logs.find((line) => line.message === "saga failed: DELETING_BRANCH -> FAILED")
      assert.deepInclude(failedLine, { level: "WARN", ...annotations })
      assert.deepStrictEqual(failedLine?.data, {
        step: "prepareBranch",
        code: "REPO_ARCHIVED",
        message: "gitlab.prepare_branch failed: REPO_ARCHIVED"
      })
      const replySpans = yield* spansNamed("Engine.reply")
      assert.isTrue(replySpans.some((span) => span.spanId === failedLine?.spanId))
      // Saga context values (the input's references) are not logged.
      assert.notInclude(JSON.stringify(logs), input.inputRef)
    }).pipe(Effect.provide(runtime))
  )

  it.effect("writes one JSON object per line to the console, redacting secrets", () =>
    Effect.gen(function* () {
      yield* Effect.logInfo("configured", { password: Redacted.make("hunter2"), port: 5432 }).pipe(
        Effect.annotateLogs({ component: "config", message: "an annotation named like a field" })
      )
      yield* Effect.logError("relay stopped", Cause.fail("connection reset\nby peer"))
      const lines = yield* TestConsole.logLines
      assert.strictEqual(lines.length, 2)
      for (const line of lines) {
        assert.isString(line)
        assert.notInclude(String(line), "\n")
      }
      const [configured, stopped] = lines.map((line) => JSON.parse(String(line)) as Record<string, unknown>)
      assert.deepInclude(configured, {
        level: "INFO",
        message: "configured",
        component: "config",
        "annotation.message": "an annotation named like a field",
        data: { password: "<redacted>", port: 5432 }
      })
      assert.notInclude(JSON.stringify(lines), "hunter2")
      assert.deepInclude(stopped, { level: "ERROR", message: "relay stopped" })
      assert.include(String(stopped?.cause), "connection reset")
    }).pipe(Effect.provide(Layer.merge(Logging.layer, TestConsole.layer)))
  )
})
