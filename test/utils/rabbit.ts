/**
 * Where the tests find RabbitMQ: the machine's own node on 127.0.0.1:5672 (guest/guest) unless ORCH_TEST_AMQP_*
 * says otherwise. Each test file works in a vhost of its own, deleted afterwards, so files run in parallel; vhosts of
 * test processes that are gone are deleted when the next one starts. An unreachable RabbitMQ fails the tests at once
 * with what to start — never a silent skip.
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import * as Amqp from "amqplib"
import { Context, Effect, Layer, Redacted } from "effect"
import type { Options } from "../../src/broker/AmqpBroker.ts"
import { isAlive } from "./processes.ts"

export interface RabbitServer {
  readonly host: string
  readonly port: number
  /** The node name for `rabbitmqctl -n`; undefined → the CLI's default node. */
  readonly node: string | undefined
}

export const rabbit: RabbitServer = {
  host: process.env.ORCH_TEST_AMQP_HOST ?? "127.0.0.1",
  port: Number(process.env.ORCH_TEST_AMQP_PORT ?? 5672),
  node: process.env.ORCH_TEST_RABBITMQ_NODE
}

export const guest = { user: "guest", password: "guest" }

const run = promisify(execFile)

/** Runs rabbitmqctl (as root, Debian's wrapper drops to the `rabbitmq` user); resolves with stdout. */
export const rabbitmqctl = async (args: ReadonlyArray<string>, server: RabbitServer = rabbit): Promise<string> => {
  const node = server.node === undefined ? [] : ["-n", server.node]
  const { stdout } = await run("rabbitmqctl", [...node, ...args], { timeout: 60_000 })
  return stdout
}

/** `rabbitmqctl -q list_…` output as rows of tab-separated columns, without the header line. */
export const listRows = async (args: ReadonlyArray<string>, server: RabbitServer = rabbit) =>
  (await rabbitmqctl(["-q", "--no-table-headers", ...args], server))
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => line.split("\t"))

/** The URL of a vhost, without a password as the service is configured. */
export const amqpUrl = (vhost: string, server: RabbitServer = rabbit, user = guest.user) =>
  `amqp://${encodeURIComponent(user)}@${server.host}:${server.port}/${encodeURIComponent(vhost)}`

/** Broker options for a vhost as guest, with quick reconnects for tests. */
export const brokerOptions = (vhost: string, server: RabbitServer = rabbit, overrides: Partial<Options> = {}) =>
  ({
    url: amqpUrl(vhost, server),
    password: Redacted.make(guest.password),
    reconnectInitialDelay: "50 millis",
    reconnectMaxDelay: "500 millis",
    consumerReattachDelay: "100 millis",
    deadLetterRetryDelay: "100 millis",
    ...overrides
  }) satisfies Options

/** An admin connection straight to a vhost, for what the port does not offer: test queues, raw messages, `get`. */
export const adminConnection = (vhost: string, server: RabbitServer = rabbit) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      Amqp.connect(
        `amqp://${guest.user}:${guest.password}@${server.host}:${server.port}/${encodeURIComponent(vhost)}`,
        { noDelay: true }
      ).then((connection) => {
        connection.on("error", () => undefined)
        return connection
      })
    ),
    (connection) => Effect.promise(() => connection.close().catch(() => undefined))
  )

/** Fails at once, saying what to start, when RabbitMQ does not answer. */
export const requireRabbit = (server: RabbitServer = rabbit) =>
  Effect.tryPromise({
    try: async () => {
      const connection = await Amqp.connect(`amqp://${guest.user}:${guest.password}@${server.host}:${server.port}/`, {
        timeout: 5000
      })
      await connection.close()
    },
    catch: (error) =>
      new Error(
        `RabbitMQ is not reachable at ${server.host}:${server.port} as guest (${String(error)}).\n` +
          "Start it (on Debian: rabbitmq-server -detached, then rabbitmq-diagnostics -q ping) or point " +
          "ORCH_TEST_AMQP_HOST / ORCH_TEST_AMQP_PORT at one; `bash .ci/run` starts everything the tests need."
      )
  }).pipe(Effect.orDie)

export class TestVhost extends Context.Service<
  TestVhost,
  {
    readonly name: string
    /** Broker options for this vhost as guest; quick reconnects. */
    readonly options: (overrides?: Partial<Options>) => Options
  }
>()("test/TestVhost") {}

const prefix = "orch_t_"
let counter = 0

/** Vhosts of test processes that are gone (a killed run). */
const removeAbandoned = (server: RabbitServer) =>
  Effect.promise(async () => {
    for (const [name] of await listRows(["list_vhosts", "name"], server)) {
      if (name === undefined || !name.startsWith(prefix)) continue
      const owner = Number(name.slice(prefix.length).split("_")[0])
      if (Number.isInteger(owner) && owner !== process.pid && !isAlive(owner)) {
        await rabbitmqctl(["delete_vhost", name], server).catch(() => undefined)
      }
    }
  })

export const createVhost = (server: RabbitServer = rabbit) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      counter += 1
      const name = `${prefix}${process.pid}_${counter}`
      await rabbitmqctl(["add_vhost", name], server)
      await rabbitmqctl(["set_permissions", "-p", name, guest.user, ".*", ".*", ".*"], server)
      return name
    }),
    (name) => Effect.promise(() => rabbitmqctl(["delete_vhost", name], server).catch(() => undefined))
  )

/** A vhost of this test file's own on the machine's RabbitMQ. */
export const layerVhost = (server: RabbitServer = rabbit) =>
  Layer.effect(
    TestVhost,
    Effect.gen(function* () {
      yield* requireRabbit(server)
      yield* removeAbandoned(server)
      const name = yield* createVhost(server)
      return TestVhost.of({ name, options: (overrides = {}) => brokerOptions(name, server, overrides) })
    })
  )
