/**
 * A strict parser of the Prometheus text exposition format (0.0.4), so tests read `/metrics` the way Prometheus
 * does and fail on anything it would reject or misread: malformed names, labels or escapes, samples before their
 * `# TYPE`, families split apart or declared twice, duplicate series, histogram buckets that are not cumulative
 * or whose `+Inf` bucket is not the count.
 */

export interface ParsedSample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface ParsedFamily {
  readonly name: string
  readonly type: string
  readonly help: string | undefined
  readonly samples: Array<ParsedSample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

const fail = (line: number, why: string, text: string): never => {
  throw new Error(`line ${line}: ${why}: ${JSON.stringify(text)}`)
}

const parseValue = (text: string, line: number): number => {
  if (text === "+Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/.test(text)) fail(line, "bad value", text)
  return Number(text)
}

/** `{a="x",b="y"}` at the start of `text`: the labels and what follows them. */
const parseLabels = (text: string, line: number): [Record<string, string>, string] => {
  const labels: Record<string, string> = {}
  let i = 1
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i)
    if (eq < 0) fail(line, "label without value", text)
    const name = text.slice(i, eq)
    if (!labelName.test(name)) fail(line, "bad label name", name)
    if (name in labels) fail(line, "repeated label", name)
    if (text[eq + 1] !== '"') fail(line, "unquoted label value", text)
    let value = ""
    let j = eq + 2
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === "\n") fail(line, "raw newline in a label value", text)
      if (text[j] !== "\\") {
        value += text[j]
        continue
      }
      const escaped = text[++j]
      if (escaped === "\\") value += "\\"
      else if (escaped === '"') value += '"'
      else if (escaped === "n") value += "\n"
      else fail(line, "bad escape in a label value", text)
    }
    if (j >= text.length) fail(line, "unterminated label value", text)
    labels[name] = value
    i = j + 1
    if (text[i] === ",") i++
    else if (text[i] !== "}") fail(line, "expected , or }", text)
  }
  return [labels, text.slice(i + 1)]
}

const familyOf = (sample: string, families: Map<string, ParsedFamily>) => {
  if (families.has(sample)) return families.get(sample)
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!sample.endsWith(suffix)) continue
    const family = families.get(sample.slice(0, -suffix.length))
    if (family?.type === "histogram" || (family?.type === "summary" && suffix !== "_bucket")) return family
  }
  return undefined
}

const checkHistogram = (family: ParsedFamily) => {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number }>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    const entry = series.get(key) ?? { buckets: [] }
    series.set(key, entry)
    if (sample.name.endsWith("_bucket")) {
      if (le === undefined) throw new Error(`${sample.name} without an le label`)
      entry.buckets.push([Number(le === "+Inf" ? Number.POSITIVE_INFINITY : le), sample.value])
    } else if (sample.name.endsWith("_count")) entry.count = sample.value
  }
  for (const [key, { buckets, count }] of series) {
    for (let i = 1; i < buckets.length; i++) {
      const [le, value] = buckets[i]!
      const [previousLe, previous] = buckets[i - 1]!
      if (le <= previousLe || value < previous) throw new Error(`${family.name}${key}: buckets not cumulative`)
    }
    const inf = buckets.at(-1)
    if (inf?.[0] !== Number.POSITIVE_INFINITY || inf[1] !== count) {
      throw new Error(`${family.name}${key}: the +Inf bucket is not the count`)
    }
  }
}

export const parsePrometheus = (text: string): Map<string, ParsedFamily> => {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the exposition does not end with a newline")
  const families = new Map<string, ParsedFamily>()
  const series = new Set<string>()
  let current: ParsedFamily | undefined
  const lines = text === "" ? [] : text.slice(0, -1).split("\n")
  lines.forEach((raw, index) => {
    const line = index + 1
    if (raw.trim() === "") fail(line, "blank line", raw)
    const meta = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(raw)
    if (meta !== null) {
      const [, kind, name, rest] = meta as unknown as [string, "HELP" | "TYPE", string, string | undefined]
      if (!metricName.test(name)) fail(line, "bad metric name", name)
      const existing = families.get(name)
      if (existing !== undefined && existing !== current) fail(line, "family declared again", raw)
      const family = existing ?? { name, type: "untyped", help: undefined, samples: [] }
      if (kind === "TYPE") {
        if (existing !== undefined && (existing.type !== "untyped" || existing.samples.length > 0)) {
          fail(line, "TYPE repeated or after samples", raw)
        }
        if (!types.has(rest ?? "")) fail(line, "unknown type", raw)
        families.set(name, { ...family, type: rest ?? "" })
      } else {
        if (family.help !== undefined) fail(line, "HELP repeated", raw)
        if (/\\[^\\n]/.test(rest ?? "")) fail(line, "bad escape in HELP", raw)
        families.set(name, { ...family, help: rest ?? "" })
      }
      current = families.get(name)
      return
    }
    if (raw.startsWith("#")) return
    const name = /^[^{ ]+/.exec(raw)?.[0] ?? ""
    if (!metricName.test(name)) fail(line, "bad sample name", raw)
    const [labels, rest] =
      raw[name.length] === "{" ? parseLabels(raw.slice(name.length), line) : [{}, raw.slice(name.length)]
    const parts = rest.split(" ")
    if (parts[0] !== "" || parts.length < 2 || parts.length > 3) fail(line, "expected ' value [timestamp]'", raw)
    const value = parseValue(parts[1] ?? "", line)
    const family = familyOf(name, families)
    if (family === undefined) fail(line, "sample without # TYPE", raw)
    if (family !== current) fail(line, "sample outside its family's block", raw)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (series.has(key)) fail(line, "duplicate series", raw)
    series.add(key)
    family?.samples.push({ name, labels, value })
  })
  for (const family of families.values()) if (family.type === "histogram") checkHistogram(family)
  return families
}

/** The value of the one sample of `family` whose labels include `labels`; undefined when there is none. */
export const sampleValue = (
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Readonly<Record<string, string>> = {}
): number | undefined => {
  const samples = [...families.values()]
    .flatMap((family) => family.samples)
    .filter((sample) => sample.name === name && Object.entries(labels).every(([k, v]) => sample.labels[k] === v))
  if (samples.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} names ${samples.length} series`)
  return samples[0]?.value
}
