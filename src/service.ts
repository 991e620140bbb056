import { Layer } from "effect"
import * as Orchestrator from "./Orchestrator.ts"
import { runMain } from "./runMain.ts"

/** Runs the service until it is stopped (SIGTERM, SIGINT: exit 0). */
export const run = () => Layer.launch(Orchestrator.layer).pipe(runMain)
