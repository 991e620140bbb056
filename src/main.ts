import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import * as Orchestrator from "./Orchestrator.ts"

Layer.launch(Orchestrator.layer).pipe(NodeRuntime.runMain)
