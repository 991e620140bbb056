import { Layer } from "effect"
import * as Orchestrator from "./Orchestrator.ts"
import { runMain } from "./runMain.ts"

Layer.launch(Orchestrator.layer).pipe(runMain)
