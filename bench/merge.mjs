// The query path's CPU part without storage (services/collector/src/query/merge.ts
// `mergeRows`: open every stored row, decide copies and replaced rows, group, merge per bucket):
// CPU µs per stored row for four row shapes a dashboard query meets, this build beside another
// build of the collector (`--base path/to/collector/dist`, e.g. main's, compiled in a scratch
// copy) in the same process, interleaved, `--runs` times (default 3). Without `--base` only this
// build is measured. CPU time of this thread (process.cpuUsage): other load matters less than
// for wall time. `--scale f` multiplies the rows per shape (default 1).
//
//   hour partial   30-day hourly sum by country: hour rows, 4 partial rows per (hour, series)
//   hour p95       the same rows, p95 (sketches merged)
//   packed         30-day hourly sum by country over day packs (format 3, sealed lists of 24 slots)
//   minute p95     24-hour minute p95 by country: one minute row per (minute, series)
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fmt, progress, table, writeResult } from './lib.mjs';

const { values: args } = parseArgs({
  options: { base: { type: 'string' }, runs: { type: 'string', default: '3' }, scale: { type: 'string', default: '1' } },
});
const RUNS = Number(args.runs);
const SCALE = Number(args.scale);
const load = async (dist) => ({
  merge: await import(`${dist}query/merge.js`),
  records: await import(`${dist}at-rest/records.js`),
  rollup: await import(`${dist}rollup/index.js`),
});
const now = await load(new URL('../services/collector/dist/', import.meta.url).href);
const base = args.base ? await load(`file://${resolve(args.base)}/`) : undefined;
// Rows are written by the base build when there is one (a newer build reads what an older one wrote).
const writer = base ?? now;
const { sealRollup } = writer.records;
const { addPoint, emptyAggregate, encodeAggregate, encodeDayPack } = writer.rollup;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const MINUTE = 60_000;
const key = randomBytes(32);
const accountId = 'acct_bench_merge';
const metric = '1234567890123456789';
const countries = Array.from({ length: 20 }, (_, i) => String(9_000_000_000_000_000_000n + BigInt(i) * 7919n));
const devices = ['111', '222', '333'];
const series = countries.flatMap((c, i) => devices.map((d, j) => ({ s: String(5_000_000_000_000 + i * 3 + j), t: `${c},${d}` })));
const K = '17,18'; // tag key pseudonyms: country, device
const hex = () => randomBytes(8).toString('hex');
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
function aggregate(points) {
  const a = emptyAggregate();
  for (let i = 0; i < points; i++) addPoint(a, Math.round(20 + rand() * 400), 0);
  return encodeAggregate(a);
}
const ident = (level, b, sr, part) => ({ accountId, level, bucket: b, metric, series: sr.s, tagKeys: K.split(','), tagValues: sr.t.split(','), keyVersion: 1, part });
const row = (l, b, sr, part, a, u = []) => ({ l, b, v: 1, s: sr.s, a, k: K, t: sr.t, m: metric, p: part, u });

const day0 = Math.floor(Date.UTC(2026, 10, 1) / DAY) * DAY;
function hourRows(days) {
  const rows = [];
  for (let d = 0; d < days; d++)
    for (let h = 0; h < 24; h++)
      for (const sr of series)
        for (let tick = 0; tick < 4; tick++) {
          const b = day0 + d * DAY + h * HOUR;
          const part = hex();
          rows.push(row(1, b, sr, part, sealRollup(key, ident(1, b, sr, part), aggregate(3))));
        }
  return rows;
}
function packRows(days) {
  const rows = [];
  for (let d = 0; d < days; d++)
    for (const sr of series) {
      const b = day0 + d * DAY;
      const hours = Array.from({ length: 24 }, (_, h) => ({ hour: h, bytes: aggregate(12) }));
      const list = hours.map((h) => `${h.hour}/${hex()}`);
      const part = `c:d:${hex()}`;
      rows.push(row(2, b, sr, part, sealRollup(key, ident(2, b, sr, part), encodeDayPack(hours, 24), list)));
    }
  return rows;
}
function minuteRows(minutes) {
  const rows = [];
  for (let m = 0; m < minutes; m++)
    for (const sr of series) {
      const b = day0 + m * MINUTE;
      const part = hex();
      rows.push(row(0, b, sr, part, sealRollup(key, ident(0, b, sr, part), aggregate(2))));
    }
  return rows;
}
const plan = (level, from, to, step, aggregation) => ({
  accountId,
  level,
  starts: Array.from({ length: Math.ceil((to - from) / step) }, (_, i) => from + i * step),
  end: to,
  aggregation,
  maxRows: 1_000_000,
  maxGroups: 1000,
  versions: [{ version: 1, dataKey: key, metric, groupKeys: ['17'], filters: [] }],
});

progress('merge bench: building sealed rows');
const hourDays = Math.max(1, Math.round(7 * SCALE));
const packDays = Math.max(1, Math.round(30 * SCALE));
const minutes = Math.max(1, Math.round(600 * SCALE));
const hour = hourRows(hourDays);
const shapes = [
  { name: 'hour partial, sum', rows: hour, plan: plan(1, day0, day0 + hourDays * DAY, HOUR, 'sum') },
  { name: 'hour partial, p95', rows: hour, plan: plan(1, day0, day0 + hourDays * DAY, HOUR, 'p95') },
  { name: 'day packs, sum', rows: packRows(packDays), plan: plan(1, day0, day0 + packDays * DAY, HOUR, 'sum') },
  { name: 'minute, p95', rows: minuteRows(minutes), plan: plan(0, day0, day0 + minutes * MINUTE, MINUTE, 'p95') },
];

/** CPU µs per stored row of one mergeRows call (a fresh plan: the worker zeroes keys it got). */
function measure(impl, shape) {
  globalThis.gc?.();
  const start = process.cpuUsage();
  const m = impl.merge.mergeRows({ ...shape.plan, versions: shape.plan.versions.map((v) => ({ ...v })) }, shape.rows);
  const used = process.cpuUsage(start);
  if (m.failed || m.tampered || m.groups.size !== 20) throw new Error(`${shape.name}: failed ${m.failed}, tampered ${m.tampered}, groups ${m.groups.size}`);
  return { us: (used.user + used.system) / shape.rows.length, check: checksum(impl, shape, m) };
}
const checksum = (impl, shape, m) => {
  let s = 0;
  for (const g of m.groups.values()) for (const a of g.aggs) if (a) s += impl.rollup.finalize(a, shape.plan.aggregation) ?? 0;
  return Math.round(s * 1000);
};

const results = [];
progress(`merge bench: ${shapes.map((s) => `${s.name} ${s.rows.length} rows`).join('; ')}; ${RUNS} runs${base ? ', base beside' : ''}`);
for (const shape of shapes) {
  measure(now, shape); // warm-up
  if (base) measure(base, shape);
  const r = { shape: shape.name, rows: shape.rows.length, now: [], base: [] };
  for (let i = 0; i < RUNS; i++) {
    const a = measure(now, shape);
    r.now.push(a.us);
    if (base) {
      const b = measure(base, shape);
      r.base.push(b.us);
      if (a.check !== b.check) throw new Error(`${shape.name}: the builds disagree (${a.check} vs ${b.check})`);
    }
  }
  results.push(r);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
table(
  results.map((r) => ({
    shape: r.shape,
    rows: fmt(r.rows),
    ...(base ? { 'base µs/row (runs)': r.base.map((x) => fmt(x, 2)).join(' / ') } : {}),
    'this µs/row (runs)': r.now.map((x) => fmt(x, 2)).join(' / '),
    ...(base ? { 'median ratio': `${fmt(median(r.now) / median(r.base), 2)}×` } : {}),
  })),
);
writeResult('merge', { base: args.base ?? null, results });
