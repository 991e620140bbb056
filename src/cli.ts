#!/usr/bin/env node
/** CLI entry (`orchestrator`): the commands, once loaded (see entry.ts for a stop meanwhile). */
import { runWhenLoaded } from "./entry.ts"

await runWhenLoaded(() => import("./commands/index.ts"))
