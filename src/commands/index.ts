import { NodeServices } from "@effect/platform-node"
import { Console, Data, Effect, Layer, Predicate, Runtime } from "effect"
import { Command } from "effect/cli"
import { AppConfig } from "../Config.ts"
import { runMain } from "../runMain.ts"
import { contractCommand } from "./contract.ts"
import { definitionsCommand } from "./definitions.ts"
import { migrate } from "./migrate.ts"
import { purge } from "./purge.ts"
import { sagas } from "./sagas.ts"
import { serve } from "./serve.ts"

const orchestrator = Command.make("orchestrator").pipe(
  Command.withDescription("Saga orchestrator of the Balance+ platform"),
  Command.withSubcommands([serve, migrate, sagas, purge, definitionsCommand, contractCommand])
)

/** A command failed and said why on stderr: exit 1 without a stack trace. */
class CommandFailed extends Data.TaggedError("CommandFailed")<{}> {
  override readonly [Runtime.errorReported] = false
}

/** Errors the command line parser has already explained (with the command's help). */
const explained = (error: unknown) => Predicate.hasProperty(error, Runtime.errorReported)

/** The command line, as `orchestrator` runs it. */
export const run = () =>
  orchestrator.pipe(
    Command.run({ version: "0.1.0" }),
    Effect.catch(
      (error): Effect.Effect<never, unknown> =>
        explained(error)
          ? Effect.fail(error)
          : Console.error(
              `error: ${Predicate.hasProperty(error, "message") ? String(error.message) : String(error)}`
            ).pipe(Effect.andThen(Effect.fail(new CommandFailed())))
    ),
    Effect.provide(AppConfig.layer.pipe(Layer.provideMerge(NodeServices.layer))),
    runMain
  )
