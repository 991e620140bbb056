import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { decodeTask, type TaskMessage } from "../../src/domain/Messages.ts"
import type { SagaId } from "../../src/domain/Saga.ts"
import { Engine, layer as engineLayer } from "../../src/saga/Engine.ts"
import { SagaRegistry } from "../../src/saga/Registry.ts"
import { definitions } from "../../src/sagas/index.ts"
import { SagaStore } from "../../src/store/SagaStore.ts"
import * as H from "../http/harness.ts"
import { passwords } from "../utils/postgres.ts"
import { secretsDirectory, start } from "../utils/processes.ts"
import { layerStore, TestDatabase } from "../utils/TestDatabase.ts"

const secrets = secretsDirectory({ db_password: passwords.app })

/** Runs `orchestrator <args>` against the test database; resolves with the exit code and what it printed. */
const cli = (...args: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const db = yield* TestDatabase
    const run = start(["src/cli.ts", ...args], {
      ORCH_DB_HOST: db.config.host,
      ORCH_DB_PORT: String(db.config.port),
      ORCH_DB_NAME: db.name,
      ORCH_SECRETS_DIR: secrets
    })
    const code = yield* run.exited
    return { code, output: run.output() }
  })

const input = (n: number) => ({
  repo: `balance/plant-${n}`,
  baseBranch: "main",
  inputRef: `inputs/cli/${n}.yaml`,
  requestedBy: "cli-test"
})

/** Takes the tasks waiting in the outbox. */
const tasks = Effect.gen(function* () {
  const store = yield* SagaStore
  const found: Array<TaskMessage> = []
  yield* store.publishOutbox(500, (messages) =>
    Effect.forEach(messages, (m) =>
      decodeTask(JSON.stringify(m.payload)).pipe(
        Effect.orDie,
        Effect.map((t) => found.push(t))
      )
    )
  )
  return found
})

const results: Record<string, Record<string, string>> = {
  "gitlab.prepare_branch": { branch: "calc/cli", commitSha: "e".repeat(40) },
  "geometry.mesh": { meshRef: "meshes/cli.msh" }
}

/** Answers the pending tasks of one saga successfully; the other sagas' tasks go unanswered. */
const answer = (id: SagaId) =>
  Effect.gen(function* () {
    const engine = yield* Engine
    for (const task of (yield* tasks).filter((t) => t.sagaId === id)) {
      yield* engine.reply({
        sagaId: task.sagaId,
        taskId: task.taskId,
        outcome: "succeeded",
        result: results[task.taskType] ?? {}
      })
    }
  })

const world = engineLayer.pipe(Layer.provideMerge(SagaRegistry.layer(definitions)), Layer.provideMerge(layerStore()))

layer(world, { excludeTestServices: true, timeout: "90 seconds" })("orchestrator sagas …", (it) => {
  it.effect(
    "lists, shows and finds stuck sagas as tables and as JSON, and drives them by signal, retry and cancel",
    () =>
      Effect.gen(function* () {
        const engine = yield* Engine
        const store = yield* SagaStore
        const a = (yield* engine.start("BALANCE_CALCULATION", input(1), { correlationId: "corr-cli-1" })).saga
        const b = (yield* engine.start("BALANCE_CALCULATION", input(2))).saga
        // a: prepare and mesh done → waits for the condenser signal; b's prepare task goes unanswered.
        yield* answer(a.id)
        yield* answer(a.id)
        assert.strictEqual((yield* store.get(a.id)).currentState, "AWAITING_CONDENSER_INPUT")

        const table = yield* cli("sagas", "list")
        assert.strictEqual(table.code, 0)
        assert.match(table.output, /^ID\s+TYPE\s+STATE\s+STATUS\s+VERSION\s+UPDATED$/m)
        assert.include(table.output, a.id)
        assert.include(table.output, b.id)

        const filtered = yield* cli("sagas", "list", "--json", "--context", '{"inputRef":"inputs/cli/2.yaml"}')
        assert.strictEqual(filtered.code, 0)
        const page = JSON.parse(filtered.output) as { items: Array<{ id: string; lockVersion: number }> }
        assert.deepStrictEqual(
          page.items.map((s) => s.id),
          [b.id]
        )

        const byCorrelation = JSON.parse(
          (yield* cli("sagas", "list", "--json", "--correlation-id", "corr-cli-1")).output
        )
        assert.deepStrictEqual(
          byCorrelation.items.map((s: { id: string }) => s.id),
          [a.id]
        )

        const first = yield* cli("sagas", "list", "--limit", "1")
        const cursor = /^more: --cursor (\S+)$/m.exec(first.output)?.[1]
        assert.isDefined(cursor)
        const second = JSON.parse(
          (yield* cli("sagas", "list", "--json", "--limit", "1", "--cursor", cursor ?? "")).output
        )
        assert.strictEqual(second.items.length, 1)
        assert.notInclude(first.output, second.items[0].id)

        const shown = yield* cli("sagas", "show", a.id)
        assert.strictEqual(shown.code, 0)
        assert.match(shown.output, /^state\s+AWAITING_CONDENSER_INPUT \(RUNNING\)$/m)
        assert.match(shown.output, /^0\s+—\s+PREPARING_BRANCH\s+RUNNING\s+SagaStarted/m)
        const shownJson = JSON.parse((yield* cli("sagas", "show", a.id, "--json")).output)
        assert.deepStrictEqual(
          shownJson.history.map((t: { event: string }) => t.event),
          ["SagaStarted", "StepSucceeded", "StepSucceeded"]
        )

        const stuck = yield* cli("sagas", "stuck", "--older-than", "PT0S")
        assert.strictEqual(stuck.code, 0)
        assert.match(stuck.output, new RegExp(`^${a.id}.*signal condenser_input`, "m"))
        assert.match(stuck.output, new RegExp(`^${b.id}.*reply to gitlab.prepare_branch`, "m"))
        const notStuck = JSON.parse((yield* cli("sagas", "stuck", "--older-than", "PT1H", "--json")).output)
        assert.deepStrictEqual(notStuck, { olderThan: "PT1H", items: [] })

        const signalled = yield* cli(
          "sagas",
          "signal",
          a.id,
          "condenser_input",
          "--data",
          '{"condenserDataRef":"c/7.json"}'
        )
        assert.strictEqual(signalled.code, 0)
        assert.strictEqual((yield* store.get(a.id)).currentState, "RUNNING_SOLVER")

        const atB = (yield* store.get(b.id)).lockVersion
        const stale = yield* cli("sagas", "retry", b.id, "--if-match", String(atB - 1))
        assert.strictEqual(stale.code, 1)
        assert.include(stale.output, `is at version ${atB}`)
        assert.strictEqual((yield* store.get(b.id)).lockVersion, atB)
        const retried = yield* cli("sagas", "retry", b.id, "--if-match", String(atB), "--json")
        assert.strictEqual(retried.code, 0)
        assert.strictEqual(JSON.parse(retried.output).lockVersion, atB + 1)

        const cancelled = yield* cli("sagas", "cancel", b.id)
        assert.strictEqual(cancelled.code, 0)
        assert.deepInclude(yield* store.get(b.id), { status: "COMPENSATING", currentState: "DELETING_BRANCH" })
      })
  )

  it.effect("purges finished sagas past the retention period; --dry-run only counts", () =>
    Effect.gen(function* () {
      const db = yield* TestDatabase
      const engine = yield* Engine
      const store = yield* SagaStore
      const old = (yield* engine.start("BALANCE_CALCULATION", input(90))).saga
      const running = (yield* engine.start("BALANCE_CALCULATION", input(91))).saga
      // Finished 40 days ago, as far as the table says (its trigger, which stamps every change, is bypassed).
      yield* db.superuser(`
        SET session_replication_role = replica;
        UPDATE orchestrator.saga_instances SET status = 'COMPLETED', current_state = 'COMPLETED',
          updated_at = now() - interval '40 days' WHERE id = '${old.id}';
        UPDATE orchestrator.saga_instances SET updated_at = now() - interval '40 days' WHERE id = '${running.id}';`)

      const dry = yield* cli("purge", "--dry-run")
      assert.strictEqual(dry.code, 0, dry.output)
      assert.match(dry.output, /would delete 1 finished sagas and \d+ idempotency keys older than \d{4}-/)
      assert.strictEqual((yield* store.get(old.id)).status, "COMPLETED")

      const done = yield* cli("purge")
      assert.strictEqual(done.code, 0, done.output)
      assert.match(done.output, /deleted 1 finished sagas/)
      assert.deepInclude(yield* Effect.flip(store.get(old.id)), { _tag: "SagaNotFound" })
      assert.strictEqual((yield* store.get(running.id)).status, "RUNNING", "an old running saga stays")

      const bad = yield* cli("purge", "--older-than", "soon")
      assert.strictEqual(bad.code, 1)
    })
  )

  it.effect("exits 1 with a clear message for an unknown id, a malformed id, bad JSON and a bad duration", () =>
    Effect.gen(function* () {
      const unknown = "01a21959-9efc-7593-aa22-f480ade611f3" as SagaId
      const missing = yield* cli("sagas", "show", unknown)
      assert.strictEqual(missing.code, 1)
      assert.include(missing.output, `error: saga ${unknown} does not exist`)
      assert.notInclude(missing.output, "    at ")
      assert.strictEqual((yield* cli("sagas", "show", "not-a-uuid")).code, 1)
      const badJson = yield* cli("sagas", "signal", unknown, "condenser_input", "--data", "{oops")
      assert.strictEqual(badJson.code, 1)
      assert.include(badJson.output, "--data is not JSON")
      const badDuration = yield* cli("sagas", "stuck", "--older-than", "15 minutes")
      assert.strictEqual(badDuration.code, 1)
      assert.include(badDuration.output, "--older-than")
      assert.include(badDuration.output, "expected a non-negative ISO 8601 duration")
      assert.include(badDuration.output, "such as PT15M")
    })
  )
})

// The CLI reads the database: the API serves the same one here.
layer(H.layerOn(layerStore()), { excludeTestServices: true, timeout: "90 seconds" })(
  "orchestrator sagas … --json",
  (it) => {
    it.effect("prints what the HTTP API answers for the same sagas: one, a page, the stuck ones, a signalled one", () =>
      Effect.gen(function* () {
        const api = (path: string) =>
          H.call("GET", path).pipe(
            Effect.map((reply) => {
              assert.strictEqual(reply.status, 200, reply.text)
              return JSON.parse(reply.text)
            })
          )
        const json = (...args: ReadonlyArray<string>) =>
          cli("sagas", ...args, "--json").pipe(
            Effect.map(({ code, output }) => {
              assert.strictEqual(code, 0, output)
              return JSON.parse(output)
            })
          )
        const correlationId = `corr-json-${crypto.randomUUID()}`
        const started = yield* H.call("POST", "/v1/sagas", {
          body: { type: "BALANCE_CALCULATION", input: H.input(), correlationId }
        })
        const id: SagaId = JSON.parse(started.text).id
        yield* H.toCondenserInput(id)

        const shown = yield* json("show", id)
        assert.deepStrictEqual(shown, yield* api(`/v1/sagas/${id}`))
        assert.deepStrictEqual(
          shown.history.map((t: { event: string }) => t.event),
          ["SagaStarted", "StepSucceeded", "StepSucceeded"]
        )
        const page = yield* json("list", "--correlation-id", correlationId)
        assert.deepStrictEqual(page, yield* api(`/v1/sagas?correlationId=${correlationId}`))
        assert.strictEqual(page.items.length, 1)
        const stuck = yield* json("stuck", "--older-than", "PT0S")
        assert.deepStrictEqual(stuck, yield* api("/v1/sagas/stuck?olderThan=PT0S"))
        assert.deepInclude(stuck.items[0].waitingFor, { kind: "signal", name: "condenser_input" })

        const signalled = yield* json("signal", id, "condenser_input", "--data", '{"condenserDataRef":"c/8.json"}')
        assert.strictEqual(signalled.currentState, "RUNNING_SOLVER")
        const { history: _, ...afterSignal } = yield* api(`/v1/sagas/${id}`)
        assert.deepStrictEqual(signalled, afterSignal)
      })
    )
  }
)
