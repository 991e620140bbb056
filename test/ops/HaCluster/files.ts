/**
 * The cluster's temp directory. Directories are named after the test process (`orch-ha-<pid>-…`), so a
 * later run can tell which ones a killed run abandoned and end what still runs in them, by pid.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { isAlive } from "../../utils/processes.ts"
import { awaitGone, processesNaming, signalIf } from "../daemons.ts"

const prefix = "orch-ha-"

/** Whatever a run whose process is gone left behind: its daemons (by pid, found by its directory) and files. */
export const removeAbandoned = Effect.gen(function* () {
  for (const entry of fs.readdirSync(os.tmpdir())) {
    const owner = Number(entry.startsWith(prefix) ? entry.slice(prefix.length).split("-")[0] : Number.NaN)
    if (!Number.isInteger(owner) || owner === process.pid || isAlive(owner)) continue
    const root = path.join(os.tmpdir(), entry)
    for (const pid of processesNaming(root)) signalIf(pid, root, "SIGKILL")
    for (const pid of processesNaming(root)) yield* awaitGone(pid, root, 5_000)
    fs.rmSync(root, { recursive: true, force: true })
  }
})

const postgresIds = () => {
  const line = fs
    .readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("postgres:"))
  const [, , uid, gid] = line?.split(":") ?? []
  if (uid === undefined || gid === undefined) throw new Error("no `postgres` OS user on this machine")
  return { uid: Number(uid), gid: Number(gid) }
}

/** A directory of the cluster's own, owned by postgres with mode 0700 (PostgreSQL insists on it for its data). */
export const ownDirectory = (directory: string) => {
  fs.mkdirSync(directory, { recursive: true, mode: 0o700 })
  fs.chmodSync(directory, 0o700)
  fs.chownSync(directory, postgresIds().uid, postgresIds().gid)
  return directory
}

/** A fresh temp directory for one cluster, owned by postgres. */
export const makeRoot = Effect.sync(() =>
  ownDirectory(fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}${process.pid}-`)))
)
