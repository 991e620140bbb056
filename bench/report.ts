/** The bench's results as a plain-text table, with each figure's target and where it stands. */
import type { ScaleResult } from "./scale.ts"
import type { Peak, ServiceResult } from "./service.ts"
import type { TransitionsResult } from "./transitions.ts"

export interface Results {
  readonly quick: boolean
  readonly machine: { readonly cpus: number }
  readonly transitions: ReadonlyArray<TransitionsResult> | undefined
  readonly allocations: { readonly steps: number; readonly bytesPerStep: number; readonly gcs: number } | undefined
  readonly scale: ScaleResult | undefined
  readonly service: ServiceResult | undefined
}

const n = (value: number, digits = 0) =>
  Number.isFinite(value) ? value.toLocaleString("en-US", { maximumFractionDigits: digits }) : "n/a"
const pct = (value: number) => `${n(value * 100)}%`
const verdict = (ok: boolean) => (ok ? "MET" : "MISSED")
const pad = (cells: ReadonlyArray<string>, widths: ReadonlyArray<number>) =>
  cells.map((cell, i) => cell.padEnd(widths[i] ?? 10)).join("  ")

/** A batch's two drains: the rate over both windows, then CPU and write transactions per reply step in them. */
const peakLines = (label: string, peak: Peak, cpus: number, target: string) => {
  const [toWaiting, toCompleted] = peak.drains
  const drains =
    toWaiting === undefined || toCompleted === undefined
      ? ""
      : `: to the signal wait ${n(toWaiting.steps)} in ${n(toWaiting.seconds, 1)} s, to completion ${n(toCompleted.steps)} in ${n(toCompleted.seconds, 1)} s`
  const cpu = Object.entries(peak.cpuMsPerStep)
  const machine = cpu.reduce((sum, [, ms]) => sum + ms, 0)
  return [
    `  ${label}: ${n(peak.stepsPerSecond)} reply steps/s, ${n(peak.sagasPerSecond, 1)} sagas/s (${n(peak.steps)} steps in ${n(peak.seconds, 1)} s${drains}) — ${target}`,
    `    CPU per reply step in the drains: ${cpu.map(([name, ms]) => `${name} ${n(ms, 2)} ms`).join(", ")}; ${n(machine, 2)} ms in all (${cpus} cores: at most ${n((cpus * 1000) / machine)} steps/s at this cost)`,
    `    PostgreSQL write transactions per reply step (transaction ids assigned, whole cluster): ${n(peak.writeTransactionsPerStep, 2)}`
  ]
}

export const table = (results: Results): string => {
  const lines: Array<string> = []
  lines.push("(1)+(2) saga step transactions/s (locked read, versioned update, history + outbox insert, commit)")
  if (results.transitions === undefined) lines.push("  not run")
  else {
    const widths = [4, 16, 14, 12, 10, 14, 12, 18]
    lines.push(
      `  ${pad(["c", "pgbench -M prep", "pgbench simple", "node client", "store", "store/prepared", "target ≥60%", "Node CPU µs/step (client, store)"], widths)}`
    )
    for (const r of results.transitions) {
      const ratio = r.store / r.pgbenchPrepared
      lines.push(
        `  ${pad(
          [
            String(r.concurrency),
            n(r.pgbenchPrepared),
            n(r.pgbenchSimple),
            n(r.nodeClient),
            n(r.store),
            pct(ratio),
            r.concurrency === 1 ? "-" : verdict(ratio >= 0.6),
            `${n(r.nodeClientCpuMicros)}, ${n(r.storeCpuMicros)}`
          ],
          widths
        )}`
      )
    }
  }
  lines.push("")
  lines.push("(4) queries at scale (ms through the store; plan's index use from EXPLAIN ANALYZE)")
  if (results.scale === undefined) lines.push("  not run")
  else {
    lines.push(
      `  ${n(results.scale.rows)} rows, ${n(results.scale.active)} active (populated in ${n(results.scale.populateSeconds, 1)} s)`
    )
    const widths = [20, 8, 8, 8, 9, 48, 10]
    lines.push(`  ${pad(["query", "p50", "p95", "max", "exec", "indexes (seq scans)", "≤20 ms p95"], widths)}`)
    for (const q of results.scale.queries) {
      const scans = q.seqScans.length === 0 ? "" : ` (seq: ${q.seqScans.join(", ")})`
      lines.push(
        `  ${pad([q.query, n(q.p50Ms, 2), n(q.p95Ms, 2), n(q.maxMs, 2), n(q.planMs, 2), `${q.indexes.join(", ")}${scans}`, verdict(q.p95Ms <= 20)], widths)}`
      )
    }
  }
  lines.push("")
  lines.push("(5) footprint")
  if (results.service === undefined) lines.push("  RSS: not run")
  else {
    const s = results.service
    const target = (active: number, rss: number) =>
      `target ≤200 MB with 10,000: ${active >= 10_000 ? verdict(rss <= 200) : "not at 10,000"}`
    const b = s.memoryBounded
    const firstDrain = s.oneProcess.drains[0] ?? { steps: Number.NaN, seconds: Number.NaN }
    const services = (cpu: Readonly<Record<string, number>>) => n(cpu.services ?? Number.NaN, 2)
    lines.push(
      `  service RSS idle ${n(s.rssIdleMb, 1)} MB; with ${n(s.activeSagas)} active sagas, right after draining them, ${n(s.rssActiveMb, 1)} MB, V8 heap in use ${n(s.heapUsedActiveMb, 1)} MB (${target(s.activeSagas, s.rssActiveMb)})`,
      `  memory-bounded service (node ${b.nodeOptions.join(" ")}): with ${n(b.activeSagas)} active sagas ${n(b.rssActiveMb, 1)} MB, heap in use ${n(b.heapUsedMb, 1)} MB (${target(b.activeSagas, b.rssActiveMb)}); its drain to the signal wait ${n(b.stepsPerSecond)} reply steps/s at ${services(b.cpuMsPerStep)} ms of service CPU per step (default settings, same drain: ${n(firstDrain.steps / firstDrain.seconds)} steps/s)`
    )
  }
  if (results.allocations === undefined) lines.push("  allocations: not run")
  else
    lines.push(
      `  allocations per store step: ${n(results.allocations.bytesPerStep / 1024, 1)} KiB (${n(results.allocations.steps)} steps, ${results.allocations.gcs} GCs)`
    )
  lines.push("")
  lines.push(
    "(3) end to end through RabbitMQ (worker replying at once; each batch queued while no service ran, then drained"
  )
  lines.push("    to the condenser-input wait, and, signalled while no service ran, drained again to completion)")
  if (results.service === undefined) lines.push("  not run")
  else {
    const { oneProcess, twoProcesses, latency } = results.service
    lines.push(
      ...peakLines(
        "one orchestrator process",
        oneProcess,
        results.machine.cpus,
        `target ≥1,500 steps/s: ${verdict(oneProcess.stepsPerSecond >= 1500)}`
      ),
      ...peakLines(
        "two orchestrator processes",
        twoProcesses,
        results.machine.cpus,
        `×${n(twoProcesses.stepsPerSecond / oneProcess.stepsPerSecond, 2)} one process's rate; target more than one process: ${verdict(twoProcesses.stepsPerSecond > oneProcess.stepsPerSecond)}`
      )
    )
    if (latency.length === 0) lines.push("  latency: not run")
    for (const at of latency) {
      const r = at.replyToCommitMs
      const w = at.replyConfirmedToNextTaskMs
      const g = at.commitToNextCommitMs
      const half = at.fractionOfPeak === 0.5
      lines.push(
        `  at ${n(at.fractionOfPeak * 100)}% of one process's peak (${n(at.stepsPerSecond)} reply steps/s, plus starts and signals), one process:`
      )
      lines.push(
        `    reply received → transition committed (service's histogram, bucket ≤): p50 ${n(r.p50)} ms, p95 ${n(r.p95)} ms, p99 ${n(r.p99)} ms`
      )
      lines.push(
        "    worker's reply confirmed → next task delivered to the worker (upper bound of reply received → next task confirmed):"
      )
      lines.push(
        `      p50 ${n(w.p50, 1)} ms, p95 ${n(w.p95, 1)} ms, p99 ${n(w.p99, 1)} ms (${n(w.pairs)} task pairs)${half ? ` — target p99 ≤25 ms at half: ${w.p99 <= 25 ? "MET" : "not shown (the bound is above)"}` : ""}`
      )
      lines.push(
        `    commit → task confirmed → worker → reply → next commit: p50 ${n(g.p50, 1)} ms, p95 ${n(g.p95, 1)} ms, p99 ${n(g.p99, 1)} ms`
      )
    }
  }
  return lines.join("\n")
}
