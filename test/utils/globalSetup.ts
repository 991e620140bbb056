/**
 * Runs once before all test files: checks that PostgreSQL is reachable (stopping at once with what to start when it
 * is not), drops databases left by runs that are gone, and bootstraps the template every test database of this run
 * is copied from. Database names carry the runner's pid, so runs side by side keep out of each other's way.
 */
import { readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TestProject } from "vitest/node"
import { bootstrap, pg, psql } from "./postgres.ts"
import { isAlive, secretsPrefix } from "./processes.ts"

declare module "vitest" {
  export interface ProvidedContext {
    readonly templateDatabase: string
  }
}

/** Secrets directories the tests wrote (see `secretsDirectory`), of the runners `which` selects. */
const removeSecretsDirectories = (which: (runnerPid: number) => boolean) => {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(secretsPrefix)) continue
    const pid = Number(name.slice(secretsPrefix.length).split("-")[0])
    if (Number.isInteger(pid) && which(pid)) rmSync(join(tmpdir(), name), { recursive: true, force: true })
  }
}

export default async function setup(project: TestProject) {
  try {
    await psql("postgres", ["-c", "SELECT 1"])
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${pg.host}:${pg.port} as ${pg.superuser} (${String(error).trim()}).\n` +
        "Start it (on Debian: pg_ctlcluster --skip-systemctl-redirect 15 main start) or point ORCH_TEST_PG_HOST / " +
        "ORCH_TEST_PG_PORT at one; `bash .ci/run` starts everything the tests need."
    )
  }
  const existing = await psql("postgres", [
    "-At",
    "-c",
    "SELECT datname FROM pg_database WHERE datname ~ '^orch_t(pl)?_'"
  ])
  for (const name of existing.split("\n").filter(Boolean)) {
    const pid = Number(name.split("_")[2])
    if (!isAlive(pid)) await psql("postgres", ["-c", `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`])
  }
  removeSecretsDirectories((pid) => !isAlive(pid))
  const template = `orch_tpl_${process.pid}`
  await psql("postgres", ["-c", `DROP DATABASE IF EXISTS ${template} WITH (FORCE)`])
  await psql("postgres", ["-c", `CREATE DATABASE ${template}`])
  await bootstrap(template)
  project.provide("templateDatabase", template)
  return async () => {
    await psql("postgres", ["-c", `DROP DATABASE IF EXISTS ${template} WITH (FORCE)`])
    removeSecretsDirectories((pid) => pid === process.pid)
  }
}
