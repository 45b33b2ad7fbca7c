/**
 * One query merged by several query workers (query/mergers.ts): each statement cut at UTC days
 * (hours at minute level), the parts merged by whichever worker is free, the helpers' groups
 * handed over encoded and merged into the query's own worker. Its answers are the single
 * worker's and the inline merge's, byte for byte (sums, percentiles, distinct visitors, every
 * bucket size, UTC and half- and quarter-hour zones, two key versions), they match the plaintext
 * reference, and the row and group limits are counted across parts. Real chDB, the compiled
 * worker (services/collector/dist).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { openStore, type Store } from '../src/storage/index.js';
import { Keyring, staticMasterKeys } from '../src/keyring/index.js';
import { runQuery, type QueryResult } from '../src/query/index.js';
import { accountContext } from '../src/query/context.js';
import { mergePlan, rowSelection } from '../src/query/engine.js';
import { absorbGroups, exportGroups, handleMergeRequest, inlineMergers, WorkerMergers, type Closed, type ExportedGroups, type Mergers } from '../src/query/mergers.js';
import { mergeRows, roundFloat, type Group, type MergePlan } from '../src/query/merge.js';
import { settleSketch, sketchEquals, type Aggregate } from '../src/rollup/index.js';
import { countRows, readRows } from '../src/rollup/rows.js';
import { parseQuery } from '../src/query/request.js';
import { splitStoredRows } from '../src/storage/queries.js';
import { dayOf, DAY_MS } from '../src/rollup/days.js';
import { CollectorError } from '../src/errors.js';
import { checkAgainstReference, COUNTRIES, generatePoints, localLabel, mulberry32, writeRollups, type GenPoint, type RefQuery } from './query-support.js';

const A = 'acct_aaaaaaaaaaaaaaaaaaaaaaaa';
const B = 'acct_bbbbbbbbbbbbbbbbbbbbbbbb';
const FROM = Date.UTC(2026, 2, 24, 3, 17);
const MID = Date.UTC(2026, 2, 28, 11, 5);
const TO = Date.UTC(2026, 3, 1, 20, 40);
const url = new URL('../dist/query/worker.js', import.meta.url);
// Every read goes to the workers (inlineBytes 0) and is cut as finely as its days allow (partBytes 1).
const two = new WorkerMergers({ url, size: 2, inlineBytes: 0, partBytes: 1 });
const one = new WorkerMergers({ url, size: 1, inlineBytes: 0 });

let dir: string;
let store: Store;
let keyring: Keyring;
let points: GenPoint[];
let visitorOf: Map<GenPoint, number>;

/** Page views with a visitor hash (300 visitors): the `uniq` statistic. */
function visits(seed: number, n: number, from: number, to: number): { pts: GenPoint[]; visitorOf: Map<GenPoint, number> } {
  const rnd = mulberry32(seed);
  const hashes = Array.from({ length: 300 }, () => randomBytes(8));
  const out = new Map<GenPoint, number>();
  for (let i = 0; i < n; i++) {
    const v = Math.floor(rnd() * hashes.length);
    const p = { kind: 'counter', name: 'visits', value: 1, time: from + Math.floor(rnd() * (to - from)), tags: { country: COUNTRIES[v % COUNTRIES.length]! }, visitor: hashes[v] } as GenPoint;
    out.set(p, v);
  }
  return { pts: [...out.keys()], visitorOf: out };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cipherstat-qpar-'));
  store = await openStore({ dataDir: dir });
  await store.migrate();
  keyring = Keyring.open({ dir: join(dir, 'keyring'), master: staticMasterKeys({ 1: randomBytes(32) }) });
  keyring.createAccount(A);
  keyring.createAccount(B);
  const v = visits(5, 3000, FROM, TO);
  visitorOf = v.visitorOf;
  points = [...generatePoints(42, 9000, FROM, TO), ...v.pts];
  // Key rotation in the middle: rows of two key versions (groups of both merged into one series).
  await writeRollups(store, A, keyring.accountKeys(A)![0]!, points.filter((p) => p.time < MID), 3, 1);
  keyring.rotateDataKeys(A);
  await writeRollups(store, A, keyring.accountKeys(A)![1]!, points.filter((p) => p.time >= MID), 2, 2);
  // Account B: metric `split` with DE and FR on even UTC days, US and IN on odd ones (the group limit).
  const split: GenPoint[] = [];
  for (let i = 0; i < 400; i++) {
    const time = FROM + Math.floor((i / 400) * 4 * DAY_MS);
    const odd = Math.floor(time / DAY_MS) % 2;
    split.push({ kind: 'counter', name: 'split', value: 1 + (i % 5), time, tags: { country: COUNTRIES[2 * odd + (i % 2)]! } });
  }
  await writeRollups(store, B, keyring.accountKeys(B)![0]!, split, 2, 3);
}, 600_000);

afterAll(async () => {
  await Promise.all([two.close(), one.close()]);
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The same answer: meta, series and every value exactly, except sums (and averages) of
 * non-integers, which may differ in the last bits: float64 addition is not associative, and a
 * bucket's parts merged by two workers are added in another order (rollup/aggregate.ts).
 */
function expectSame(got: QueryResult, want: QueryResult): void {
  expect(got.meta).toEqual(want.meta);
  expect(got.series.map((s) => s.tags)).toEqual(want.series.map((s) => s.tags));
  const inexact = want.meta.aggregation === 'sum' || want.meta.aggregation === 'avg';
  got.series.forEach((s, j) =>
    s.points.forEach(([t, v], k) => {
      const [t2, w] = want.series[j]!.points[k]!;
      expect(t).toBe(t2);
      if (!inexact || v === null || w === null || Number.isInteger(w)) expect(v).toBe(w);
      else expect(Math.abs(v - w)).toBeLessThanOrEqual(1e-12 * Math.abs(w));
    }),
  );
}

const ask = (mergers: Mergers, account: string, body: object): Promise<QueryResult> => runQuery({ store, keyring, mergers }, { accountId: account }, body);

/** Distinct visitors per (country, bucket): the reference for `uniq` (HyperLogLog++ is exact at 300). */
function checkVisitors(q: RefQuery, res: QueryResult): void {
  const ref = new Map<string, Set<number>>();
  for (const p of points) {
    if (p.name !== 'visits' || p.time < res.meta.from || p.time >= res.meta.to) continue;
    const key = `${p.tags.country}\u0000${localLabel(p.time, q.interval, q.timezone)}`;
    let s = ref.get(key);
    if (!s) ref.set(key, (s = new Set()));
    s.add(visitorOf.get(p)!);
  }
  let nonZero = 0;
  for (const s of res.series) {
    for (const [t, v] of s.points) {
      const want = ref.get(`${s.tags.country}\u0000${localLabel(t, q.interval, q.timezone)}`)?.size ?? 0;
      expect(v).toBe(want);
      if (want) nonZero++;
    }
  }
  expect(nonZero).toBeGreaterThan(0);
}

describe('one query merged by two workers', () => {
  const shapes: (Omit<RefQuery, 'interval' | 'timezone'> & { check: boolean })[] = [
    { metric: 'revenue', aggregation: 'sum', groupBy: ['country'], check: true },
    { metric: 'page.load', aggregation: 'p95', groupBy: ['page'], filter: { country: ['DE', 'IN'] }, check: true },
    { metric: 'orders', aggregation: 'count', groupBy: ['country', 'channel'], check: true },
    { metric: 'temperature', aggregation: 'last', groupBy: ['site'], check: true },
    { metric: 'temperature', aggregation: 'avg', check: false },
    { metric: 'page.load', aggregation: 'max', check: true },
    { metric: 'visits', aggregation: 'uniq', groupBy: ['country'], check: false },
  ];
  for (const timezone of ['UTC', 'Asia/Kolkata', 'Asia/Kathmandu']) {
    for (const interval of ['minute', 'hour', 'day', 'week', 'month'] as const) {
      it(`answers like one worker and inline: ${interval} buckets in ${timezone}`, async () => {
        // minute buckets: 9 hours across a UTC midnight; the others: the whole 8 days
        const [from, to] = interval === 'minute' ? [Date.UTC(2026, 2, 26, 19, 10), Date.UTC(2026, 2, 27, 4, 10)] : [FROM, TO];
        const before = { ...two.counts };
        for (const { check, ...shape } of shapes) {
          const q: RefQuery = { ...shape, interval, timezone };
          const body = { ...q, from, to };
          const inline = await ask(inlineMergers, A, body);
          const single = await ask(one, A, body);
          const both = await ask(two, A, body);
          expectSame(single, inline); // two reads: storage's row order may differ too
          expectSame(both, single);
          expect(both.meta.rows).toBeGreaterThan(0);
          expect(both.meta.failedRows).toBe(0);
          if (check) checkAgainstReference(q, both, points);
          if (q.aggregation === 'uniq') checkVisitors(q, both);
        }
        // the second worker merged parts (its cells of buckets both held were handed over: below)
        expect(two.counts.helped).toBeGreaterThan(before.helped);
      });
    }
  }

  it('answers concurrent queries like one worker (each query then mostly on its own worker)', async () => {
    const bodies = ['UTC', 'Asia/Kolkata', 'Asia/Kathmandu'].flatMap((timezone) => [
      { metric: 'revenue', aggregation: 'sum', interval: 'hour', timezone, groupBy: ['country'], from: FROM, to: TO },
      { metric: 'page.load', aggregation: 'p95', interval: 'day', timezone, groupBy: ['page'], from: FROM, to: TO },
    ]);
    const single: string[] = [];
    for (const b of bodies) single.push(JSON.stringify(await ask(one, A, b)));
    for (let round = 0; round < 3; round++) {
      const both = await Promise.all(bodies.map((b) => ask(two, A, b)));
      both.forEach((r, i) => expectSame(r, JSON.parse(single[i]!)));
    }
    // over this file's queries (months and weeks span every cut): cells of shared buckets handed over
    expect(two.counts.exports).toBeGreaterThan(0);
  });
});

/** A query's plan and its rows read per UTC day (each day a statement, as readInStatements cuts them). */
async function dayStatements(account: string, body: object, maxGroups?: number): Promise<{ plan: MergePlan; statements: Uint8Array[] }> {
  const ctx = await accountContext({ store, keyring }, account);
  const q = parseQuery(body, { derivedUntil: await store.derivedUntil() });
  const { selection, metricOf } = rowSelection(ctx, q);
  const statements: Uint8Array[] = [];
  for (let from = selection.from; from < selection.to; from = dayOf(from) + DAY_MS) {
    statements.push(await store.selectRollups({ ...selection, from, to: Math.min(selection.to, dayOf(from) + DAY_MS), limit: 1_000_000 }));
  }
  return { plan: mergePlan(ctx, q, metricOf, maxGroups), statements };
}

type MergeAnswer = Awaited<ReturnType<typeof merged>>;
function expectSameMerge(got: MergeAnswer, want: MergeAnswer): void {
  const { byGroup: g, ...meta } = got as { byGroup: Record<string, (number | null)[]> };
  const { byGroup: w, ...wantMeta } = want as { byGroup: Record<string, (number | null)[]> };
  expect(meta).toEqual(wantMeta);
  expect(Object.keys(g).sort()).toEqual(Object.keys(w).sort());
  for (const k of Object.keys(w)) expect(g[k]).toEqual(w[k]); // p95: exact
}

/** A merge of `statements` through `mergers` (as the engine adds them), finished into one series per group. */
async function merged(mergers: Mergers, plan: MergePlan, statements: Uint8Array[]) {
  const s = mergers.begin({ ...plan, versions: plan.versions.map((v) => ({ ...v, dataKey: v.dataKey.slice() })) });
  for (const b of statements) s.add(new Uint8Array(b), countRows(b)); // a copy: the workers take their bytes
  const m = await s.end();
  try {
    if (m.tooLarge) return { rows: m.rows, tooLarge: true };
    const values = await m.finish(m.groups.map((_, j) => j), m.groups.length);
    const byGroup = Object.fromEntries(m.groups.map((g, j) => [g.join(','), values[j]]));
    return { rows: m.rows, failed: m.failed, tampered: m.tampered, byGroup };
  } finally {
    m.drop();
  }
}

describe('limits counted across parts', () => {
  const body = { metric: 'revenue', aggregation: 'p95', interval: 'hour', timezone: 'Asia/Kolkata', groupBy: ['country'], from: FROM, to: TO };

  it('more rows than maxRows in all is query_too_large, whichever worker merged which part; exactly maxRows answers', async () => {
    const { plan, statements } = await dayStatements(A, body);
    const total = statements.reduce((n, b) => n + countRows(b), 0);
    expect(statements.length).toBeGreaterThan(3);
    for (const b of statements) expect(countRows(b)).toBeLessThan(total - 1); // no single statement is over the limit
    const exact = await merged(inlineMergers, { ...plan, maxRows: total }, statements);
    expect(exact).toMatchObject({ rows: total, failed: 0 });
    for (const m of [two, one, inlineMergers]) {
      expectSameMerge(await merged(m, { ...plan, maxRows: total }, statements), exact);
      expect(await merged(m, { ...plan, maxRows: total - 1 }, statements)).toEqual({ rows: total, tooLarge: true });
    }
    // and through the engine: a refused merge left nothing behind, the next query answers
    expect(JSON.stringify(await ask(two, A, body))).toBe(JSON.stringify(await ask(inlineMergers, A, body)));
  });

  it('more groups than maxGroups in all is too_many_series even when every part holds fewer', async () => {
    const q = { metric: 'split', aggregation: 'sum', interval: 'hour', groupBy: ['country'], from: FROM, to: FROM + 4 * DAY_MS };
    const { plan, statements } = await dayStatements(B, q);
    for (const b of statements) expect(new Set(readRows(b).map((r) => r.t)).size).toBeLessThanOrEqual(2); // two countries a day
    const four = await merged(inlineMergers, { ...plan, maxGroups: 4 }, statements);
    expect(Object.keys((four as { byGroup: object }).byGroup)).toHaveLength(4);
    for (const m of [two, one]) expect(await merged(m, { ...plan, maxGroups: 4 }, statements)).toEqual(four); // integer sums: exact
    for (const m of [two, one, inlineMergers]) {
      await expect(merged(m, { ...plan, maxGroups: 3 }, statements)).rejects.toMatchObject({ code: 'too_many_series' });
    }
    // Two workers' requests by hand: each holds two groups; handing one's cells to the other
    // refuses the third and fourth group.
    const even = statements.filter((b) => readRows(b).some((r) => Math.floor(r.b / DAY_MS) % 2 === 0));
    const odd = statements.filter((b) => !even.includes(b));
    const run = (maxGroups: number) => {
      const x = new Map();
      const y = new Map();
      const p = () => ({ ...plan, maxGroups, versions: plan.versions.map((v) => ({ ...v, dataKey: v.dataKey.slice() })) });
      even.forEach((b, i) => expect(handleMergeRequest(x, { type: 'part', id: 1, ...(i ? {} : { plan: p() }), bytes: b })).toEqual({ id: 1, ok: true, ms: expect.any(Number) }));
      odd.forEach((b, i) => expect(handleMergeRequest(y, { type: 'part', id: 1, ...(i ? {} : { plan: p() }), bytes: b })).toEqual({ id: 1, ok: true, ms: expect.any(Number) }));
      const closed = handleMergeRequest(y, { type: 'close', id: 1 }) as { merged: Closed };
      expect(closed.merged.groups).toHaveLength(2);
      const buckets = [...closed.merged.touched!].flatMap((t, i) => (t ? [i] : []));
      const exported = (handleMergeRequest(y, { type: 'export', id: 1, buckets }) as { exported: ExportedGroups }).exported;
      expect(exportGroups(y.get(1).groups.values()).index).toHaveLength(0); // the cells left y
      return handleMergeRequest(x, { type: 'absorb', id: 1, groups: [exported] });
    };
    expect(run(3)).toMatchObject({ ok: false, error: { status: 400, code: 'too_many_series' } });
    expect(run(4)).toMatchObject({ ok: true, merged: { failed: 0, groups: [expect.anything(), expect.anything(), expect.anything(), expect.anything()] } });
  });
});

describe('the pieces', () => {
  it('splitStoredRows cuts at whole units, keeps every row once, in unit order', async () => {
    const ctx = await accountContext({ store, keyring }, A);
    const q = parseQuery({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: FROM, to: TO }, { derivedUntil: await store.derivedUntil() });
    const { selection } = rowSelection(ctx, q);
    const bytes = await store.selectRollups(selection);
    const rows = readRows(bytes);
    const key = (r: { b: number; p: string; s: string; l?: number }) => `${r.l}/${r.b}/${r.s}/${r.p}`;
    for (const n of [1, 2, 3, 8, 100]) {
      const parts = splitStoredRows(bytes, dayOf, n);
      expect(parts.length).toBe(Math.min(n, new Set(rows.map((r) => dayOf(r.b))).size));
      const days = parts.map((p) => [...new Set(readRows(p).map((r) => dayOf(r.b)))]);
      days.forEach((d, i) => i && expect(Math.min(...d)).toBeGreaterThan(Math.max(...days[i - 1]!))); // consecutive days, no day in two parts
      expect(parts.flatMap((p) => readRows(p).map(key)).sort()).toEqual(rows.map(key).sort());
    }
    expect(splitStoredRows(new Uint8Array(0), dayOf, 4)).toEqual([]);
  });

  it('exported groups merge back into the same aggregates (sketches, visitors, last)', async () => {
    /** An aggregate's content: fields exactly (sum to 15 digits: float addition order), the sketch with sketchEquals. */
    const canon = (a: Aggregate | undefined) =>
      a && {
        ...a,
        sum: roundFloat(a.sum),
        sketch: a.sketch.count,
        visitors: a.visitors && (a.visitors.dense ? [...a.visitors.dense] : [...a.visitors.sparse!].sort((x, y) => x[0] - y[0])),
      };
    const cases = [
      { metric: 'visits', aggregation: 'uniq' },
      { metric: 'page.load', aggregation: 'p95' },
      { metric: 'revenue', aggregation: 'sum' },
      { metric: 'temperature', aggregation: 'last' },
    ];
    for (const c of cases) {
      const { plan, statements } = await dayStatements(A, { ...c, interval: 'day', timezone: 'Asia/Kolkata', groupBy: ['country'], from: FROM, to: TO });
      const whole = mergeRows(plan, statements.flatMap((b) => readRows(b)));
      // the days alternately in two maps, the second handed over into the first
      const x = new Map<string, Group>();
      const y = new Map<string, Group>();
      statements.forEach((b, i) => mergeRows(plan, readRows(b), i % 2 ? y : x));
      expect(y.size).toBeGreaterThan(0);
      expect(absorbGroups(plan, x, exportGroups(y.values()))).toBe(0);
      expect([...x.keys()].sort()).toEqual([...whole.groups.keys()].sort());
      for (const [k, g] of whole.groups) {
        const got = x.get(k)!.aggs;
        for (const a of [...got, ...g.aggs]) if (a) settleSketch(a); // percentile cells defer their sketches (mergeEncodedDeferred)
        expect(got.map(canon)).toEqual(g.aggs.map(canon));
        got.forEach((a, i) => a && expect(sketchEquals(a.sketch, g.aggs[i]!.sketch)).toBe(true));
      }
    }
    const { plan, statements } = await dayStatements(A, { metric: 'orders', aggregation: 'sum', interval: 'day', groupBy: ['country'], from: FROM, to: TO });
    const y = new Map<string, Group>();
    mergeRows(plan, readRows(statements[1]!), y);
    // a refusal through the hand-over is the engine's error type
    expect(() => absorbGroups({ ...plan, maxGroups: 0 }, new Map(), exportGroups(y.values()))).toThrow(CollectorError);
  });
});
