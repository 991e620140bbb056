/**
 * The deployment files as data, for the packaging tests: YAML documents (compose, Patroni, Kubernetes), the
 * Dockerfile's instructions, HAProxy's sections, and a way to run the shell scripts under docker/. Docker cannot
 * run on the machines that run these tests, so what Docker and Kubernetes would do is checked on these readings.
 */
import { execFile } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join, relative } from "node:path"
import { Effect } from "effect"
import { parse, parseAllDocuments } from "yaml"
import { projectRoot } from "../utils/processes.ts"

export const repoPath = (...segments: ReadonlyArray<string>) => join(projectRoot, ...segments)

export const readText = (path: string) => readFileSync(repoPath(path), "utf8")

/** Compose reads YAML with `<<` merge keys; anchors are how the file shares the two replicas' settings. */
export const readCompose = (): Record<string, unknown> =>
  record(parse(readText("docker/compose.yaml"), { merge: true }))

export const readYaml = (path: string): Record<string, unknown> => record(parse(readText(path)))

export interface Manifest {
  readonly file: string
  readonly object: Record<string, unknown>
}

/**
 * Every object of every manifest under docker/k8s. Read as YAML 1.1, as kubectl reads them: `defaultMode: 0440`
 * is octal there (288), where YAML 1.2 would read the decimal 440.
 */
export const readManifests = (): ReadonlyArray<Manifest> =>
  yamlFiles(repoPath("docker/k8s")).flatMap((path) =>
    parseAllDocuments(readFileSync(path, "utf8"), { version: "1.1" }).flatMap((document) => {
      if (document.errors.length > 0) throw new Error(`${path}: ${document.errors.map((e) => e.message).join("; ")}`)
      const object: unknown = document.toJS()
      return object === null ? [] : [{ file: relative(projectRoot, path), object: record(object) }]
    })
  )

const yamlFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((entry) => {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) return yamlFiles(path)
      return /\.ya?ml$/.test(entry.name) ? [path] : []
    })

// Narrowing parsed YAML: each accessor fails with the path it expected, so a test failure says what is missing.

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

export const record = (value: unknown, what = "value"): Record<string, unknown> => {
  if (!isRecord(value)) throw new Error(`${what}: expected a mapping, got ${JSON.stringify(value)}`)
  return value
}

export const list = (value: unknown, what = "value"): ReadonlyArray<unknown> => {
  if (!Array.isArray(value)) throw new Error(`${what}: expected a list, got ${JSON.stringify(value)}`)
  return value
}

export const text = (value: unknown, what = "value"): string => {
  if (typeof value !== "string") throw new Error(`${what}: expected a string, got ${JSON.stringify(value)}`)
  return value
}

/** `at(x, "spec", "template", "spec")`: the value at a path of mapping keys and list indexes, or undefined. */
export const at = (value: unknown, ...path: ReadonlyArray<string | number>): unknown => {
  let current = value
  for (const key of path) {
    if (typeof current !== "object" || current === null) return undefined
    current = typeof key === "number" ? (Array.isArray(current) ? current[key] : undefined) : record(current)[key]
  }
  return current
}

export const strings = (value: unknown, what = "value"): ReadonlyArray<string> =>
  list(value, what).map((item, index) => text(item, `${what}[${index}]`))

export const stringRecord = (value: unknown, what = "value"): Record<string, string> =>
  Object.fromEntries(Object.entries(record(value, what)).map(([key, item]) => [key, text(item, `${what}.${key}`)]))

export interface Instruction {
  readonly keyword: string
  readonly args: string
  /** The stage (the `AS` name of the FROM above it). */
  readonly stage: string
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
export const dockerfileInstructions = (source: string): ReadonlyArray<Instruction> => {
  const logical: Array<string> = []
  let pending = ""
  for (const line of source.split("\n")) {
    // Comment lines (parser directives like `# syntax=` included) are dropped, inside continuations too.
    if (/^\s*#/.test(line)) continue
    const continued = /\\\s*$/.test(line)
    pending += `${continued ? line.replace(/\\\s*$/, "") : line} `
    if (!continued) {
      if (pending.trim() !== "") logical.push(pending.trim().replace(/\s+/g, " "))
      pending = ""
    }
  }
  let stage = ""
  return logical.map((line) => {
    const [keyword = "", ...rest] = line.split(" ")
    const args = rest.join(" ")
    if (keyword.toUpperCase() === "FROM") stage = /\bAS\s+(\S+)$/i.exec(args)?.[1] ?? ""
    return { keyword: keyword.toUpperCase(), args, stage }
  })
}

/** The JSON array of an exec-form instruction (`CMD ["node", …]`). */
export const execForm = (args: string): ReadonlyArray<string> => strings(JSON.parse(args), args)

export interface HaproxySection {
  readonly kind: string
  readonly name: string
  readonly lines: ReadonlyArray<string>
}

/** HAProxy's sections (`global`, `defaults`, `listen x` …) with their directive lines, comments dropped. */
export const haproxySections = (source: string): ReadonlyArray<HaproxySection> => {
  const sections: Array<{ kind: string; name: string; lines: Array<string> }> = []
  for (const raw of source.split("\n")) {
    const line = raw.replace(/\s+#.*$|^#.*$/, "").trimEnd()
    if (line.trim() === "") continue
    if (/^\S/.test(line)) {
      const [kind = "", name = ""] = line.trim().split(/\s+/)
      sections.push({ kind, name, lines: [] })
    } else {
      sections.at(-1)?.lines.push(line.trim().replace(/\s+/g, " "))
    }
  }
  return sections
}

export interface ScriptResult {
  readonly code: number
  readonly output: string
}

/** Runs a program to its end and collects stdout and stderr together; never fails, the exit code tells. */
export const run = (
  program: string,
  args: ReadonlyArray<string>,
  options: { readonly env?: Record<string, string>; readonly cwd?: string; readonly timeoutMs?: number } = {}
): Effect.Effect<ScriptResult> =>
  Effect.callback<ScriptResult>((resume) => {
    const child = execFile(
      program,
      args,
      {
        cwd: options.cwd ?? projectRoot,
        env: { ...process.env, ...options.env },
        timeout: options.timeoutMs ?? 60_000,
        maxBuffer: 16 * 1024 * 1024
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
        resume(Effect.succeed({ code, output: `${stdout}${stderr}` }))
      }
    )
    return Effect.sync(() => child.kill("SIGKILL"))
  })
