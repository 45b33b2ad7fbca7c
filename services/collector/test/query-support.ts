/**
 * Shared by the query tests: a seeded point generator, a plaintext reference for queries,
 * and a writer that stores rollups the way the processor does (several partial rows per
 * bucket and series, dictionary entries), for engine tests without the ingest path.
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { expect } from 'vitest';
import type { Point } from '@cipherstat/protocol';
import { createApp } from '../src/app.js';
import { QueryCache, registerQueryRoutes, type QueryResult } from '../src/query/index.js';
import { PERCENTILE_ERROR } from '../src/query/merge.js';
import type { Services } from '../src/services.js';
import { Pseudonyms } from '../src/at-rest/pseudonyms.js';
import { sealDict, sealRollup } from '../src/at-rest/records.js';
import { addPoint, emptyAggregate, encodeAggregate, type Aggregate } from '../src/rollup/index.js';
import type { AccountKeys } from '../src/keyring/index.js';
import type { DictRow, RollupRow, Store } from '../src/storage/types.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';
export { mulberry32 };

export type GenPoint = Omit<Point, 'id'>;


export const COUNTRIES = ['DE', 'FR', 'US', 'IN'];
export const CHANNELS = ['web', 'app'];
export const PAGES = ['home', 'product', 'checkout'];
export const CANARY = { metric: 'canary_metric_zq7x', key: 'canary_key_k9w', value: 'canary_value_p3v' };

/**
 * `n` points spread uniformly over [from, to): storefront metrics with tags (some points lack
 * the `channel` tag), a gauge with negative values and zeros, and one canary metric.
 */
export function generatePoints(seed: number, n: number, from: number, to: number): GenPoint[] {
  const rnd = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const out: GenPoint[] = [];
  for (let i = 0; i < n; i++) {
    const time = from + Math.floor(rnd() * (to - from));
    const country = pick(COUNTRIES);
    const r = rnd();
    if (r < 0.3) {
      const tags: Record<string, string> = { country };
      if (rnd() < 0.9) tags.channel = pick(CHANNELS);
      out.push({ kind: 'counter', name: 'orders', value: rnd() < 0.8 ? 1 : 2, time, tags });
    } else if (r < 0.55) {
      const tags: Record<string, string> = { country, channel: pick(CHANNELS) };
      out.push({ kind: 'counter', name: 'revenue', value: Math.round(rnd() * 50_000) / 100, time, tags });
    } else if (r < 0.85) {
      // log-normal-ish page loads, 20 ms .. 20 s
      const v = Math.round(Math.exp(3 + rnd() * 7) * 10) / 10;
      out.push({ kind: 'histogram', name: 'page.load', value: v, time, tags: { page: pick(PAGES), country } });
    } else if (r < 0.98) {
      const v = rnd() < 0.1 ? 0 : Math.round((rnd() * 40 - 10) * 10) / 10;
      out.push({ kind: 'gauge', name: 'temperature', value: v, time, tags: { site: pick(['a', 'b']) } });
    } else {
      out.push({ kind: 'counter', name: CANARY.metric, value: 7, time, tags: { [CANARY.key]: CANARY.value } });
    }
  }
  return out;
}

// ---- plaintext reference -----------------------------------------------------

const formatters = new Map<string, Intl.DateTimeFormat>();
export type RefInterval = 'minute' | 'hour' | 'day' | 'week' | 'month';

/**
 * Local wall-clock label of an instant, truncated to the interval (independent of
 * rollup/time.ts): a week is named by the date of its Monday (ISO weeks), a month by `YYYY-MM`.
 */
export function localLabel(ms: number, interval: RefInterval, timeZone: string): string {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-CA', { timeZone, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit' });
    formatters.set(timeZone, f);
  }
  const p = Object.fromEntries(f.formatToParts(ms).map((x) => [x.type, x.value]));
  const day = `${p.year}-${p.month}-${p.day}`;
  if (interval === 'month') return day.slice(0, 7);
  if (interval === 'week') {
    const d = new Date(`${day}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    return d.toISOString().slice(0, 10);
  }
  return interval === 'day' ? day : interval === 'hour' ? `${day}T${p.hour}` : `${day}T${p.hour}:${p.minute}`;
}

export interface RefQuery {
  metric: string;
  aggregation: string;
  interval: RefInterval;
  timezone: string;
  groupBy?: string[];
  filter?: Record<string, string | string[]>;
}

/** Exact statistic over values (the rank convention of rollup/sketch.ts for percentiles). */
export function exact(values: number[], times: number[], aggregation: string): number | null {
  const n = values.length;
  if (aggregation === 'count') return n;
  if (aggregation === 'sum') return values.reduce((a, b) => a + b, 0);
  if (n === 0) return null;
  switch (aggregation) {
    case 'avg':
      return values.reduce((a, b) => a + b, 0) / n;
    case 'min':
      return Math.min(...values);
    case 'max':
      return Math.max(...values);
    case 'last': {
      let best = 0;
      for (let i = 1; i < n; i++) if (times[i]! > times[best]! || (times[i] === times[best] && values[i]! > values[best]!)) best = i;
      return values[best]!;
    }
  }
  const q = { p50: 0.5, p90: 0.9, p95: 0.95, p99: 0.99 }[aggregation];
  if (q === undefined) throw new Error(`unknown aggregation ${aggregation}`);
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(q * (n - 1))]!;
}

/** group label (JSON of the group-by values, null = absent) → local bucket label → points. */
export function referenceGroups(points: GenPoint[], q: RefQuery, from: number, to: number): Map<string, Map<string, GenPoint[]>> {
  const groups = new Map<string, Map<string, GenPoint[]>>();
  const filter = Object.entries(q.filter ?? {}).map(([k, v]) => [k, typeof v === 'string' ? [v] : v] as const);
  for (const p of points) {
    if (p.name !== q.metric || p.time < from || p.time >= to) continue;
    if (!filter.every(([k, vs]) => p.tags[k] !== undefined && vs.includes(p.tags[k]!))) continue;
    const g = JSON.stringify((q.groupBy ?? []).map((k) => p.tags[k] ?? null));
    let byBucket = groups.get(g);
    if (!byBucket) groups.set(g, (byBucket = new Map()));
    const label = localLabel(p.time, q.interval, q.timezone);
    let list = byBucket.get(label);
    if (!list) byBucket.set(label, (list = []));
    list.push(p);
  }
  return groups;
}

/** Compares an answer with the plaintext reference, bucket by bucket. */
export function checkAgainstReference(q: RefQuery, res: Pick<QueryResult, 'series' | 'meta'>, pts: GenPoint[]): void {
  const ref = referenceGroups(pts, q, res.meta.from, res.meta.to);
  const got = new Map(res.series.map((s) => [JSON.stringify((q.groupBy ?? []).map((k) => s.tags[k] ?? null)), s]));
  if ((q.groupBy ?? []).length === 0) expect(res.series).toHaveLength(1);
  else expect([...got.keys()].sort()).toEqual([...ref.keys()].sort());
  for (const [g, s] of got) {
    const byBucket = ref.get(g) ?? new Map<string, GenPoint[]>();
    const labels = s.points.map(([t]) => localLabel(t, q.interval, q.timezone));
    expect(new Set(labels).size, 'one bucket per local unit').toBe(labels.length);
    for (const l of byBucket.keys()) expect(labels, `bucket ${l} present`).toContain(l);
    for (const [t, v] of s.points) {
      const list = byBucket.get(localLabel(t, q.interval, q.timezone)) ?? [];
      const want = exact(list.map((p) => p.value), list.map((p) => p.time), q.aggregation);
      const where = `${JSON.stringify(q)} group ${g} at ${new Date(t).toISOString()}`;
      if (want === null || v === null) expect(v, where).toBe(want);
      else if (q.aggregation.startsWith('p')) expect(Math.abs(v - want), where).toBeLessThanOrEqual(PERCENTILE_ERROR * Math.abs(want) + 1e-9);
      else expect(Math.abs(v - want), where).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(want)));
    }
  }
}

// ---- a processor stand-in -----------------------------------------------------

const LEVELS = [
  { level: 0 as const, ms: 60_000 },
  { level: 1 as const, ms: 3_600_000 },
  { level: 3 as const, ms: 900_000 },
];

/**
 * Stores rollups and dictionary entries for `points` like the processor did before hour rows
 * were derived by compaction: pseudonyms and data key of `keys`, minute, hour and quarter-hour
 * levels, each (bucket, series) split into up to `parts` partial rows. Their hours have their
 * hour rows, so the derivation watermark moves past them (compaction/derive.ts): queries read
 * the hour rows, as they did.
 */
export async function writeRollups(store: Store, accountId: string, keys: AccountKeys, points: GenPoint[], parts = 3, seed = 1): Promise<number> {
  const ps = new Pseudonyms(keys.macKey);
  const rnd = mulberry32(seed);
  const rollups = new Map<string, { row: Omit<RollupRow, 'agg' | 'part' | 'writtenAt'>; aggs: Aggregate[] }>();
  const dict = new Map<string, DictRow>();
  const remember = (kind: 0 | 1 | 2, pseudonym: string, text: string, extra: string | undefined, time: number) => {
    const k = `${kind}:${pseudonym}`;
    if (dict.has(k)) return;
    const entry = extra === undefined ? { text } : { text, extra };
    dict.set(k, { accountId, kind, pseudonym, keyVersion: keys.version, ciphertext: sealDict(keys.dataKey, accountId, kind, pseudonym, entry), firstSeen: time });
  };
  for (const p of points) {
    const tags = Object.entries(p.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const metric = ps.metric(p.name);
    const series = ps.series(tags);
    remember(0, metric, p.name, p.kind, p.time);
    for (const [k, v] of tags) {
      remember(1, ps.tagKey(k), k, undefined, p.time);
      remember(2, ps.tagValue(k, v), v, k, p.time);
    }
    for (const { level, ms } of LEVELS) {
      const bucket = p.time - (((p.time % ms) + ms) % ms);
      const k = `${level}\u0000${bucket}\u0000${metric}\u0000${series}`;
      let r = rollups.get(k);
      if (!r) {
        r = {
          row: {
            accountId, level, bucket, metric, series,
            tagKeys: tags.map(([k]) => ps.tagKey(k)),
            tagValues: tags.map(([k, v]) => ps.tagValue(k, v)),
            keyVersion: keys.version, expiresAt: bucket + ms + 400 * 86_400_000,
          },
          aggs: Array.from({ length: parts }, () => emptyAggregate()),
        };
        rollups.set(k, r);
      }
      addPoint(r.aggs[Math.floor(rnd() * parts)]!, p.value, p.time, (p as { visitor?: Uint8Array }).visitor);
    }
  }
  const rows: RollupRow[] = [];
  let partNo = 0;
  for (const { row, aggs } of rollups.values()) {
    for (const agg of aggs) {
      if (agg.count === 0) continue;
      const part = `part${seed}_${partNo++ % parts}`;
      rows.push({ ...row, part, writtenAt: Date.now(), agg: sealRollup(keys.dataKey, { ...row, part }, encodeAggregate(agg)) });
    }
  }
  await store.insertDictionary([...dict.values()]);
  for (let i = 0; i < rows.length; i += 20_000) await store.insertRollups(rows.slice(i, i + 20_000));
  const last = points.reduce((t, p) => Math.max(t, p.time), -Infinity);
  if (points.length > 0 && last >= (await store.derivedUntil())) await store.setDerivedUntil(last - (last % 3_600_000) + 3_600_000);
  return rows.length;
}

// ---- a running collector with the query routes -------------------------------


/**
 * The base URL that serves the query routes for `running`: its own when app.ts registers
 * them, else a second server on the same services with createApp + registerQueryRoutes
 * (until the lead wires the routes into app.ts). `close` stops only that second server.
 */
export async function queryServer(running: { url: string; services: Services }): Promise<{ url: string; cache: QueryCache | undefined; close: () => Promise<void> }> {
  const probe = await fetch(`${running.url}/v1/query`, { method: 'POST' });
  if (probe.status !== 404) return { url: running.url, cache: undefined, close: async () => {} };
  const cache = new QueryCache({ ttlMs: 0 }); // the processor cannot invalidate this one
  const app = createApp(running.services);
  registerQueryRoutes(app, running.services, cache);
  const server = await new Promise<ServerType>((resolve) => {
    const srv = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(srv));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, cache, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** POST /v1/query with a read token; returns status and JSON. */
export async function query(url: string, token: string, body: unknown): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json(), headers: res.headers };
}

/** Same series and values; sums may differ in the last bits (float addition order). */
export function expectSameAnswers(x: QueryResult[], y: QueryResult[]): void {
  expect(y.length).toBe(x.length);
  x.forEach((r, i) => {
    const s = y[i]!;
    expect(s.series.map((z) => z.tags)).toEqual(r.series.map((z) => z.tags));
    r.series.forEach((z, j) =>
      z.points.forEach(([t, v], k) => {
        const [t2, v2] = s.series[j]!.points[k]!;
        expect(t2).toBe(t);
        if (v === null || v2 === null) expect(v2).toBe(v);
        else expect(Math.abs(v2 - v), `query ${i} at ${t}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(v)));
      }),
    );
  });
}
