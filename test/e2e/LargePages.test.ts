/**
 * Concurrent lists of the largest pages cannot exhaust the service's memory: 500 sagas with contexts near the 64 KiB
 * limit, 200 concurrent `GET /v1/sagas?limit=500`, and the service process's peak resident memory (VmHWM) stays under
 * the bound the README documents. Every request is answered, and the pages together still list every saga.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { freePort } from "../utils/freePort.ts"
import { rabbit, TestVhost, layerVhost as testVhost } from "../utils/rabbit.ts"
import { TestDatabase, layerStore as testStore } from "../utils/TestDatabase.ts"
import { serviceEnvironment, startScoped, workDirectory } from "./harness/deployment.ts"

/** The documented bound on the service's peak resident memory under this load. */
const boundMiB = 512

const sagas = 500
const blob = "x".repeat(60_000)

/** Peak resident memory of a process so far, in MiB (Linux). */
const peakMiB = (pid: number) => {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmHWM:"))
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? 0) / 1024
}

layer(Layer.mergeAll(testStore(), testVhost()), { excludeTestServices: true, timeout: "120 seconds" })(
  "large pages",
  (it) => {
    it.effect(`keeps the service under ${boundMiB} MiB while 200 clients list 500 sagas of 60 kB each at once`, () =>
      Effect.gen(function* () {
        const db = yield* TestDatabase
        const vhost = yield* TestVhost
        yield* db.superuser(`
          INSERT INTO orchestrator.saga_instances (id, saga_type, current_state, status, context, progress, correlation_id)
          SELECT gen_random_uuid(), 'BALANCE_CALCULATION', 'COMPLETED', 'COMPLETED',
                 jsonb_build_object('n', n, 'blob', '${blob}'), '{}', 'pages-' || n
          FROM generate_series(1, ${sagas}) n`)
        const directory = yield* workDirectory
        const port = yield* freePort
        const endpoints = { database: db.config, rabbit, vhost: vhost.name }
        const service = yield* startScoped(["src/main.ts"], serviceEnvironment(endpoints, directory, port))
        yield* service.waitFor(/consuming queue 'orchestrator.replies'/, 30_000)
        const token = readFileSync(join(directory, "api_tokens"), "utf8").trim()
        const pid = service.child.pid ?? 0

        const list = (cursor?: string) =>
          fetch(`http://127.0.0.1:${port}/v1/sagas?limit=500${cursor === undefined ? "" : `&cursor=${cursor}`}`, {
            headers: { authorization: `Bearer ${token}` }
          }).then(async (response) => ({
            status: response.status,
            page: (await response.json()) as { items: Array<{ id: string }>; nextCursor: string | null }
          }))
        const pages = yield* Effect.promise(() => Promise.all(Array.from({ length: 200 }, () => list())))
        assert.deepStrictEqual(new Set(pages.map((reply) => reply.status)), new Set([200]))
        const peak = peakMiB(pid)
        assert.isBelow(peak, boundMiB, `peak resident memory ${peak.toFixed(0)} MiB`)

        // Each page ends at the byte budget with a cursor; following it lists every saga exactly once.
        const first = pages[0]?.page
        assert.isBelow(first?.items.length ?? 0, sagas)
        const seen = new Set(first?.items.map((item) => item.id))
        let cursor = first?.nextCursor ?? null
        while (cursor !== null) {
          const { page } = yield* Effect.promise(() => list(cursor ?? undefined))
          for (const item of page.items) seen.add(item.id)
          cursor = page.nextCursor
        }
        assert.strictEqual(seen.size, sagas)
      })
    )
  }
)
