/**
 * `orchestrator sagas …`: operators' view of and hands on the sagas, straight on the database as the runtime role.
 * Signals, retries and cancels go through the engine, in the same transactions the service uses; the running
 * service's relay publishes the tasks they produce. Readable tables by default, `--json` for scripts: the HTTP API's
 * representations (src/http/Api/Representations.ts), so a script reads the same JSON from either.
 */
import { Console, DateTime, Duration, Effect, Layer, Option, Schema } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { AppConfig, InvalidConfig } from "../Config.ts"
import { SagaContext, SagaId, type SagaInstance, SagaStatus, type Transition } from "../domain/Saga.ts"
import * as R from "../http/Api/Representations.ts"
import * as View from "../http/handlers/views.ts"
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

/** `value` as the HTTP API encodes it with `schema`. */
const encodeProgress = Schema.encodeSync(Schema.NullOr(R.Progress))

const printJson = <S extends Schema.Codec<unknown, unknown>>(schema: S, value: S["Type"]) =>
  Schema.encodeEffect(schema)(value).pipe(
    Effect.orDie,
    Effect.flatMap((json) => Console.log(JSON.stringify(json, null, 2)))
  )

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
    if (flags.json) return yield* printJson(R.SagaPage, View.page(page))
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
    if (json) return yield* printJson(R.SagaWithHistory, View.withHistory(saga, history))
    const ignored = yield* store.ignoredEvents(id)
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
        `progress    ${JSON.stringify(encodeProgress(View.progress(saga)))}`,
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
const describeWaiting = (waiting: R.WaitingFor): string => {
  switch (waiting.kind) {
    case "reply":
      return `reply to ${waiting.taskType} ${waiting.taskId} (timeout ${iso(waiting.dueAt)})`
    case "signal":
      return `signal ${waiting.name} (until ${iso(waiting.dueAt)})`
    case "timer":
      return `timer: ${waiting.reason} (at ${iso(waiting.dueAt)})`
    case "operator":
      return `an operator: ${waiting.reason}`
  }
}

const stuck = Command.make(
  "stuck",
  {
    olderThan: Flag.String("older-than").pipe(
      Flag.withSchema(R.IsoDuration),
      Flag.withDescription("ISO 8601 duration without progress, e.g. PT15M"),
      Flag.withDefault(Duration.minutes(15))
    ),
    limit: Flag.Int("limit").pipe(Flag.withDefault(100)),
    json
  },
  Effect.fnUntraced(function* ({ olderThan, limit, json }) {
    const store = yield* SagaStore
    const found = View.stuckSagas(olderThan)(yield* store.findStuck(olderThan, { limit }))
    if (json) return yield* printJson(R.StuckSagas, found)
    const now = yield* DateTime.now
    yield* Console.log(
      renderTable(
        ["ID", "TYPE", "STATE", "STATUS", "IDLE", "WAITING FOR"],
        found.items.map(({ saga, waitingFor }) => [
          saga.id,
          saga.sagaType,
          saga.currentState,
          saga.status,
          Duration.format(DateTime.distance(saga.updatedAt, now)),
          describeWaiting(waitingFor)
        ])
      )
    )
  })
).pipe(Command.withDescription("Active sagas without progress for longer than --older-than"))

const printSaga = (saga: SagaInstance, asJson: boolean) =>
  asJson
    ? printJson(R.Saga, View.saga(saga))
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

/** An operator repair through the engine, at the version given with --if-match if any. */
const repair = (name: "retry" | "cancel", description: string) =>
  Command.make(
    name,
    { id: sagaId, ifMatch, json },
    Effect.fnUntraced(function* ({ id, ifMatch, json }) {
      const engine = yield* Engine
      yield* printSaga(yield* engine[name](id, Option.getOrUndefined(ifMatch)), json)
    })
  ).pipe(Command.withDescription(description))

const retry = repair("retry", "Send the saga's current task (or stuck compensation) again")
const cancel = repair("cancel", "Cancel a saga: compensate what it did, end CANCELLED")

export const sagas = Command.make("sagas").pipe(
  Command.withDescription("Inspect and repair sagas"),
  Command.withSubcommands([list, show, stuck, signal, retry, cancel]),
  Command.provide(onDatabase)
)
