import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { type TransitionRow, transitionTable } from "../saga/Definition.ts"
import { definitions } from "../sagas/index.ts"
import { renderTable } from "./table.ts"

const columns: ReadonlyArray<readonly [keyof TransitionRow, string]> = [
  ["state", "STATE"],
  ["waitsFor", "WAITS FOR"],
  ["onSuccess", "ON SUCCESS"],
  ["onFailure", "ON FAILURE"],
  ["timeout", "TIMEOUT"],
  ["compensation", "COMPENSATION"]
]

/** A transition table as aligned text. */
export const formatTable = (rows: ReadonlyArray<TransitionRow>): string =>
  renderTable(
    columns.map(([, title]) => title),
    rows.map((row) => columns.map(([key]) => row[key]))
  )

/** `orchestrator definitions`: each saga definition this build runs, as its transition table. */
export const definitionsCommand = Command.make(
  "definitions",
  { json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON for scripts"), Flag.withDefault(false)) },
  Effect.fnUntraced(function* ({ json }) {
    if (json) {
      const tables = definitions.map((d) => ({ type: d.type, version: d.version, transitions: transitionTable(d) }))
      return yield* Console.log(JSON.stringify(tables, null, 2))
    }
    for (const definition of definitions) {
      yield* Console.log(`${definition.type} (version ${definition.version})\n`)
      yield* Console.log(`${formatTable(transitionTable(definition))}\n`)
    }
  })
).pipe(Command.withDescription("Print the saga definitions as transition tables"))
