/**
 * Typed configuration: settings from `ORCH_*` environment variables, secrets only from files in the secrets
 * directory. A password offered through the environment is refused, naming the file to use instead.
 */
import {
  Config,
  ConfigProvider,
  Context,
  Data,
  Duration,
  Effect,
  Layer,
  LogLevel,
  Option,
  Redacted,
  Schema
} from "effect"
import * as FileSystem from "effect/FileSystem"
import type { Path } from "effect/Path"
import { defaultMessageLimits, type MessageLimits } from "./domain/Messages.ts"

export const SslMode = Schema.Literals(["disable", "require", "verify-full"])
export type SslMode = typeof SslMode.Type

export interface DatabaseConfig {
  /** Host name, or a socket directory when it starts with `/`. */
  readonly host: string
  readonly port: number
  readonly database: string
  readonly user: string
  readonly password: Redacted.Redacted
  readonly ssl: SslMode
  /** CA certificate file for `verify-full` (ORCH_DB_SSL_ROOT_CERT); the system's CAs when absent. */
  readonly sslRootCert?: string | undefined
  /** The schema owner, for migrations; absent → startup only checks that the schema is current. */
  readonly migration: Option.Option<{ readonly user: string; readonly password: Redacted.Redacted }>
}

export interface AmqpConfig {
  /** Without credentials' password, e.g. `amqp://orchestrator@127.0.0.1:5672/`. */
  readonly url: string
  readonly password: Redacted.Redacted
}

/**
 * Where the state lives: the PostgreSQL of ORCH_DB_HOST, or, when it is unset, an embedded one in the process
 * (PGlite, in memory: a demonstration, not a deployment).
 */
export type Database = Data.TaggedEnum<{
  External: { readonly config: DatabaseConfig }
  Embedded: {}
}>
export const Database = Data.taggedEnum<Database>()

/**
 * Who does the tasks: workers behind the RabbitMQ of ORCH_AMQP_URL, or, when it is unset, simulated workers
 * answering on an in-memory broker.
 */
export type Workers = Data.TaggedEnum<{
  RabbitMq: { readonly amqp: AmqpConfig }
  Simulated: {}
}>
export const Workers = Data.taggedEnum<Workers>()

export interface AppConfigShape {
  /** The run mode, decided here once: the rest of the service matches on these two values. */
  readonly database: Database
  readonly workers: Workers
  readonly httpPort: number
  readonly secretsDir: string
  readonly otlpEndpoint: Option.Option<string>
  readonly maxContextBytes: number
  /** Development override: run even when the runtime role can do more than DML (loudly logged). */
  readonly allowPrivilegedDbRole: boolean
  /** The least severe log level written. */
  readonly logLevel: LogLevel.LogLevel
  /** How long an active saga may go without a change before it counts as stuck (metrics, `sagas stuck`). */
  readonly stuckThreshold: Duration.Duration
  /** How long finished sagas and idempotency keys are kept (`ORCH_RETENTION`); None (`off`) keeps them. */
  readonly retention: Option.Option<Duration.Duration>
  /** How many bytes of contexts one page of a saga list may hold (`ORCH_MAX_PAGE_BYTES`). */
  readonly maxPageBytes: number
  /** What a worker's reply or heartbeat may hold (`ORCH_MAX_REPLY_*`). */
  readonly messageLimits: MessageLimits
  /** Bearer tokens of the HTTP API (secret file `api_tokens`, one per line); None when the file is absent. */
  readonly apiTokens: Option.Option<ReadonlyArray<Redacted.Redacted<string>>>
}

export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  reason: Schema.String
}) {
  override get message() {
    return `invalid configuration: ${this.reason}`
  }
}

/** Environment variables that must never carry a secret, and the file that should hold it instead. */
const refusedPasswordVariables: ReadonlyArray<readonly [variable: string, file: string]> = [
  ["ORCH_DB_PASSWORD", "db_password"],
  ["PGPASSWORD", "db_password"],
  ["ORCH_DB_MIGRATION_PASSWORD", "db_migration_password"],
  ["ORCH_AMQP_PASSWORD", "amqp_password"],
  ["ORCH_API_TOKENS", "api_tokens"]
]

const optionalString = (name: string) => Config.option(Config.NonEmptyString(name))

const positiveInt = (name: string, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), name).pipe(Config.withDefault(fallback))

/** `ORCH_LOG_LEVEL`, in any case, `warning` for `warn` too; `info` when unset. */
const logLevel = Effect.gen(function* () {
  const raw = yield* optionalString("ORCH_LOG_LEVEL")
  if (Option.isNone(raw)) return "Info" satisfies LogLevel.LogLevel
  const wanted = raw.value.toLowerCase() === "warning" ? "warn" : raw.value.toLowerCase()
  const level = LogLevel.values.find((candidate) => candidate.toLowerCase() === wanted)
  if (level !== undefined) return level
  return yield* new InvalidConfig({
    reason: `ORCH_LOG_LEVEL must be one of ${LogLevel.values.map((value) => value.toLowerCase()).join(", ")}`
  })
})

const refusePasswordsInEnvironment = Effect.gen(function* () {
  for (const [variable, file] of refusedPasswordVariables) {
    if (Option.isSome(yield* optionalString(variable))) {
      return yield* new InvalidConfig({
        reason: `${variable} is set: passwords are not read from the environment; put it in the secret file ${file} instead`
      })
    }
  }
})

const refusePasswordInUrl = (url: string) => {
  const parsed = URL.parse(url)
  if (parsed === null) return Effect.fail(new InvalidConfig({ reason: "ORCH_AMQP_URL is not a valid URL" }))
  if (parsed.password !== "") {
    return Effect.fail(
      new InvalidConfig({
        reason: "ORCH_AMQP_URL contains a password: remove it from the URL and put it in the secret file amqp_password"
      })
    )
  }
  return Effect.void
}

/** One token per line; blank lines and lines starting with `#` (comments, e.g. who holds a token) are skipped. */
const tokenLines = (file: Redacted.Redacted<string>, secretsDir: string) => {
  const tokens = Redacted.value(file)
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
  return tokens.length === 0
    ? Effect.fail(new InvalidConfig({ reason: `the secret file ${secretsDir}/api_tokens holds no token` }))
    : Effect.succeed(Option.some(tokens.map((token) => Redacted.make(token))))
}

/** `ORCH_RETENTION`: a duration such as `30 days` (the default), or `off` to keep everything. */
const retention = Effect.gen(function* () {
  const raw = yield* optionalString("ORCH_RETENTION")
  if (Option.isNone(raw)) return Option.some(Duration.days(30))
  if (raw.value.trim().toLowerCase() === "off") return Option.none()
  const parsed = Duration.fromInput(raw.value.trim() as Duration.Input)
  if (parsed._tag === "Some" && Duration.isGreaterThan(parsed.value, Duration.zero)) return parsed
  return yield* new InvalidConfig({
    reason: `ORCH_RETENTION must be a positive duration such as "30 days" or "12 hours", or "off"`
  })
})

/** A path setting must name a file that exists. */
const readableFile = (variable: string) => (path: string) =>
  Effect.flatMap(FileSystem.FileSystem, (fs) => fs.exists(path)).pipe(
    Effect.orElseSucceed(() => false),
    Effect.flatMap((exists) =>
      exists ? Effect.succeed(path) : Effect.fail(new InvalidConfig({ reason: `${variable}: no file at ${path}` }))
    )
  )

export const load: Effect.Effect<AppConfigShape, InvalidConfig, FileSystem.FileSystem | Path> = Effect.gen(
  function* () {
    yield* refusePasswordsInEnvironment
    const secretsDir = yield* Config.String("ORCH_SECRETS_DIR").pipe(Config.withDefault("/run/secrets"))
    const secrets = yield* ConfigProvider.fromDir({ rootPath: secretsDir })
    const secret = (file: string, neededFor: string) =>
      Config.Redacted(file)
        .parse(secrets)
        .pipe(
          Effect.mapError(
            () => new InvalidConfig({ reason: `missing secret file ${secretsDir}/${file} (needed for ${neededFor})` })
          )
        )

    const apiTokens = yield* Config.option(Config.Redacted("api_tokens"))
      .parse(secrets)
      .pipe(
        Effect.mapError(() => new InvalidConfig({ reason: `cannot read the secret file ${secretsDir}/api_tokens` })),
        Effect.flatMap(
          Option.match({ onNone: () => Effect.succeedNone, onSome: (file) => tokenLines(file, secretsDir) })
        )
      )

    const database = yield* Effect.gen(function* () {
      const host = yield* optionalString("ORCH_DB_HOST")
      if (Option.isNone(host)) return Database.Embedded()
      const migrationUser = yield* optionalString("ORCH_DB_MIGRATION_USER")
      const config: DatabaseConfig = {
        host: host.value,
        port: yield* Config.Port("ORCH_DB_PORT").pipe(Config.withDefault(5432)),
        database: yield* Config.NonEmptyString("ORCH_DB_NAME").pipe(Config.withDefault("orchestrator")),
        user: yield* Config.NonEmptyString("ORCH_DB_USER").pipe(Config.withDefault("orchestrator_app")),
        password: yield* secret("db_password", "ORCH_DB_HOST"),
        ssl: yield* Config.schema(SslMode, "ORCH_DB_SSL").pipe(Config.withDefault<SslMode>("disable")),
        sslRootCert: yield* optionalString("ORCH_DB_SSL_ROOT_CERT").pipe(
          Effect.flatMap(
            Option.match({ onNone: () => Effect.undefined, onSome: readableFile("ORCH_DB_SSL_ROOT_CERT") })
          )
        ),
        migration: Option.isNone(migrationUser)
          ? Option.none()
          : Option.some({
              user: migrationUser.value,
              password: yield* secret("db_migration_password", "ORCH_DB_MIGRATION_USER")
            })
      }
      return Database.External({ config })
    })

    const workers = yield* Effect.gen(function* () {
      const url = yield* optionalString("ORCH_AMQP_URL")
      if (Option.isNone(url)) return Workers.Simulated()
      yield* refusePasswordInUrl(url.value)
      return Workers.RabbitMq({ amqp: { url: url.value, password: yield* secret("amqp_password", "ORCH_AMQP_URL") } })
    })

    return {
      database,
      workers,
      httpPort: yield* Config.Port("ORCH_HTTP_PORT").pipe(Config.withDefault(8080)),
      secretsDir,
      otlpEndpoint: yield* optionalString("ORCH_OTLP_ENDPOINT"),
      allowPrivilegedDbRole: yield* Config.Boolean("ORCH_DB_ALLOW_PRIVILEGED_ROLE").pipe(Config.withDefault(false)),
      maxContextBytes: yield* positiveInt("ORCH_MAX_CONTEXT_BYTES", 65536),
      logLevel: yield* logLevel,
      // An Effect duration such as `15 minutes`.
      stuckThreshold: yield* Config.Duration("ORCH_STUCK_THRESHOLD").pipe(Config.withDefault(Duration.minutes(15))),
      retention: yield* retention,
      maxPageBytes: yield* positiveInt("ORCH_MAX_PAGE_BYTES", 2 * 1024 * 1024),
      messageLimits: {
        bodyBytes: yield* positiveInt("ORCH_MAX_REPLY_BYTES", defaultMessageLimits.bodyBytes),
        idLength: yield* positiveInt("ORCH_MAX_REPLY_ID_CHARS", defaultMessageLimits.idLength),
        errorMessageLength: yield* positiveInt("ORCH_MAX_ERROR_MESSAGE_CHARS", defaultMessageLimits.errorMessageLength),
        jsonDepth: yield* positiveInt("ORCH_MAX_REPLY_DEPTH", defaultMessageLimits.jsonDepth)
      },
      apiTokens
    }
  }
).pipe(Effect.catchTag("ConfigError", (error) => Effect.fail(new InvalidConfig({ reason: error.message }))))

export class AppConfig extends Context.Service<AppConfig, AppConfigShape>()("saga-orchestrator/Config/AppConfig") {
  static readonly layer = Layer.effect(AppConfig, load)
}
