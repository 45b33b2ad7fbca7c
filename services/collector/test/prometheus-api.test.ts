/**
 * The Prometheus-compatible query API (/prometheus) against a real collector on 127.0.0.1
 * with chDB, read by clients nobody here wrote — Debian's `promtool` — and by requests shaped
 * exactly as Grafana's Prometheus data source sends them. Every answer is checked against
 * POST /v1/query for the same data (counts and sums exact) and against the plaintext
 * (percentiles within the sketch's 1 %).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Point } from '@cipherstat/protocol';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { mulberry32 } from './query-support.js';
import { resolveMetric } from '../src/query/prometheus/evaluate.js';
import { PERCENTILE_ERROR } from '../src/query/merge.js';
import type { MetricsListing } from '../src/query/index.js';
import { PrometheusDriver } from 'prometheus-query';

const run = promisify(execFile);
const MIN = 60_000;
const HOUR = 3_600_000;
/** Two whole UTC hours in the past: [H, H + 2h). */
const H = Math.floor(Date.now() / HOUR) * HOUR - 3 * HOUR;
const COUNTRIES = ['DE', 'FR', 'US'];
const PAGES = ['home', 'checkout'];

let c: TestCollector;
let a: TestAccount;
let b: TestAccount;
const pointsA: Point[] = [];

function makePoints(seed: number, n: number, ordersValue: number): Point[] {
  const rnd = mulberry32(seed);
  const out: Point[] = [];
  for (let i = 0; i < n; i++) {
    const time = H + Math.floor(rnd() * 2 * HOUR);
    const country = COUNTRIES[Math.floor(rnd() * COUNTRIES.length)]!;
    if (rnd() < 0.5) {
      const tags: Record<string, string> = { country };
      if (rnd() < 0.8) tags.channel = rnd() < 0.5 ? 'web' : 'app';
      out.push({ id: i, kind: 'counter', name: 'orders', value: ordersValue + Math.floor(rnd() * 3), time, tags });
    } else {
      const page = PAGES[Math.floor(rnd() * PAGES.length)]!;
      out.push({ id: i, kind: 'histogram', name: 'page.load_ms', value: Math.round(Math.exp(3 + rnd() * 5) * 10) / 10, time, tags: { page, country } });
    }
  }
  return out;
}

async function ingest(account: TestAccount, pts: Point[]): Promise<void> {
  for (let i = 0; i < pts.length; i += 1000) {
    const res = await post(c.url, envelope(account, pts.slice(i, i + 1000).map((p, j) => ({ ...p, id: j }))).bytes);
    expect(res.status).toBe(202);
  }
}

beforeAll(async () => {
  c = await startTestCollector();
  a = await createAccount(c);
  b = await createAccount(c);
  pointsA.push(...makePoints(1, 3000, 1));
  // a metric with 5 tag keys: one more than an answer may carry as series labels
  pointsA.push({ id: 0, kind: 'counter', name: 'wide', value: 3, time: H + MIN, tags: { k1: 'a', k2: 'b', k3: 'c', k4: 'd', k5: 'e' } });
  await ingest(a, pointsA);
  // Account B: the same metric name with other values, and a metric A never recorded.
  await ingest(b, [...makePoints(2, 400, 10).filter((p) => p.name === 'orders'), { id: 0, kind: 'counter', name: 'secret.metric', value: 5, time: H + MIN, tags: { who: 'b' } }]);
  await c.services.processor!.drain();
});
afterAll(async () => c?.stop());

const v1 = async (token: string, body: unknown) => {
  const res = await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  return (await res.json()) as { series: { tags: Record<string, string>; points: [number, number | null][] }[] };
};

const prom = async (token: string, path: string, form?: Record<string, string | string[]>, method = 'POST') => {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(form ?? {})) for (const x of [v].flat()) body.append(k, x);
  const url = `${c.url}/prometheus/api/v1/${path}${method === 'GET' && form ? `?${body}` : ''}`;
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(method === 'POST' ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
    ...(method === 'POST' ? { body: body.toString() } : {}),
  });
  return { status: res.status, json: (await res.json()) as any };
};

/** promtool (Debian's prometheus package) with -o json; the token as the bearer header (range) or as basic-auth password (instant: promtool 2.42 has no header flag there). */
async function promtool(kind: 'range' | 'instant', expr: string, flags: string[], token = a.readToken): Promise<any> {
  const server = kind === 'range' ? `${c.url}/prometheus` : `${c.url.replace('http://', `http://grafana:${token}@`)}/prometheus`;
  const auth = kind === 'range' ? [`--header=Authorization=Bearer ${token}`] : [];
  const { stdout } = await run('/usr/bin/promtool', ['query', kind, '-o', 'json', ...auth, ...flags, server, expr], { timeout: 120_000 });
  return JSON.parse(stdout);
}

const key = (labels: Record<string, string>) => JSON.stringify(Object.entries(labels).filter(([k]) => k !== '__name__').sort());

/** A Prometheus matrix equals the engine's series: the sample at t + step is the bucket starting at t. */
function expectMatrixEqualsEngine(matrix: { metric: Record<string, string>; values: [number, string][] }[], engine: { tags: Record<string, string>; points: [number, number | null][] }[], step: number, scale = 1) {
  const byLabels = new Map(matrix.map((s) => [key(s.metric), new Map(s.values.map(([t, v]) => [t * 1000, Number(v)]))]));
  let compared = 0;
  for (const s of engine) {
    const got = byLabels.get(key(s.tags));
    expect(got, `series ${key(s.tags)}`).toBeDefined();
    for (const [t, v] of s.points) {
      if (v === null) continue;
      expect(got!.get(t + step)).toBeCloseTo(v * scale, 9);
      compared++;
    }
  }
  expect(byLabels.size).toBe(engine.length);
  expect(compared).toBeGreaterThan(0);
}

describe('promtool (Debian prometheus package) against a real collector', () => {
  it('query range: sum by (country) of sum_over_time per minute equals /v1/query exactly', async () => {
    const got = await promtool('range', 'sum by (country) (sum_over_time(orders[1m]))', [`--start=${H / 1000}`, `--end=${(H + 2 * HOUR) / 1000}`, '--step=1m']);
    const want = await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'minute', from: H - MIN, to: H + 2 * HOUR, groupBy: ['country'] });
    expect(want.series.map((s) => s.tags.country)).toEqual(COUNTRIES);
    expectMatrixEqualsEngine(got, want.series, MIN);
    // and the total equals the plaintext
    const total = got.flatMap((s: any) => s.values.map(([, v]: [number, string]) => Number(v))).reduce((x: number, y: number) => x + y, 0);
    expect(total).toBe(pointsA.filter((p) => p.name === 'orders').reduce((x, p) => x + p.value, 0));
  });

  it('query range: a 5m step is five minute buckets (sums exact; avg_over_time = sum / count)', async () => {
    const flags = [`--start=${H / 1000}`, `--end=${(H + 2 * HOUR) / 1000}`, '--step=5m'];
    const minutes = async (groupBy: string[]) => {
      const body = { metric: 'orders', interval: 'minute', from: H - 5 * MIN, to: H + 2 * HOUR, groupBy };
      const [sums, counts] = [await v1(a.readToken, { ...body, aggregation: 'sum' }), await v1(a.readToken, { ...body, aggregation: 'count' })];
      expect(counts.series.map((s) => s.tags)).toEqual(sums.series.map((s) => s.tags));
      return { sums: sums.series, counts: counts.series };
    };
    /** The engine's minute series in windows of 5: the window [t, t + 5m) is the sample at t + 5m. */
    const fiveMinutes = ({ sums, counts }: Awaited<ReturnType<typeof minutes>>, f: (sum: number, count: number) => number | null) =>
      sums.map((s, i) => ({
        tags: s.tags,
        points: s.points.filter((_, j) => j % 5 === 0).map(([t], w): [number, number | null] => {
          const slice = (xs: [number, number | null][]) => xs.slice(w * 5, w * 5 + 5).reduce((x, [, v]) => x + (v ?? 0), 0);
          return [t, f(slice(s.points), slice(counts[i]!.points))];
        }),
      }));
    const sumMatrix = await promtool('range', 'sum by (country) (sum_over_time(orders[5m]))', flags);
    expectMatrixEqualsEngine(sumMatrix, fiveMinutes(await minutes(['country']), (sum) => sum), 5 * MIN);
    expect(sumMatrix[0].values).toHaveLength(25); // H, H + 5m, …, H + 2h
    const avgMatrix = await promtool('range', 'avg_over_time(orders[5m])', flags);
    const perSeries = fiveMinutes(await minutes(['channel', 'country']), (sum, count) => (count ? sum / count : null));
    expectMatrixEqualsEngine(avgMatrix, perSeries, 5 * MIN);
  });

  it('query range: increase, rate and count_over_time per hour; per series without aggregation', async () => {
    const flags = [`--start=${H / 1000}`, `--end=${(H + 2 * HOUR) / 1000}`, '--step=1h'];
    const sum = await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR });
    expectMatrixEqualsEngine(await promtool('range', 'sum(increase(orders[1h]))', flags), sum.series, HOUR);
    expectMatrixEqualsEngine(await promtool('range', 'sum(rate(orders[1h]))', flags), sum.series, HOUR, 1 / 3600);
    const counts = await v1(a.readToken, { metric: 'orders', aggregation: 'count', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR, groupBy: ['channel', 'country'] });
    const perSeries = await promtool('range', 'count_over_time(orders[1h])', flags);
    expectMatrixEqualsEngine(perSeries, counts.series, HOUR);
    // points without `channel` are their own series, without that label
    expect(perSeries.some((s: any) => s.metric.channel === undefined && s.metric.country === 'DE')).toBe(true);
  });

  it('query instant: quantile_over_time per series and the merged percentile per page, within 1.006 % of the plaintext (the sketch 1 %, given to 5 digits)', async () => {
    const at = [`--time=${(H + HOUR) / 1000}`];
    const perSeries = await promtool('instant', 'quantile_over_time(0.95, {"page.load_ms", page="checkout"}[1h])', at);
    const want = await v1(a.readToken, { metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', from: H, to: H + HOUR, groupBy: ['country', 'page'], filter: { page: 'checkout' } });
    expect(perSeries).toHaveLength(COUNTRIES.length);
    for (const s of perSeries) {
      expect(s.value[0]).toBe((H + HOUR) / 1000);
      const w = want.series.find((x) => x.tags.country === s.metric.country)!;
      expect(Number(s.value[1])).toBe(w.points[0]![1]);
    }
    // the legacy name page_load_ms means page.load_ms; max by (page) is the merged p95 of each page
    const merged = await promtool('instant', 'max by (page) (quantile_over_time(0.95, page_load_ms[1h]))', at);
    expect(merged.map((s: any) => s.metric.page).sort()).toEqual([...PAGES].sort());
    for (const s of merged) {
      const xs = pointsA.filter((p) => p.name === 'page.load_ms' && p.tags.page === s.metric.page && p.time >= H && p.time < H + HOUR).map((p) => p.value).sort((x, y) => x - y);
      const exact = xs[Math.floor(0.95 * (xs.length - 1))]!;
      expect(Math.abs(Number(s.value[1]) - exact)).toBeLessThanOrEqual(PERCENTILE_ERROR * exact);
    }
  });

  it('another account’s token sees only its own data; an unknown token is refused', async () => {
    const flags = [`--start=${H / 1000}`, `--end=${(H + 2 * HOUR) / 1000}`, '--step=1h'];
    const mine = await promtool('range', 'sum(sum_over_time(orders[1h]))', flags, b.readToken);
    const want = await v1(b.readToken, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR });
    expectMatrixEqualsEngine(mine, want.series, HOUR);
    // B never recorded page.load_ms (A did): nothing
    expect(await promtool('instant', 'max_over_time(page_load_ms[1h])', [`--time=${(H + HOUR) / 1000}`], b.readToken)).toEqual([]);
    const names = await prom(a.readToken, 'label/__name__/values', undefined, 'GET');
    expect(names.json.data).not.toContain('secret_metric');
    const refused = await fetch(`${c.url}/prometheus/api/v1/query?query=1%2B1`, { headers: { authorization: 'Bearer csr_not_a_real_token_0000000000000000000000' } });
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ status: 'error', errorType: 'unauthorized' });
  });
});

describe('requests shaped as Grafana’s Prometheus data source sends them', () => {
  it('buildinfo probe and the 1+1 health check', async () => {
    const info = await prom(a.readToken, 'status/buildinfo', undefined, 'GET');
    expect(info.status).toBe(200);
    expect(info.json).toMatchObject({ status: 'success', data: { version: '3.0.0' } });
    const health = await prom(a.readToken, 'query', { query: '1+1', time: String(H / 1000) });
    expect(health.json).toEqual({ status: 'success', data: { resultType: 'scalar', result: [H / 1000, '2'] } });
  });

  it('form-encoded query_range with start, end, step (seconds) equals /v1/query', async () => {
    const res = await prom(a.readToken, 'query_range', {
      query: 'sum by (page) (count_over_time({"page.load_ms", country=~"DE|FR"}[1h]))',
      start: String(H / 1000), end: String((H + 2 * HOUR) / 1000), step: '3600',
    });
    expect(res.status).toBe(200);
    expect(res.json.data.resultType).toBe('matrix');
    const want = await v1(a.readToken, { metric: 'page.load_ms', aggregation: 'count', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR, groupBy: ['page'], filter: { country: ['DE', 'FR'] } });
    expectMatrixEqualsEngine(res.json.data.result, want.series, HOUR);
    // != selects the same here (every point carries country)
    const neq = await prom(a.readToken, 'query_range', { query: 'sum by (page) (count_over_time(page_load_ms{country!="US"}[1h]))', start: String(H / 1000), end: String((H + 2 * HOUR) / 1000), step: '1h' });
    expect(neq.json.data.result).toEqual(res.json.data.result);
  });

  it('a missing tag reads as "" (as in Prometheus): != and !~ also select the points without the tag, and tag="" only those', async () => {
    const q = async (query: string) => Number((await prom(a.readToken, 'query', { query, time: String((H + HOUR) / 1000) })).json.data.result[0]?.value[1] ?? 0);
    const orders = pointsA.filter((p) => p.name === 'orders' && p.time >= H && p.time < H + HOUR);
    const total = (keep: (channel: string | undefined) => boolean) => orders.filter((p) => keep(p.tags.channel)).reduce((x, p) => x + p.value, 0);
    const without = total((ch) => ch === undefined);
    expect(without).toBeGreaterThan(0); // about 20 % of the orders carry no channel
    expect(await q('sum(sum_over_time(orders{channel!="web"}[1h]))')).toBe(total((ch) => ch !== 'web'));
    expect(await q('sum(sum_over_time(orders{channel!~"w.*"}[1h]))')).toBe(total((ch) => ch !== 'web'));
    expect(await q('sum(sum_over_time(orders{channel=~"web|"}[1h]))')).toBe(total((ch) => ch === undefined || ch === 'web'));
    expect(await q('sum(sum_over_time(orders{channel=""}[1h]))')).toBe(without);
    expect(await q('sum(sum_over_time(orders{channel!=""}[1h]))')).toBe(total((ch) => ch !== undefined));
    // the same selection through POST /v1/query: null in a filter is "without the tag"
    const v = await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: H, to: H + HOUR, filter: { channel: ['app', null] } });
    expect(v.series[0]!.points[0]![1]).toBe(total((ch) => ch !== 'web'));
    // grouped by the tag: points without it form their own series, labelled without it
    const byChannel = await prom(a.readToken, 'query', { query: 'sum by (channel) (sum_over_time(orders{channel!="app"}[1h]))', time: String((H + HOUR) / 1000) });
    expect(Object.fromEntries(byChannel.json.data.result.map((r: any) => [r.metric.channel ?? '', Number(r.value[1])]))).toEqual({ '': without, web: total((ch) => ch === 'web') });
  });

  it('regular expressions are anchored, as in Prometheus', async () => {
    const q = (query: string) => prom(a.readToken, 'query', { query, time: String((H + HOUR) / 1000) });
    expect((await q('sum(sum_over_time(orders{country=~"D"}[1h]))')).json.data.result).toEqual([]);
    const de = await q('sum(sum_over_time(orders{country=~"D."}[1h]))');
    const want = await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: H, to: H + HOUR, filter: { country: 'DE' } });
    expect(Number(de.json.data.result[0].value[1])).toBe(want.series[0]!.points[0]![1]);
  });

  it('regular expressions run in linear time: a pattern that backtracks exponentially answers; what cannot run in linear time, or a malformed match[], is 400 bad_data', async () => {
    // An account of its own: a metric name and a tag value of 40 a's that a pattern like (a+)+
    // fails on only at their end. A backtracking engine takes ~2^40 steps there, on the thread
    // that serves every account (a regression hangs this test rather than failing it fast).
    const d = await createAccount(c);
    const long = 'a'.repeat(40);
    const res = await post(
      c.url,
      envelope(d, [
        { id: 0, kind: 'counter', name: `${long}_x`, value: 7, time: H + MIN, tags: { v: `${long}!` } },
        { id: 1, kind: 'counter', name: 'emoji_x', value: 3, time: H + MIN, tags: { v: '🛒' } },
      ]).bytes,
    );
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
    const at = { time: String((H + HOUR) / 1000) };
    const hostile = await prom(d.readToken, 'query', { query: `sum(sum_over_time(${long}_x{v=~"(a+)+"}[1h]))`, ...at });
    expect(hostile.status).toBe(200);
    expect(hostile.json.data.result).toEqual([]);
    const matching = await prom(d.readToken, 'query', { query: `sum(sum_over_time(${long}_x{v=~"(a+)+!"}[1h]))`, ...at });
    expect(Number(matching.json.data.result[0].value[1])).toBe(7);
    const none = await prom(d.readToken, 'query', { query: `sum(sum_over_time(${long}_x{v!~"(a+)+"}[1h]))`, ...at });
    expect(Number(none.json.data.result[0].value[1])).toBe(7);
    const names = await prom(d.readToken, 'label/__name__/values', { 'match[]': '{__name__=~"(a+)+"}' }, 'GET');
    expect(names.json).toEqual({ status: 'success', data: [] });
    expect((await prom(d.readToken, 'label/__name__/values', { 'match[]': '{__name__=~"(a+)+_x"}' }, 'GET')).json.data).toEqual([`${long}_x`]);
    // No Unicode mode (README): `.` is one UTF-16 code unit, so an emoji outside the BMP is two.
    const dots = async (re: string) => (await prom(d.readToken, 'query', { query: `sum(sum_over_time(emoji_x{v=~"${re}"}[1h]))`, ...at })).json.data.result;
    expect(await dots('.')).toEqual([]);
    expect(Number((await dots('..'))[0].value[1])).toBe(3);
    // The linear engine's refusals (a backtracking engine would run them): bad_data, not 500.
    for (const pattern of ['(a)\\\\1', '(?=a)a+', 'a{1,20}']) {
      for (const r of [
        await prom(d.readToken, 'query', { query: `sum(sum_over_time(${long}_x{v=~"${pattern}"}[1h]))`, ...at }),
        await prom(d.readToken, 'labels', { 'match[]': `{__name__=~"${pattern}"}` }, 'GET'),
      ]) {
        expect(r.status, pattern).toBe(400);
        expect(r.json.errorType).toBe('bad_data');
        expect(r.json.error).toContain('cannot run in linear time');
      }
    }
    // A string PromQL does not accept in match[] (a Go escape JSON has not): 400, was 500 internal_error.
    for (const m of ['{__name__="\\q"}', '{__name__=~"\\x61+"}']) {
      const r = await prom(d.readToken, 'labels', { 'match[]': m }, 'GET');
      expect(r.status, m).toBe(400);
      expect(r.json.errorType).toBe('bad_data');
    }
  });

  it('the README\'s example panels answer what /v1/query answers', async () => {
    const readme = readFileSync(fileURLToPath(new URL('../../../README.md', import.meta.url)), 'utf8');
    const table = readme.slice(readme.indexOf('<!-- grafana-panels -->'), readme.indexOf('<!-- /grafana-panels -->'));
    const [orders, p95] = [...table.matchAll(/^\| [^|]+ \| `([^`]+)` \|/gm)].map((m) => m[1]!);
    expect(orders).toContain('$__interval');
    const range = { start: String(H / 1000), end: String((H + 2 * HOUR) / 1000) };
    const perMinute = await prom(a.readToken, 'query_range', { query: orders!.replace('$__interval', '1m'), ...range, step: '60' });
    expectMatrixEqualsEngine(perMinute.json.data.result, (await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'minute', from: H - MIN, to: H + 2 * HOUR, groupBy: ['country'] })).series, MIN);
    const hourly = await prom(a.readToken, 'query_range', { query: p95!.replace('$__interval', '1h'), ...range, step: '3600' });
    expectMatrixEqualsEngine(hourly.json.data.result, (await v1(a.readToken, { metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR, groupBy: ['page'] })).series, HOUR);
  });

  it('labels and label/__name__/values with match[]', async () => {
    const labels = await prom(a.readToken, 'labels', { 'match[]': 'page_load_ms', start: String(H / 1000), end: String((H + 2 * HOUR) / 1000) });
    expect(labels.json).toEqual({ status: 'success', data: ['__name__', 'country', 'page'] });
    const all = await prom(a.readToken, 'labels', {}, 'GET');
    expect(all.json.data).toEqual(['__name__', 'channel', 'country', 'k1', 'k2', 'k3', 'k4', 'k5', 'page']);
    const wide = await prom(a.readToken, 'query', { query: 'sum by (k1) (sum_over_time(wide[1h]))', time: String((H + HOUR) / 1000) });
    expect(wide.json.data.result).toEqual([{ metric: { k1: 'a' }, value: [(H + HOUR) / 1000, '3'] }]);
    const names = await prom(a.readToken, 'label/__name__/values', { 'match[]': '{__name__=~".+"}', start: String(H / 1000), end: String((H + 2 * HOUR) / 1000) }, 'GET');
    expect(names.json).toEqual({ status: 'success', data: ['orders', 'page_load_ms', 'wide'] });
    const values = await prom(a.readToken, 'label/country/values', { 'match[]': 'orders{channel="web"}' }, 'GET');
    expect(values.json.data).toEqual(COUNTRIES);
  });

  it('series and metadata', async () => {
    const series = await prom(a.readToken, 'series', { 'match[]': 'orders{country="DE"}', start: String(H / 1000), end: String((H + 2 * HOUR) / 1000) });
    expect(series.json.status).toBe('success');
    expect(series.json.data).toHaveLength(3);
    expect(new Set(series.json.data.map((s: any) => s.channel ?? '-'))).toEqual(new Set(['-', 'app', 'web']));
    expect(series.json.data.every((s: any) => s.__name__ === 'orders' && s.country === 'DE')).toBe(true);
    const meta = await prom(a.readToken, 'metadata', undefined, 'GET');
    expect(meta.json.data).toMatchObject({ orders: [{ type: 'counter' }], page_load_ms: [{ type: 'summary' }] });
  });

  it('outside the subset: 400 bad_data naming the unsupported part', async () => {
    const range = { start: String(H / 1000), end: String((H + 2 * HOUR) / 1000), step: '60' };
    const cases: [string, Record<string, string>, string][] = [
      ['orders * 2', range, 'unsupported binary operator between series'],
      ['topk(3, orders)', range, 'unsupported aggregation: topk'],
      ['histogram_quantile(0.9, orders)', range, 'unsupported function: histogram_quantile'],
      ['sum_over_time(orders[5m])', range, 'range [5m] must equal the step (1m)'],
      ['sum_over_time(orders[90s])', { ...range, step: '90' }, 'unsupported step 90s'],
      ['quantile_over_time(0.5, page_load_ms[5m])', { ...range, step: '300' }, 'a percentile cannot be combined from 5 minute buckets'],
      ['orders offset 1h', range, 'unsupported offset modifier'],
      ['sum(', range, 'parse error'],
      ['quantile_over_time(0.75, page_load_ms[1m])', range, 'φ must be one of'],
      ['sum_over_time(wide[1m])', range, 'wide would need 5 tag keys as series labels (k1, k2, k3, k4, k5); at most 4'],
      ['sum(quantile_over_time(0.95, page_load_ms[1m]))', range, 'sum of quantile_over_time is not supported'],
      ['sum_over_time({country="DE"}[1m])', range, 'a selector needs a metric name'],
      ['sum(sum_over_time(orders[1m]))', { ...range, start: String((H - 7.5 * 86_400_000) / 1000) }, 'more than 10000 minute buckets'],
    ];
    for (const [query, params, message] of cases) {
      const res = await prom(a.readToken, 'query_range', { query, ...params });
      expect(res.status, query).toBe(400);
      expect(res.json.status).toBe('error');
      expect(res.json.errorType).toBe('bad_data');
      expect(res.json.error, query).toContain(message);
    }
  });
});

describe('the prometheus-query npm client', () => {
  const driver = (token: string) =>
    new PrometheusDriver({ endpoint: c.url, baseURL: '/prometheus/api/v1', headers: { Authorization: `Bearer ${token}` }, preferPost: true });

  it('rangeQuery and instantQuery answer what /v1/query answers', async () => {
    const range = await driver(a.readToken).rangeQuery('sum by (channel) (sum_over_time(orders[1h]))', new Date(H), new Date(H + 2 * HOUR), 3600);
    expect(range.resultType).toBe('matrix');
    const want = await v1(a.readToken, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: H - HOUR, to: H + 2 * HOUR, groupBy: ['channel'] });
    expect(range.result).toHaveLength(want.series.length); // web, app, and the points without channel
    for (const s of want.series) {
      const got = range.result.find((r: any) => (r.metric.labels.channel ?? null) === (s.tags.channel ?? null));
      expect(got.values.map((v: any) => [v.time.getTime() - HOUR, v.value])).toEqual(s.points);
    }
    const instant = await driver(a.readToken).instantQuery('min by (page) (min_over_time(page_load_ms[1h]))', new Date(H + 2 * HOUR));
    const mins = await v1(a.readToken, { metric: 'page.load_ms', aggregation: 'min', interval: 'hour', from: H + HOUR, to: H + 2 * HOUR, groupBy: ['page'] });
    expect(instant.result.map((r: any) => [r.metric.labels.page, r.value.value]).sort()).toEqual(mins.series.map((s) => [s.tags.page, s.points[0]![1]]).sort());
    const exact = Math.min(...pointsA.filter((p) => p.name === 'page.load_ms' && p.time >= H + HOUR && p.time < H + 2 * HOUR).map((p) => p.value));
    expect(Math.min(...instant.result.map((r: any) => r.value.value))).toBe(exact);
  });

  it('labelNames, labelValues, series, metadata and buildinfo; errors come back as Prometheus errors', async () => {
    const d = driver(a.readToken);
    expect(await d.labelNames('orders')).toEqual(['__name__', 'channel', 'country']);
    expect(await d.labelValues('__name__')).toEqual(['orders', 'page_load_ms', 'wide']);
    expect(await d.labelValues('page', 'page_load_ms')).toEqual(['checkout', 'home']);
    const series = await d.series('page_load_ms{page="home"}', new Date(H), new Date(H + 2 * HOUR));
    expect(series.map((m: any) => m.labels.country).sort()).toEqual(COUNTRIES);
    expect(await d.metadata()).toMatchObject({ orders: [{ type: 'counter' }] });
    expect(await d.statusBuildinfo()).toMatchObject({ version: '3.0.0' });
    await expect(d.instantQuery('rate(orders[1h]) / 2')).rejects.toMatchObject({ httpStatus: 400, prometheus: { errorType: 'bad_data' } });
    // B's token through the same client: none of A's names
    expect(await driver(b.readToken).labelValues('__name__')).toEqual(['orders', 'secret_metric']);
  });
});

describe('dotted names', () => {
  const listing = (...names: string[]) => ({ metrics: names.map((name) => ({ name, kind: 'counter', tags: [], points24h: 0 })) }) as unknown as MetricsListing;
  it('a _ form stands for the one recorded name it maps from; the exact name wins; two candidates are bad_data', () => {
    expect(resolveMetric(listing('page.load_ms', 'orders'), 'page_load_ms')?.name).toBe('page.load_ms');
    expect(resolveMetric(listing('page.load_ms'), 'page.load_ms')?.name).toBe('page.load_ms');
    expect(resolveMetric(listing('page.load', 'page_load'), 'page_load')?.name).toBe('page_load');
    expect(() => resolveMetric(listing('a.b', 'a-b'), 'a_b')).toThrow('metric name a_b is ambiguous: it stands for "a.b" and "a-b"');
    expect(resolveMetric(listing('orders'), 'nothing')).toBeUndefined();
  });
});
