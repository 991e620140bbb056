/**
 * The Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE` for every family, then its samples.
 * Effect ships `PrometheusMetrics.format`, but it renders only the metric registry (scrape-time gauges would have to
 * be stored there, keeping series of states that no saga is in any more) and omits HELP where a metric has no
 * description; this renders the registry's snapshot and the scrape-time families alike.
 */
import type { Metric } from "effect"

export type FamilyType = "counter" | "gauge" | "histogram" | "summary"

export type Label = readonly [name: string, value: string]

export interface Sample {
  /** Appended to the family's name: `_bucket`, `_sum`, `_count`; empty for plain samples. */
  readonly suffix?: string | undefined
  readonly labels: ReadonlyArray<Label>
  readonly value: number | bigint
}

export interface Family {
  readonly name: string
  readonly help: string
  readonly type: FamilyType
  readonly samples: ReadonlyArray<Sample>
}

const metricName = (name: string) => {
  const sanitized = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[0-9]/.test(sanitized) ? `_${sanitized}` : sanitized
}
const labelName = (name: string) => {
  const sanitized = name.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[0-9]/.test(sanitized) ? `_${sanitized}` : sanitized
}
const escapeLabelValue = (value: string) => value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")
const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

const formatLabels = (labels: Sample["labels"]) =>
  labels.length === 0
    ? ""
    : `{${labels.map(([name, value]) => `${labelName(name)}="${escapeLabelValue(value)}"`).join(",")}}`

/** Renders families in the order given; a family without samples still says what it is. */
export const render = (families: ReadonlyArray<Family>): string => {
  const lines: Array<string> = []
  for (const family of families) {
    const name = metricName(family.name)
    lines.push(`# HELP ${name} ${escapeHelp(family.help)}`, `# TYPE ${name} ${family.type}`)
    for (const sample of family.samples) {
      lines.push(`${name}${sample.suffix ?? ""}${formatLabels(sample.labels)} ${formatValue(sample.value)}`)
    }
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}

const attributeLabels = (attributes: Metric.Metric.AttributeSet | undefined): Array<Label> =>
  Object.entries(attributes ?? {})
    .filter(([name]) => name !== "unit" && name !== "time_unit")
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))

const samplesOf = (metric: Metric.Metric.Snapshot): Array<Sample> => {
  const labels = attributeLabels(metric.attributes)
  switch (metric.type) {
    case "Counter":
      return [{ labels, value: metric.state.count }]
    case "Gauge":
      return [{ labels, value: metric.state.value }]
    case "Frequency":
      return [...metric.state.occurrences].map(([key, count]) => ({
        labels: [...labels, ["key", key] as const],
        value: count
      }))
    case "Histogram":
      return [
        // Effect's buckets are already cumulative; `+Inf` is the total count.
        ...metric.state.buckets
          .filter(([boundary]) => boundary !== Number.POSITIVE_INFINITY)
          .map(([boundary, count]) => ({
            suffix: "_bucket",
            labels: [...labels, ["le", String(boundary)] as const],
            value: count
          })),
        { suffix: "_bucket", labels: [...labels, ["le", "+Inf"] as const], value: metric.state.count },
        { suffix: "_sum", labels, value: metric.state.sum },
        { suffix: "_count", labels, value: metric.state.count }
      ] satisfies Array<Sample>
    case "Summary":
      return [
        ...metric.state.quantiles.flatMap(([quantile, value]) =>
          value === undefined ? [] : [{ labels: [...labels, ["quantile", String(quantile)] as const], value }]
        ),
        { suffix: "_sum", labels, value: metric.state.sum },
        { suffix: "_count", labels, value: metric.state.count }
      ]
  }
}

const typeOf = (type: Metric.Metric.Type): FamilyType => {
  switch (type) {
    case "Counter":
    case "Frequency":
      return "counter"
    case "Gauge":
      return "gauge"
    case "Histogram":
      return "histogram"
    case "Summary":
      return "summary"
  }
}

const labelKey = (sample: Sample) => JSON.stringify(sample.labels)

/** The registry's metrics as families, one per metric name, in name order, series in label order. */
export const fromSnapshot = (snapshot: ReadonlyArray<Metric.Metric.Snapshot>): Array<Family> => {
  const byName = new Map<string, Array<Metric.Metric.Snapshot>>()
  for (const metric of snapshot) byName.set(metric.id, [...(byName.get(metric.id) ?? []), metric])
  return [...byName.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, metrics]) => {
      const series = [...metrics].sort((a, b) => {
        const ka = JSON.stringify(attributeLabels(a.attributes))
        const kb = JSON.stringify(attributeLabels(b.attributes))
        return ka < kb ? -1 : ka > kb ? 1 : 0
      })
      return {
        name,
        help: metrics.find((m) => m.description !== undefined)?.description ?? name,
        type: typeOf(metrics[0]!.type),
        samples: series.flatMap(samplesOf)
      }
    })
}

/** Samples of a gauge family from rows, with the labels in the order given. */
export const gaugeSamples = <A>(
  rows: ReadonlyArray<A>,
  labels: (row: A) => ReadonlyArray<Label>,
  value: (row: A) => number
): Array<Sample> =>
  rows.map((row) => ({ labels: labels(row), value: value(row) })).sort((a, b) => (labelKey(a) < labelKey(b) ? -1 : 1))
