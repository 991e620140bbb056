#!/usr/bin/env node
import { NodeServices } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { Command } from "effect/cli"
import { AppConfig } from "./Config.ts"
import { definitionsCommand } from "./commands/definitions.ts"
import { migrate } from "./commands/migrate.ts"
import { serve } from "./commands/serve.ts"
import { runMain } from "./runMain.ts"

const orchestrator = Command.make("orchestrator").pipe(
  Command.withDescription("Saga orchestrator of the Balance+ platform"),
  Command.withSubcommands([serve, migrate, definitionsCommand])
)

orchestrator.pipe(
  Command.run({ version: "0.1.0" }),
  Effect.provide(AppConfig.layer.pipe(Layer.provideMerge(NodeServices.layer))),
  runMain
)
