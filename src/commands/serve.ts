import { Layer } from "effect"
import { Command } from "effect/cli"
import * as Orchestrator from "../Orchestrator.ts"

/** `orchestrator serve`: runs the service until it is stopped (SIGINT / SIGTERM). */
export const serve = Command.make("serve", {}, () => Layer.launch(Orchestrator.layer)).pipe(
  Command.withDescription("Run the orchestrator service (embedded mode when no database is configured)")
)
