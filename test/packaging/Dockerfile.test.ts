import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { at, dockerfileInstructions, execForm, readCompose, readText, run, text } from "./files.ts"

const instructions = dockerfileInstructions(readText("docker/Dockerfile"))
const find = (keyword: string, stage?: string) =>
  instructions.filter((i) => i.keyword === keyword && (stage === undefined || i.stage === stage))
const only = (keyword: string, stage?: string) => {
  const found = find(keyword, stage)
  assert.lengthOf(found, 1, `exactly one ${keyword}${stage ? ` in stage ${stage}` : ""}`)
  return found[0]!
}

const imageUid = 10001

/** The HEALTHCHECK's command: `CMD ["node", "-e", "…"]` after its options. */
const healthcheckCommand = () => {
  const args = only("HEALTHCHECK").args
  const cmd = /^(?:--\S+\s+)*CMD\s+(\[.*\])$/.exec(args)
  assert.isNotNull(cmd, `HEALTHCHECK in exec form: ${args}`)
  return execForm(cmd![1]!)
}

/** An HTTP server on a free loopback port answering every request with `status`, for the scope's lifetime. */
const httpServer = (status: number) =>
  Effect.acquireRelease(
    Effect.callback<Server>((resume) => {
      const server = createServer((request, response) => {
        response.writeHead(request.url === "/healthz" ? status : 404).end()
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map((server) => (server.address() as AddressInfo).port))

/** Runs the health check command as the image would, with `node` being this test's Node. */
const probe = (command: ReadonlyArray<string>, port: number) =>
  run(process.execPath, command.slice(1), { env: { ORCH_HTTP_PORT: String(port) }, timeoutMs: 10_000 }).pipe(
    Effect.map((result) => result.code)
  )

describe("docker/Dockerfile", () => {
  it("builds on Node 24 (Debian bookworm, slim) in every stage", () => {
    const arg = only("ARG").args
    assert.strictEqual(arg, "NODE_IMAGE=node:24-bookworm-slim")
    const froms = find("FROM").map((i) => i.args)
    assert.lengthOf(froms, 2)
    assert.match(text(froms[0]), /^\$\{NODE_IMAGE\} AS deps$/)
    assert.match(text(froms[1]), /^\$\{NODE_IMAGE\} AS runtime$/)
  })

  it("installs production dependencies only, from the lockfile", () => {
    const [install] = find("RUN", "deps")
    assert.match(text(install?.args), /^npm ci --omit=dev\b/)
    assert.deepStrictEqual(
      find("COPY", "deps").map((i) => i.args),
      ["package.json package-lock.json ./"]
    )
    assert.lengthOf(
      find("RUN", "runtime").filter((i) => /\bnpm\b/.test(i.args)),
      0,
      "no npm run in the image"
    )
  })

  it("copies the node_modules of the deps stage, the sources, the migrations and bootstrap.sql", () => {
    const copies = find("COPY", "runtime").map((i) => i.args)
    assert.include(copies, "--from=deps /app/node_modules ./node_modules")
    assert.include(copies, "src ./src")
    assert.include(copies, "migrations ./migrations")
    assert.include(copies, "docker/postgres/bootstrap.sql ./docker/postgres/bootstrap.sql")
    assert.strictEqual(only("WORKDIR", "runtime").args, "/app")
  })

  it("runs as a numeric non-root user, set after everything that needs root", () => {
    const runtime = instructions.filter((i) => i.stage === "runtime")
    const user = only("USER", "runtime")
    assert.strictEqual(user.args, `${imageUid}:${imageUid}`)
    const userIndex = runtime.indexOf(user)
    assert.isTrue(
      runtime.slice(userIndex + 1).every((i) => i.keyword !== "RUN" && i.keyword !== "COPY"),
      "no RUN or COPY after USER"
    )
    assert.match(text(find("RUN", "runtime")[0]?.args), new RegExp(`useradd .*--uid ${imageUid}\\b`))
  })

  it("starts `orchestrator serve`: the package's bin under the base image's node", () => {
    assert.deepStrictEqual(execForm(only("ENTRYPOINT").args), ["node", "src/cli.ts"])
    assert.deepStrictEqual(execForm(only("CMD", "runtime").args), ["serve"])
    const pkg = JSON.parse(readText("package.json"))
    assert.strictEqual(pkg.bin.orchestrator, "./src/cli.ts")
    assert.include(only("ENV", "runtime").args, "ORCH_SECRETS_DIR=/run/secrets")
    assert.include(only("ENV", "runtime").args, "ORCH_HTTP_PORT=8080")
    assert.strictEqual(only("EXPOSE").args, "8080")
  })

  it("checks its health on /healthz with node's fetch, the same command compose spells out", () => {
    const command = healthcheckCommand()
    assert.deepStrictEqual(command.slice(0, 2), ["node", "-e"])
    assert.include(command[2], "/healthz")
    assert.include(command[2], "process.env.ORCH_HTTP_PORT")
    const compose = readCompose()
    for (const replica of ["orchestrator-1", "orchestrator-2"]) {
      const test = at(compose, "services", replica, "healthcheck", "test")
      // `$$` is compose's escape for a literal `$`.
      assert.deepStrictEqual(
        execForm(JSON.stringify(test)).map((part) => part.replaceAll("$$", "$")),
        ["CMD", ...command]
      )
    }
  })

  it.effect("its health check passes on a 200 from /healthz and fails on a 503 or when nothing listens", () =>
    Effect.gen(function* () {
      const command = healthcheckCommand()
      const healthy = yield* httpServer(200)
      assert.strictEqual(yield* probe(command, healthy), 0)
      const unhealthy = yield* httpServer(503)
      assert.strictEqual(yield* probe(command, unhealthy), 1)
      const closed = yield* Effect.scoped(httpServer(200))
      assert.strictEqual(yield* probe(command, closed), 1)
    })
  )

  it("sends only what the image copies as build context (.dockerignore)", () => {
    const patterns = readText(".dockerignore")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"))
    assert.strictEqual(patterns[0], "*", "everything is excluded first")
    const included = patterns.filter((p) => p.startsWith("!")).map((p) => p.slice(1).replace(/\/$/, ""))
    const sources = find("COPY")
      .filter((i) => !i.args.startsWith("--from="))
      .flatMap((i) => i.args.split(" ").slice(0, -1))
    assert.sameMembers(included, [...new Set(sources)])
  })
})
