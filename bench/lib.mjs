// Small helpers shared by the benchmarks: timing, tables, JSON results.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import os from 'node:os';

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

export const progress = (msg) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** Runs fn repeatedly for ~ms milliseconds after a warm-up; returns ops/s and ns/op. */
export function rate(fn, { ms = 1000, warmup = 200 } = {}) {
  let end = performance.now() + warmup;
  while (performance.now() < end) fn();
  let n = 0;
  const start = performance.now();
  end = start + ms;
  while (performance.now() < end) { fn(); n++; }
  const elapsed = performance.now() - start;
  return { opsPerSec: (n / elapsed) * 1000, nsPerOp: (elapsed * 1e6) / n, iterations: n };
}

export function percentile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function table(rows) {
  const keys = Object.keys(rows[0] ?? {});
  const width = keys.map((k) => Math.max(k.length, ...rows.map((r) => String(r[k]).length)));
  const line = (cells) => cells.map((c, i) => String(c).padEnd(width[i])).join('  ');
  console.log(line(keys));
  console.log(line(width.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(keys.map((k) => r[k])));
}

export function writeResult(name, data) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = `${RESULTS_DIR}${name}.json`;
  const body = { name, at: new Date().toISOString(), machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version }, ...data };
  writeFileSync(file, JSON.stringify(body, null, 2) + '\n');
  progress(`wrote ${file}`);
}

export const fmt = (n, d = 0) => Number(n).toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** Parses Prometheus text exposition into [{ name, labels, value }] (no escapes in label values assumed). */
export function parsePrometheus(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * Quantile q of a cumulative histogram [{ le, count }] (le sorted, +Inf last), interpolated
 * linearly inside the bucket like PromQL's histogram_quantile. NaN when empty.
 */
export function histogramQuantile(buckets, q) {
  const total = buckets.at(-1)?.count ?? 0;
  if (!total) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1e-12, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** CPU seconds (user + system, all threads) a Linux process has used so far; NaN elsewhere. */
export function processCpuSeconds(pid, ticksPerSecond = 100) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / ticksPerSecond; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

/** Busy CPU seconds of the whole machine so far (all cores, from /proc/stat); NaN elsewhere. */
export function systemCpuSeconds(ticksPerSecond = 100) {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return (user + nice + system + irq + softirq + steal) / ticksPerSecond;
  } catch {
    return NaN;
  }
}
