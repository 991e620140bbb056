import { Context, Effect, Layer } from "effect"
import type { AnySagaDefinition } from "./Definition.ts"
import { UnknownDefinitionVersion, UnknownSagaType } from "./errors.ts"

/** The saga definitions this build knows, by type and version. Old versions stay while instances still run on them. */
export class SagaRegistry extends Context.Service<
  SagaRegistry,
  {
    /** The newest version of a type: what new sagas start with. */
    readonly latest: (sagaType: string) => Effect.Effect<AnySagaDefinition, UnknownSagaType>
    /** The exact version an instance started with. */
    readonly get: (
      sagaType: string,
      version: number,
      sagaId: string
    ) => Effect.Effect<AnySagaDefinition, UnknownDefinitionVersion>
    readonly definitions: ReadonlyArray<AnySagaDefinition>
  }
>()("saga-orchestrator/saga/SagaRegistry") {
  static readonly layer = (definitions: ReadonlyArray<AnySagaDefinition>) =>
    Layer.succeed(SagaRegistry, make(definitions))
}

export const make = (definitions: ReadonlyArray<AnySagaDefinition>): SagaRegistry["Service"] => {
  const byKey = new Map(definitions.map((d) => [`${d.type}@${d.version}`, d]))
  const latest = new Map<string, AnySagaDefinition>()
  for (const definition of definitions) {
    const current = latest.get(definition.type)
    if (current === undefined || current.version < definition.version) latest.set(definition.type, definition)
  }
  return SagaRegistry.of({
    definitions,
    latest: (sagaType) => {
      const definition = latest.get(sagaType)
      return definition === undefined
        ? Effect.fail(new UnknownSagaType({ sagaType, known: [...latest.keys()] }))
        : Effect.succeed(definition)
    },
    get: (sagaType, version, sagaId) => {
      const definition = byKey.get(`${sagaType}@${version}`)
      return definition === undefined
        ? Effect.fail(new UnknownDefinitionVersion({ sagaId, sagaType, version }))
        : Effect.succeed(definition)
    }
  })
}
