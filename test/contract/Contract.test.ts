/**
 * The committed contract (docs/contract) is what the code generates, the AsyncAPI document is valid, and the JSON
 * Schemas are valid draft 2020-12 schemas that accept what the balance calculation sends and its workers answer.
 * Unit tests: no database, no broker.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fromFile, Parser } from "@asyncapi/parser"
import { assert, describe, it } from "@effect/vitest"
import { Ajv2020 } from "ajv/dist/2020.js"
import { Effect, Schema } from "effect"
import * as Contract from "../../src/contract/Contract.ts"
import { lift } from "../../src/saga/Definition.ts"
import { BalanceCalculation, type BalanceCalculationContext } from "../../src/sagas/BalanceCalculation.ts"
import { definitions } from "../../src/sagas/index.ts"

const root = new URL("../..", import.meta.url).pathname
const contractDirectory = join(root, "docs/contract")
const regenerate = "npx orchestrator contract --out docs/contract"

/** Every file under a directory, relative paths. */
const listFiles = (directory: string, prefix = ""): ReadonlyArray<string> =>
  readdirSync(directory, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? listFiles(join(directory, entry.name), `${prefix}${entry.name}/`) : [`${prefix}${entry.name}`]
  )

const readJson = (relative: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(contractDirectory, relative), "utf8"))

/** A context as the saga has it late in its run, every reference present. */
const fullContext: BalanceCalculationContext = {
  repo: "balance/unit-7",
  baseBranch: "main",
  inputRef: "inputs/unit-7.yaml",
  requestedBy: "engineer@example.com",
  branch: "calc/0001",
  branchCommitSha: "c".repeat(40),
  meshRef: "meshes/0001.msh",
  condenserDataRef: "condenser/0001.json",
  solverRunId: "run-0001",
  resultsRef: "results/0001/",
  resultsCommitSha: "d".repeat(40)
}
/** A context as it is when the first step was cut short: only the input. */
const inputOnly: BalanceCalculationContext = {
  repo: "balance/unit-7",
  baseBranch: "main",
  inputRef: "inputs/unit-7.yaml",
  requestedBy: "engineer@example.com"
}

/** Results a worker answers with, one per task type that has a result. */
const sampleResults: Record<string, unknown> = {
  "gitlab.prepare_branch": { branch: "calc/0001", commitSha: "c".repeat(40) },
  "geometry.mesh": { meshRef: "meshes/0001.msh" },
  "solver.balance": { runId: "run-0001", resultsRef: "results/0001/" },
  "gitlab.publish_results": { commitSha: "d".repeat(40) }
}

/** The payloads of every task (steps and compensations) of a definition for a context. */
const payloadsFor = (context: BalanceCalculationContext) =>
  Effect.forEach(
    BalanceCalculation.steps.flatMap((step) =>
      step._tag === "Task" ? [step, ...(step.compensation === undefined ? [] : [step.compensation])] : []
    ),
    (task) => Effect.map(lift(task.payload(context)), (payload) => ({ task, payload }))
  )

const ajv = () => new Ajv2020({ strict: true, allErrors: true })

/** A validator for one committed schema file; `explain` says why the last value was refused. */
const validatorOf = (relative: string) => {
  const instance = ajv()
  const validate = instance.compile(readJson(relative))
  return Object.assign((value: unknown) => validate(value), {
    explain: () => `${relative}: ${instance.errorsText(validate.errors)}`
  })
}

describe("the message contract", () => {
  it("is committed as the code generates it", () => {
    const generated = Contract.generate(definitions)
    const committed = existsSync(contractDirectory) ? listFiles(contractDirectory) : []
    const problems: Array<string> = []
    for (const [path, content] of Object.entries(generated)) {
      const file = join(contractDirectory, path)
      if (!existsSync(file)) problems.push(`${path} is missing`)
      else if (readFileSync(file, "utf8") !== content) problems.push(`${path} differs from what the code generates`)
    }
    for (const path of committed) {
      if (generated[path] === undefined) problems.push(`${path} is no longer generated`)
    }
    assert.deepStrictEqual(
      problems,
      [],
      `docs/contract is out of date:\n  ${problems.join("\n  ")}\nregenerate it with: ${regenerate}`
    )
  })

  it("has a payload and a result schema for every task type and a schema for every signal", () => {
    const paths = Object.keys(Contract.generate(definitions))
    for (const taskType of [
      "gitlab.prepare_branch",
      "gitlab.delete_branch",
      "geometry.mesh",
      "solver.balance",
      "solver.discard_run",
      "gitlab.publish_results"
    ]) {
      assert.include(paths, Contract.taskPayloadPath(taskType))
      assert.include(paths, Contract.taskResultPath(taskType))
    }
    assert.include(paths, "signals/BALANCE_CALCULATION.condenser_input.schema.json")
  })

  it.effect("has a valid AsyncAPI 3 document", () =>
    Effect.gen(function* () {
      const { document, diagnostics } = yield* Effect.promise(() =>
        fromFile(new Parser(), join(contractDirectory, "asyncapi.yaml")).parse()
      )
      const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join(".")}: ${d.message}`)
      assert.deepStrictEqual(errors, [])
      assert.isDefined(document)
      assert.strictEqual(document?.version(), "3.0.0")
      const operations =
        document
          ?.operations()
          .all()
          .map((o) => `${o.action()} ${o.id()}`) ?? []
      for (const expected of ["send sendTask", "receive receiveReply", "receive receiveHeartbeat"]) {
        assert.include(operations, expected)
      }
      assert.include(operations, "send sendCancellationNotice")
    })
  )

  it("has JSON Schema files that are valid draft 2020-12 schemas", () => {
    const schemas = listFiles(contractDirectory).filter((path) => path.endsWith(".schema.json"))
    assert.isAtLeast(schemas.length, 13)
    const validator = ajv()
    for (const path of schemas) {
      const schema = readJson(path)
      assert.strictEqual(schema.$schema, "https://json-schema.org/draft/2020-12/schema", path)
      assert.isTrue(validator.validateSchema(schema), `${path}: ${validator.errorsText(validator.errors)}`)
      validator.compile(schema)
    }
  })

  it.effect("accepts the balance calculation's payloads, for a full context and for the input alone", () =>
    Effect.gen(function* () {
      for (const context of [fullContext, inputOnly]) {
        for (const { task, payload } of yield* payloadsFor(context)) {
          const validate = validatorOf(Contract.taskPayloadPath(task.taskType))
          assert.isTrue(validate(payload), validate.explain())
        }
      }
    })
  )

  it.effect("declares each task's payload shape: the payload function's output decodes against it", () =>
    Effect.gen(function* () {
      for (const context of [fullContext, inputOnly]) {
        for (const { task, payload } of yield* payloadsFor(context)) {
          assert.isDefined(task.payloadSchema, `${task.taskType} has no payloadSchema`)
          if (task.payloadSchema === undefined) continue
          const decoded = yield* Effect.result(Schema.decodeUnknownEffect(task.payloadSchema)(payload))
          assert.strictEqual(decoded._tag, "Success", `${task.taskType}: ${JSON.stringify(payload)}`)
        }
      }
    })
  )

  it("accepts the workers' results and refuses results the service would fail as invalid_result", () => {
    for (const [taskType, result] of Object.entries(sampleResults)) {
      const validate = validatorOf(Contract.taskResultPath(taskType))
      assert.isTrue(validate(result), validate.explain())
      assert.isFalse(validate({}), `${taskType} accepts an empty result`)
    }
    const solver = validatorOf(Contract.taskResultPath("solver.balance"))
    assert.isFalse(solver({ runId: "", resultsRef: "results/" }), "an empty run id is refused")
    const compensation = validatorOf(Contract.taskResultPath("gitlab.delete_branch"))
    assert.isTrue(compensation({}) && compensation({ anything: 1 }))
  })

  it("accepts condenser data and refuses data without a reference", () => {
    const validate = validatorOf("signals/BALANCE_CALCULATION.condenser_input.schema.json")
    assert.isTrue(validate({ condenserDataRef: "condenser/0001.json" }))
    assert.isFalse(validate({}))
    assert.isFalse(validate({ condenserDataRef: "" }))
  })
})
