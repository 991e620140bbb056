/**
 * Where the tests find PostgreSQL: the machine's own cluster unless ORCH_TEST_PG_* says otherwise. Local
 * connections as the superuser `postgres` are trusted on these machines; the service itself connects as the
 * roles created by docker/postgres/bootstrap.sql.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

/** A PostgreSQL server and the superuser the tests administer it as. */
export interface PgServer {
  readonly host: string
  readonly port: number
  readonly superuser: string
}

export const pg: PgServer = {
  host: process.env.ORCH_TEST_PG_HOST ?? "127.0.0.1",
  port: Number(process.env.ORCH_TEST_PG_PORT ?? 5432),
  superuser: process.env.ORCH_TEST_PG_SUPERUSER ?? "postgres"
}

export const passwords = { owner: "owner-test-secret", app: "app-test-secret" }
export const bootstrapSql = fileURLToPath(new URL("../../docker/postgres/bootstrap.sql", import.meta.url))

const run = promisify(execFile)

/** psql's arguments to connect to `database` as the superuser. */
export const superuserConnection = (database: string, server: PgServer = pg) => [
  "-h",
  server.host,
  "-p",
  String(server.port),
  "-U",
  server.superuser,
  "-d",
  database
]

/** Runs psql as the superuser (of the machine's server unless told otherwise); resolves with stdout, rejects with stderr. */
export const psql = async (database: string, args: ReadonlyArray<string>, server: PgServer = pg): Promise<string> => {
  const connection = superuserConnection(database, server)
  const { stdout } = await run("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", ...connection, ...args], {
    env: { ...process.env, PGCONNECT_TIMEOUT: "5" }
  })
  return stdout
}

const bootstrapVariables = ["-v", `owner_password=${passwords.owner}`, "-v", `app_password=${passwords.app}`]

/**
 * Runs bootstrap.sql on a database. Test files bootstrap their databases at the same time, and PostgreSQL refuses
 * two concurrent ALTER ROLE of one role ("tuple concurrently updated"): that one is retried. A DBA runs the
 * bootstrap once, so the script itself need not be concurrent.
 */
export const bootstrap = async (database: string, server: PgServer = pg): Promise<string> => {
  for (let attempt = 1; ; attempt++) {
    try {
      return await psql(database, [...bootstrapVariables, "-f", bootstrapSql], server)
    } catch (error) {
      if (attempt >= 10 || !String(error).includes("tuple concurrently updated")) throw error
    }
  }
}
