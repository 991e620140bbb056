import { NodeRuntime } from "@effect/platform-node"
import { Cause, type Effect, Exit, Runtime } from "effect"

/** Stopping on SIGTERM / SIGINT is the service's normal end: exit 0, not 130. Failures keep the default codes. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)

export const runMain = <E, A>(program: Effect.Effect<A, E>) => NodeRuntime.runMain(program, { teardown })
