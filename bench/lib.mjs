// Small helpers shared by the benchmarks: timing, tables, JSON results.
import { mkdirSync, writeFileSync } from 'node:fs';
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
