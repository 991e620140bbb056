/**
 * The message contract as files, generated from the Effect Schemas and the registered saga definitions: the
 * AsyncAPI document of the topology and envelopes, and one JSON Schema per task payload, task result and signal.
 * Pure: it returns path → content, and `orchestrator contract --out docs/contract` writes them. The same code and
 * definitions give the same bytes, so a test can check that the committed files are current.
 */
import type { Schema } from "effect"
import type { AnySagaDefinition } from "../saga/Definition.ts"
import * as AsyncApi from "./AsyncApi.ts"
import * as JsonSchemaFile from "./JsonSchemaFile.ts"

/** One task type as the contract shows it: the step (or compensation) that sends it. */
export interface TaskContract {
  readonly taskType: string
  readonly sagaType: string
  readonly kind: "step" | "compensation"
  /** The step's or compensation's name in the definition. */
  readonly name: string
  /** The step a compensation undoes. */
  readonly undoes?: string | undefined
  readonly payload: Schema.Top | undefined
  /** Undefined for a compensation: its reply's result is not read. */
  readonly result: Schema.Top | undefined
}

export interface SignalContract {
  readonly sagaType: string
  readonly signal: string
  readonly state: string
  readonly data: Schema.Top
}

/** Every task type the definitions send, in definition order; a task type used twice is listed once. */
export const taskContracts = (definitions: ReadonlyArray<AnySagaDefinition>): ReadonlyArray<TaskContract> => {
  const byType = new Map<string, TaskContract>()
  for (const definition of definitions) {
    for (const step of definition.steps) {
      if (step._tag !== "Task") continue
      const contracts: Array<TaskContract> = [
        {
          taskType: step.taskType,
          sagaType: definition.type,
          kind: "step",
          name: step.name,
          payload: step.payloadSchema,
          result: step.result
        }
      ]
      if (step.compensation !== undefined) {
        contracts.push({
          taskType: step.compensation.taskType,
          sagaType: definition.type,
          kind: "compensation",
          name: step.compensation.name,
          undoes: step.name,
          payload: step.compensation.payloadSchema,
          result: undefined
        })
      }
      for (const contract of contracts) {
        if (!byType.has(contract.taskType)) byType.set(contract.taskType, contract)
      }
    }
  }
  return [...byType.values()]
}

export const signalContracts = (definitions: ReadonlyArray<AnySagaDefinition>): ReadonlyArray<SignalContract> =>
  definitions.flatMap((definition) =>
    definition.steps.flatMap((step) =>
      step._tag === "Signal"
        ? [{ sagaType: definition.type, signal: step.signal, state: step.state, data: step.data }]
        : []
    )
  )

export const taskPayloadPath = (taskType: string) => `tasks/${taskType}.payload.schema.json`
export const taskResultPath = (taskType: string) => `tasks/${taskType}.result.schema.json`
export const signalPath = (sagaType: string, signal: string) => `signals/${sagaType}.${signal}.schema.json`

const idOf = (path: string) => path.replace(/\.schema\.json$/, "")

const anyObject = { type: "object", additionalProperties: true }

const sentBy = (task: TaskContract) =>
  task.kind === "step"
    ? `step \`${task.name}\` of saga ${task.sagaType}`
    : `compensation \`${task.name}\` (undoing step \`${task.undoes}\`) of saga ${task.sagaType}`

const payloadFile = (task: TaskContract): string => {
  const path = taskPayloadPath(task.taskType)
  const declared =
    task.payload === undefined
      ? " The definition declares no schema for it: any JSON object."
      : " Fields that are null are references the saga does not have (yet), e.g. after a step was cut short."
  return JsonSchemaFile.render(
    JsonSchemaFile.standalone(
      {
        id: idOf(path),
        title: `${task.taskType} task payload`,
        description: `The \`payload\` of a \`${task.taskType}\` task, sent by the ${sentBy(task)}.${declared}`
      },
      task.payload === undefined ? anyObject : JsonSchemaFile.fromSchema(task.payload)
    )
  )
}

const resultFile = (task: TaskContract): string => {
  const path = taskResultPath(task.taskType)
  const description =
    task.result === undefined
      ? `The \`result\` of a succeeded reply to a \`${task.taskType}\` task, sent by the ${sentBy(task)}. ` +
        "A compensation has no result: its result is not read, so any object (or none) is accepted."
      : `The \`result\` of a succeeded reply to a \`${task.taskType}\` task, sent by the ${sentBy(task)}. ` +
        "A result that does not validate fails the step for good (error code `invalid_result`), without retries."
  return JsonSchemaFile.render(
    JsonSchemaFile.standalone(
      { id: idOf(path), title: `${task.taskType} reply result`, description },
      task.result === undefined ? anyObject : JsonSchemaFile.fromSchema(task.result)
    )
  )
}

const signalFile = (signal: SignalContract): string => {
  const path = signalPath(signal.sagaType, signal.signal)
  return JsonSchemaFile.render(
    JsonSchemaFile.standalone(
      {
        id: idOf(path),
        title: `${signal.sagaType} signal ${signal.signal}`,
        description:
          `The \`data\` of the signal \`${signal.signal}\` (POST /v1/sagas/{id}/signals/${signal.signal}) that a ` +
          `${signal.sagaType} saga waits for in state ${signal.state}. Data that does not validate is refused and ` +
          "changes nothing."
      },
      JsonSchemaFile.fromSchema(signal.data)
    )
  )
}

/** Every file of the contract, path (relative to the output directory) → content, paths in sorted order. */
export const generate = (definitions: ReadonlyArray<AnySagaDefinition>): Readonly<Record<string, string>> => {
  const tasks = taskContracts(definitions)
  const files = new Map<string, string>([["asyncapi.yaml", AsyncApi.render(tasks)]])
  for (const task of tasks) {
    files.set(taskPayloadPath(task.taskType), payloadFile(task))
    files.set(taskResultPath(task.taskType), resultFile(task))
  }
  for (const signal of signalContracts(definitions))
    files.set(signalPath(signal.sagaType, signal.signal), signalFile(signal))
  return Object.fromEntries([...files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}
