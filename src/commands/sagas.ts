/**
 * `orchestrator sagas …`: operators' view of and hands on the sagas, straight on the database as the runtime role.
 * Signals, retries and cancels go through the engine, in the same transactions the service uses; the running
 * service's relay publishes the tasks they produce. Readable tables by default, `--json` for scripts.
 */
import { Console, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { AppConfig, InvalidConfig } from "../Config.ts"
import { SagaContext, SagaId, type SagaInstance, SagaStatus, type StuckSaga, type Transition } from "../domain/Saga.ts"
import { Engine, layer as engineLayer } from "../saga/Engine.ts"
import { SagaRegistry } from "../saga/Registry.ts"
import { definitions } from "../sagas/index.ts"
import * as PgSagaStore from "../store/PgSagaStore.ts"
import { SagaStore } from "../store/SagaStore.ts"
import { renderTable } from "./table.ts"

/** The store and the engine on the configured database (never the embedded one: it lives inside the service). */
const onDatabase = Layer.unwrap(
  Effect.gen(function* () {
    const config = yield* AppConfig
    if (config.database._tag === "Embedded") {
      return yield* new InvalidConfig({ reason: "ORCH_DB_HOST is not set: the saga commands need the database" })
    }
    const store = PgSagaStore.layerDatabase(config.database.config, {
      maxConnections: 2,
      maxContextBytes: config.maxContextBytes
    })
    return engineLayer.pipe(Layer.provideMerge(store), Layer.provide(SagaRegistry.layer(definitions)))
  })
)

const json = Flag.Boolean("json").pipe(Flag.withDescription("Print JSON for scripts"), Flag.withDefault(false))
const sagaId = Argument.String("id").pipe(Argument.withSchema(SagaId), Argument.withDescription("Saga id"))
const ifMatch = Flag.Int("if-match").pipe(
  Flag.withDescription("Act only if the saga is still at this lock version"),
  Flag.optional
)

const iso = (at: DateTime.Utc) => DateTime.formatIso(at)
/** An instance as DESIGN §6 represents it in JSON. */
const encodeInstance = (saga: SagaInstance) => ({
  id: saga.id,
  sagaType: saga.sagaType,
  currentState: saga.currentState,
  status: saga.status,
  context: saga.context,
  correlationId: saga.correlationId,
  lockVersion: saga.lockVersion,
  createdAt: iso(saga.createdAt),
  updatedAt: iso(saga.updatedAt)
})

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const sagaRow = (saga: SagaInstance) => [
  saga.id,
  saga.sagaType,
  saga.currentState,
  saga.status,
  String(saga.lockVersion),
  iso(saga.updatedAt)
]

const list = Command.make(
  "list",
  {
    status: Flag.Literals("status", SagaStatus.literals).pipe(Flag.optional),
    type: Flag.String("type").pipe(Flag.optional),
    state: Flag.String("state").pipe(Flag.optional),
    correlationId: Flag.String("correlation-id").pipe(Flag.optional),
    context: Flag.String("context").pipe(Flag.withDescription("JSON the context must contain"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDefault(50)),
    cursor: Flag.String("cursor").pipe(Flag.optional),
    json
  },
  Effect.fnUntraced(function* (flags) {
    const store = yield* SagaStore
    const context = Option.isSome(flags.context)
      ? yield* Schema.decodeUnknownEffect(Schema.fromJsonString(SagaContext))(flags.context.value).pipe(
          Effect.mapError((error) => new InvalidConfig({ reason: `--context is not a JSON object: ${error.message}` }))
        )
      : undefined
    const page = yield* store.find({
      status: Option.getOrUndefined(flags.status),
      sagaType: Option.getOrUndefined(flags.type),
      state: Option.getOrUndefined(flags.state),
      correlationId: Option.getOrUndefined(flags.correlationId),
      context,
      limit: flags.limit,
      cursor: Option.getOrUndefined(flags.cursor)
    })
    if (flags.json) return yield* printJson({ items: page.items.map(encodeInstance), nextCursor: page.nextCursor })
    yield* Console.log(renderTable(["ID", "TYPE", "STATE", "STATUS", "VERSION", "UPDATED"], page.items.map(sagaRow)))
    if (page.nextCursor !== null) yield* Console.log(`\nmore: --cursor ${page.nextCursor}`)
  })
).pipe(Command.withDescription("List sagas, newest first, with filters"))

const historyRows = (history: ReadonlyArray<Transition>) =>
  history.map((t) => [String(t.lockVersion), t.fromState ?? "—", t.toState, t.status, t.event, iso(t.at)])

const show = Command.make(
  "show",
  { id: sagaId, json },
  Effect.fnUntraced(function* ({ id, json }) {
    const store = yield* SagaStore
    const saga = yield* store.get(id)
    const history = yield* store.history(id)
    const ignored = yield* store.ignoredEvents(id)
    if (json) {
      return yield* printJson({
        ...encodeInstance(saga),
        history: history.map((t) => ({ ...t, at: iso(t.at) })),
        ignoredEvents: ignored.map((e) => ({ ...e, at: iso(e.at) }))
      })
    }
    yield* Console.log(
      [
        `saga        ${saga.id}`,
        `type        ${saga.sagaType}`,
        `state       ${saga.currentState} (${saga.status})`,
        `version     ${saga.lockVersion}`,
        `correlation ${saga.correlationId}`,
        `created     ${iso(saga.createdAt)}`,
        `updated     ${iso(saga.updatedAt)}`,
        `context     ${JSON.stringify(saga.context)}`,
        `progress    ${JSON.stringify(saga.progress)}`,
        "",
        "history",
        renderTable(["VERSION", "FROM", "TO", "STATUS", "EVENT", "AT"], historyRows(history)),
        ...(ignored.length === 0
          ? []
          : ["", `ignored events: ${ignored.length} (duplicate, late or unexpected; they changed nothing)`])
      ].join("\n")
    )
  })
).pipe(Command.withDescription("Show a saga: its state and its transition history"))

/** What a stuck saga waits for, in words. */
export const waitingFor = (stuck: StuckSaga): string => {
  if (stuck.timer === null) return "an operator (no timer)"
  const due = iso(stuck.timer.dueAt)
  const awaiting = stuck.timer.awaiting
  switch (awaiting._tag) {
    case "Reply":
      return `reply to ${awaiting.taskType} ${awaiting.taskId} (timeout ${due})`
    case "Signal":
      return `signal ${awaiting.name} (until ${due})`
    case "Timer":
      return `timer: ${awaiting.reason} (at ${due})`
  }
}

const stuck = Command.make(
  "stuck",
  {
    olderThan: Flag.String("older-than").pipe(
      Flag.withDescription("ISO-8601 duration without progress, e.g. PT15M"),
      Flag.withDefault("PT15M")
    ),
    limit: Flag.Int("limit").pipe(Flag.withDefault(100)),
    json
  },
  Effect.fnUntraced(function* ({ olderThan, limit, json }) {
    const store = yield* SagaStore
    const threshold = yield* parseIsoDuration(olderThan).pipe(
      Effect.mapError((reason) => new InvalidConfig({ reason: `--older-than: ${reason}` }))
    )
    const found = yield* store.findStuck(threshold, { limit })
    if (json) {
      return yield* printJson(found.map((s) => ({ ...encodeInstance(s.saga), waitingFor: waitingFor(s) })))
    }
    const now = yield* DateTime.now
    yield* Console.log(
      renderTable(
        ["ID", "TYPE", "STATE", "STATUS", "IDLE", "WAITING FOR"],
        found.map((s) => [
          s.saga.id,
          s.saga.sagaType,
          s.saga.currentState,
          s.saga.status,
          Duration.format(DateTime.distance(s.saga.updatedAt, now)),
          waitingFor(s)
        ])
      )
    )
  })
).pipe(Command.withDescription("Active sagas without progress for longer than --older-than"))

const printSaga = (saga: SagaInstance, asJson: boolean) =>
  asJson
    ? printJson(encodeInstance(saga))
    : Console.log(renderTable(["ID", "TYPE", "STATE", "STATUS", "VERSION", "UPDATED"], [sagaRow(saga)]))

const signal = Command.make(
  "signal",
  {
    id: sagaId,
    name: Argument.String("name").pipe(Argument.withDescription("Signal name, e.g. condenser_input")),
    data: Flag.String("data").pipe(Flag.withDescription("The signal's data as JSON")),
    json
  },
  Effect.fnUntraced(function* ({ id, name, data, json }) {
    const engine = yield* Engine
    const parsed = yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Schema.Unknown))(data).pipe(
      Effect.mapError((error) => new InvalidConfig({ reason: `--data is not JSON: ${error.message}` }))
    )
    yield* printSaga(yield* engine.signal(id, name, parsed), json)
  })
).pipe(Command.withDescription("Deliver a signal (human input) to a saga"))

const retry = Command.make(
  "retry",
  { id: sagaId, ifMatch, json },
  Effect.fnUntraced(function* ({ id, ifMatch, json }) {
    const engine = yield* Engine
    yield* printSaga(yield* engine.retry(id, Option.getOrUndefined(ifMatch)), json)
  })
).pipe(Command.withDescription("Send the saga's current task (or stuck compensation) again"))

const cancel = Command.make(
  "cancel",
  { id: sagaId, ifMatch, json },
  Effect.fnUntraced(function* ({ id, ifMatch, json }) {
    const engine = yield* Engine
    yield* printSaga(yield* engine.cancel(id, Option.getOrUndefined(ifMatch)), json)
  })
).pipe(Command.withDescription("Cancel a saga: compensate what it did, end CANCELLED"))

export const sagas = Command.make("sagas").pipe(
  Command.withDescription("Inspect and repair sagas"),
  Command.withSubcommands([list, show, stuck, signal, retry, cancel]),
  Command.provide(onDatabase)
)

/** ISO-8601 durations as the API and the CLI take them: `PT15M`, `PT1H30M`, `P1D`, `PT0.5S`. */
export const parseIsoDuration = (text: string): Effect.Effect<Duration.Duration, string> => {
  const match = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(text)
  if (match === null || text === "P" || text.endsWith("T")) {
    return Effect.fail(`${JSON.stringify(text)} is not an ISO-8601 duration such as PT15M`)
  }
  const [, days, hours, minutes, seconds] = match
  const millis =
    Number(days ?? 0) * 86_400_000 +
    Number(hours ?? 0) * 3_600_000 +
    Number(minutes ?? 0) * 60_000 +
    Number(seconds ?? 0) * 1000
  return Effect.succeed(Duration.millis(millis))
}
