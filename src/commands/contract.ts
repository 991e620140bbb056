import { Console, Effect, FileSystem, Path } from "effect"
import { Command, Flag } from "effect/cli"
import * as Contract from "../contract/Contract.ts"
import { definitions } from "../sagas/index.ts"

/** The generated folders: a schema file in them that the code no longer generates is stale and removed. */
const generatedFolders = ["tasks", "signals"]

/**
 * `orchestrator contract --out docs/contract`: writes the message contract (AsyncAPI document and JSON Schemas)
 * generated from the code. With `--check` it writes nothing and fails when the files there differ.
 */
export const contractCommand = Command.make(
  "contract",
  {
    out: Flag.String("out").pipe(
      Flag.withDescription("Directory to write the contract to"),
      Flag.withDefault("docs/contract")
    ),
    check: Flag.Boolean("check").pipe(
      Flag.withDescription("Write nothing; fail when the files in --out are not what the code generates"),
      Flag.withDefault(false)
    )
  },
  Effect.fnUntraced(function* ({ out, check }) {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const files = Contract.generate(definitions)
    const stale: Array<string> = []
    for (const folder of generatedFolders) {
      const directory = path.join(out, folder)
      if (!(yield* fs.exists(directory))) continue
      for (const name of yield* fs.readDirectory(directory)) {
        const relative = `${folder}/${name}`
        if (name.endsWith(".schema.json") && files[relative] === undefined) stale.push(relative)
      }
    }
    if (check) {
      const differing: Array<string> = [...stale]
      for (const [relative, content] of Object.entries(files)) {
        const file = path.join(out, relative)
        const current = (yield* fs.exists(file)) ? yield* fs.readFileString(file) : undefined
        if (current !== content) differing.push(relative)
      }
      if (differing.length > 0) {
        return yield* Effect.fail(
          new Error(
            `the contract in ${out} is out of date (${differing.join(", ")}); ` +
              `regenerate it: npx orchestrator contract --out ${out}`
          )
        )
      }
      return yield* Console.log(`the contract in ${out} is up to date (${Object.keys(files).length} files)`)
    }
    for (const relative of stale) yield* fs.remove(path.join(out, relative))
    for (const [relative, content] of Object.entries(files)) {
      const file = path.join(out, relative)
      yield* fs.makeDirectory(path.dirname(file), { recursive: true })
      yield* fs.writeFileString(file, content)
    }
    yield* Console.log(`wrote ${Object.keys(files).length} files to ${out}`)
  })
).pipe(Command.withDescription("Write the message contract (AsyncAPI, JSON Schemas) generated from the code"))
