/**
 * A RabbitMQ node of one test file's own, for tests that stop and start the broker: the machine's node on 5672 serves
 * every other test file at the same moment and must never go down. The node gets a unique name, free AMQP and
 * distribution ports, and its own config (the machine's /etc/rabbitmq/rabbitmq.conf pins the listener to 5672),
 * plugins file, data, logs and pid file in a temp directory owned by the `rabbitmq` user (Debian's wrapper scripts
 * drop to that user). It is stopped — killed by its pid if it will not stop — and deleted when the scope closes;
 * nodes of test processes that are gone are removed when the next one starts.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import * as Amqp from "amqplib"
import { Context, Effect, Layer, Schedule } from "effect"
import { freePort } from "./freePort.ts"
import { isAlive } from "./processes.ts"
import { guest, type RabbitServer, rabbitmqctl } from "./rabbit.ts"

export class PrivateRabbit extends Context.Service<
  PrivateRabbit,
  {
    readonly server: RabbitServer & { readonly node: string }
    /** The temp directory holding the node's config, data and `log/`. */
    readonly directory: string
    /** Stops the RabbitMQ application (the Erlang node stays up): connections are closed, the port refuses. */
    readonly stopApp: Effect.Effect<void>
    /** Starts the application again and waits until it accepts AMQP connections. */
    readonly startApp: Effect.Effect<void>
  }
>()("test/PrivateRabbit") {}

/** Temp directories are named after the test process, so a later run can tell which ones were abandoned. */
const prefix = "orch-rmq-"
const run = promisify(execFile)

interface Node {
  readonly name: string
  readonly root: string
  readonly pidFile: string
}

const nodeOf = (root: string): Node => {
  const owner = path.basename(root).slice(prefix.length).split("-")[0]
  return {
    name: `orch_t_${owner}_${path.basename(root).split("-").at(-1)}@localhost`,
    root,
    pidFile: path.join(root, "pid")
  }
}

/**
 * The node's OS pid while it runs: checked on /proc, so a reused pid is never signalled. The Erlang VM's command line
 * does not name the node's directory; its environment names the node.
 */
const runningPid = async (node: Node) => {
  const pid = Number((await fs.readFile(node.pidFile, "utf8").catch(() => "")).trim())
  if (!Number.isInteger(pid) || pid <= 0) return undefined
  const environment = await fs.readFile(`/proc/${pid}/environ`, "utf8").catch(() => "")
  return environment.split("\0").includes(`RABBITMQ_NODENAME=${node.name}`) ? pid : undefined
}

const logTail = async (node: Node) => {
  const log = await fs.readFile(path.join(node.root, "log", `${node.name}.log`), "utf8").catch(() => "")
  return log.split("\n").slice(-30).join("\n")
}

/** Whatever state the node was left in: stop it, kill it if it will not stop, delete its files. */
const removeNode = async (node: Node) => {
  if ((await runningPid(node)) !== undefined) {
    await rabbitmqctl(["stop", node.pidFile], { host: "", port: 0, node: node.name }).catch(() => undefined)
    const pid = await runningPid(node)
    if (pid !== undefined) process.kill(pid, "SIGKILL")
  }
  await fs.rm(node.root, { recursive: true, force: true, maxRetries: 3 })
}

const removeAbandoned = Effect.promise(async () => {
  for (const entry of await fs.readdir(os.tmpdir())) {
    const owner = Number(entry.startsWith(prefix) ? entry.slice(prefix.length).split("-")[0] : Number.NaN)
    if (Number.isInteger(owner) && owner !== process.pid && !isAlive(owner)) {
      await removeNode(nodeOf(path.join(os.tmpdir(), entry)))
    }
  }
})

/** Polls until the node accepts an AMQP connection as guest; fails with the end of its log after the deadline. */
const awaitAmqp = (node: Node, port: number) =>
  Effect.tryPromise(() =>
    Amqp.connect(`amqp://${guest.user}:${guest.password}@127.0.0.1:${port}/`, { timeout: 2000 }).then((c) => c.close())
  ).pipe(
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.orDie,
    Effect.timeoutOrElse({
      duration: "60 seconds",
      orElse: () =>
        Effect.promise(() => logTail(node)).pipe(
          Effect.flatMap((log) => Effect.die(new Error(`RabbitMQ node ${node.name} did not come up:\n${log}`)))
        )
    })
  )

const startNode = Effect.gen(function* () {
  const port = yield* freePort
  const distPort = yield* freePort
  const root = yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), `${prefix}${process.pid}-`)))
  const node = nodeOf(root)
  yield* Effect.promise(async () => {
    await fs.writeFile(path.join(root, "rabbitmq.conf"), `listeners.tcp.local = 127.0.0.1:${port}\n`)
    await fs.writeFile(path.join(root, "enabled_plugins"), "[].\n")
    await fs.chmod(root, 0o755)
    await run("chown", ["-R", "rabbitmq:rabbitmq", root])
    await run("rabbitmq-server", ["-detached"], {
      env: {
        ...process.env,
        RABBITMQ_NODENAME: node.name,
        RABBITMQ_NODE_PORT: String(port),
        RABBITMQ_DIST_PORT: String(distPort),
        RABBITMQ_CONFIG_FILE: path.join(root, "rabbitmq.conf"),
        RABBITMQ_ENABLED_PLUGINS_FILE: path.join(root, "enabled_plugins"),
        RABBITMQ_MNESIA_BASE: path.join(root, "mnesia"),
        RABBITMQ_LOG_BASE: path.join(root, "log"),
        RABBITMQ_PID_FILE: node.pidFile
      }
    })
  })
  return { node, port }
})

export const layer = Layer.effect(
  PrivateRabbit,
  Effect.gen(function* () {
    yield* removeAbandoned
    const { node, port } = yield* Effect.acquireRelease(startNode, ({ node }) => Effect.promise(() => removeNode(node)))
    yield* awaitAmqp(node, port)
    const server = { host: "127.0.0.1", port, node: node.name }
    return PrivateRabbit.of({
      server,
      directory: node.root,
      stopApp: Effect.promise(() => rabbitmqctl(["stop_app"], server)).pipe(Effect.asVoid),
      startApp: Effect.promise(() => rabbitmqctl(["start_app"], server)).pipe(Effect.andThen(awaitAmqp(node, port)))
    })
  })
)
