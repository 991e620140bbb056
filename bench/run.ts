/**
 * `npm run bench [-- --quick]`: measures the orchestrator against the local PostgreSQL and RabbitMQ, in a database
 * and vhost of its own (dropped afterwards), prints a table and writes bench-results/<timestamp>.json. A script, not
 * a test: nothing here asserts a timing; the targets are reported, met or not.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { runMain } from "../src/runMain.ts"
import { acquire, projectRoot } from "./env.ts"
import { table } from "./report.ts"
import * as Scale from "./scale.ts"
import * as Service from "./service.ts"
import * as Transitions from "./transitions.ts"

const quick = process.argv.includes("--quick")
const skip = (section: string) => process.argv.includes(`--skip-${section}`)

const settings = quick
  ? {
      seconds: 1,
      sagas: 2_000,
      rows: 50_000,
      iterations: 10,
      allocationSteps: 1_000,
      e2eSagas: 300,
      latencySeconds: 3
    }
  : {
      seconds: 5,
      sagas: 10_000,
      rows: 1_000_000,
      iterations: 30,
      allocationSteps: 5_000,
      e2eSagas: 10_000,
      latencySeconds: 10
    }

const program = Effect.gen(function* () {
  const env = yield* acquire
  const startedAt = new Date()
  yield* Effect.logInfo(`bench database ${env.database}, vhost ${env.vhost}${quick ? " (quick)" : ""}`)
  const transitions = skip("transitions")
    ? undefined
    : yield* Transitions.run(env, { seconds: settings.seconds, sagas: settings.sagas })
  const allocations = skip("transitions")
    ? undefined
    : yield* Transitions.allocationsPerStep(env, settings.allocationSteps)
  const scale = skip("scale")
    ? undefined
    : yield* Scale.run(env, { rows: settings.rows, iterations: settings.iterations })
  const service = skip("service")
    ? undefined
    : yield* Service.run(env, {
        sagas: settings.e2eSagas,
        latencySeconds: settings.latencySeconds,
        cpuProfileDir: process.argv.includes("--cpu-prof") ? join(projectRoot, "bench-results", "profiles") : undefined
      })
  const results = {
    startedAt: startedAt.toISOString(),
    quick,
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version },
    settings,
    transitions,
    allocations,
    scale,
    service
  }
  const directory = join(projectRoot, "bench-results")
  mkdirSync(directory, { recursive: true })
  const file = join(directory, `${startedAt.toISOString().replace(/[:.]/g, "-")}${quick ? "-quick" : ""}.json`)
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)
  console.log(table(results))
  console.log(`\nwritten to ${file}`)
})

Effect.scoped(program).pipe(runMain)
