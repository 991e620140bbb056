/**
 * The Debian packages the ops tests drive — Patroni, etcd, HAProxy and pgBackRest, beside PostgreSQL 15's server
 * binaries, which the machine's own cluster brings. Missing ones are installed with apt-get (the tests run as root,
 * as CI does); where apt-get is not available the run stops at once saying what to install — never a silent skip.
 */
import { execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { promisify } from "node:util"

const run = promisify(execFile)

/** Where Debian's PostgreSQL 15 keeps its server binaries (not on PATH): Patroni's `bin_dir`. */
export const postgresBin = "/usr/lib/postgresql/15/bin"

/** Each package, and the program that shows it is installed. */
const required: ReadonlyArray<{ readonly pkg: string; readonly program: string }> = [
  { pkg: "patroni", program: "patroni" },
  { pkg: "etcd-server", program: "etcd" },
  { pkg: "haproxy", program: "haproxy" },
  { pkg: "pgbackrest", program: "pgbackrest" }
]

const hasProgram = (program: string) =>
  run("sh", ["-c", `command -v ${program}`]).then(
    () => true,
    () => false
  )

const missingPackages = async () => {
  const missing: Array<string> = []
  for (const { pkg, program } of required) if (!(await hasProgram(program))) missing.push(pkg)
  return missing
}

const aptGet = (args: ReadonlyArray<string>) =>
  run("apt-get", ["-q", "-y", "-o", "DPkg::Lock::Timeout=300", ...args], {
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    maxBuffer: 64 * 1024 * 1024,
    timeout: 600_000
  })

/** Installs what is missing; resolves with the packages it installed. */
export const ensurePackages = async (): Promise<ReadonlyArray<string>> => {
  if (!existsSync(`${postgresBin}/postgres`) || !(await hasProgram("psql"))) {
    throw new Error(
      `the ops tests need PostgreSQL 15's server binaries in ${postgresBin} and psql ` +
        "(Debian: apt-get install postgresql-15 postgresql-client-15)"
    )
  }
  const missing = await missingPackages()
  if (missing.length === 0) return []
  if (!(await hasProgram("apt-get"))) {
    throw new Error(
      `the ops tests need the Debian packages ${missing.join(", ")}, and apt-get is not available to install ` +
        `them: install ${missing.join(" ")} (Patroni 3, etcd 3.4, HAProxy 2.6, pgBackRest 2.45) and run again`
    )
  }
  console.log(`ops tests: installing ${missing.join(", ")} with apt-get`)
  // A fresh machine may have no package lists yet: update once and try again.
  await aptGet(["install", ...missing]).catch(() => aptGet(["update"]).then(() => aptGet(["install", ...missing])))
  const stillMissing = await missingPackages()
  if (stillMissing.length > 0) {
    throw new Error(`apt-get install ${missing.join(" ")} finished, but ${stillMissing.join(", ")} is still missing`)
  }
  return missing
}
