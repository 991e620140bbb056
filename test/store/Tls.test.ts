/**
 * TLS to PostgreSQL (ORCH_DB_SSL): a private cluster serving a certificate for `localhost`, signed by a CA this test
 * makes with openssl.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, chownSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { assert, layer } from "@effect/vitest"
import { Effect, Exit } from "effect"
import { SqlClient } from "effect/sql"
import { describe } from "vitest"
import type { DatabaseConfig } from "../../src/Config.ts"
import { runtimeClient } from "../../src/store/Database.ts"
import * as PrivateCluster from "../utils/PrivateCluster.ts"

const dir = mkdtempSync(join(tmpdir(), "orch-tls-"))
process.once("exit", () => rmSync(dir, { recursive: true, force: true }))
const file = (name: string) => join(dir, name)
const openssl = (...args: ReadonlyArray<string>) => execFileSync("openssl", args, { stdio: "pipe" })
openssl(
  "req",
  "-x509",
  "-newkey",
  "rsa:2048",
  "-nodes",
  "-days",
  "2",
  "-subj",
  "/CN=orchestrator test CA",
  "-keyout",
  file("ca.key"),
  "-out",
  file("ca.crt")
)
openssl(
  "req",
  "-newkey",
  "rsa:2048",
  "-nodes",
  "-subj",
  "/CN=localhost",
  "-keyout",
  file("server.key"),
  "-out",
  file("server.csr")
)
execFileSync("sh", [
  "-c",
  `printf 'subjectAltName=DNS:localhost\\n' > ${file("san.ext")} && openssl x509 -req -in ${file("server.csr")} -CA ${file("ca.crt")} -CAkey ${file("ca.key")} -CAcreateserial -days 2 -extfile ${file("san.ext")} -out ${file("server.crt")}`
])
// PostgreSQL reads its key as the postgres user and refuses a key others can read.
const postgresUid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim())
for (const name of ["server.key", "server.crt"]) chownSync(file(name), postgresUid, postgresUid)
chmodSync(file("server.key"), 0o600)
chmodSync(dir, 0o755)

const cluster = PrivateCluster.layer({
  postgresql: { ssl: "on", ssl_cert_file: `'${file("server.crt")}'`, ssl_key_file: `'${file("server.key")}'` }
})

/** Whether the runtime role gets through, and over TLS, with these connection settings. */
const connect = (config: DatabaseConfig) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ ssl: boolean }>`SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`
    return rows[0]?.ssl ?? false
  }).pipe(Effect.provide(runtimeClient(config, 1)), Effect.exit)

describe("TLS to PostgreSQL", () => {
  layer(cluster, { excludeTestServices: true, timeout: "90 seconds" })((it) => {
    it.effect("require encrypts; verify-full checks the CA and the host name; disable stays in clear", () =>
      Effect.gen(function* () {
        const { config } = yield* PrivateCluster.PrivateCluster
        assert.deepStrictEqual(yield* connect({ ...config, ssl: "disable" }), Exit.succeed(false))
        assert.deepStrictEqual(yield* connect({ ...config, ssl: "require" }), Exit.succeed(true))
        const verified = { ...config, host: "localhost", ssl: "verify-full" as const, sslRootCert: file("ca.crt") }
        assert.deepStrictEqual(yield* connect(verified), Exit.succeed(true))
        // The certificate names localhost, not 127.0.0.1: verify-full refuses the connection.
        const wrongHost = yield* connect({ ...verified, host: "127.0.0.1" })
        assert.isTrue(Exit.isFailure(wrongHost))
        // Without the test CA the server's certificate is not trusted.
        const unknownCa = yield* connect({ ...verified, sslRootCert: undefined })
        assert.isTrue(Exit.isFailure(unknownCa))
      })
    )
  })
})
