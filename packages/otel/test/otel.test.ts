/**
 * The real @opentelemetry/sdk-metrics (MeterProvider + PeriodicExportingMetricReader, exports
 * triggered by forceFlush, so no clock is involved) → CipherstatMetricExporter → the Library →
 * a real collector on 127.0.0.1 (chDB on a temp dir) → `POST /v1/query`: every instrument's
 * totals come back exact and its percentiles within the error packages/otel/src/histogram.ts
 * states (computed here from the scale and the buckets the SDK itself produced, read through a
 * second reader on the same instruments); delta and cumulative temporality give the same
 * totals; the attribute → tag rule holds its bound and counts what it drops.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  DataPointType,
  InstrumentType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type ExponentialHistogram,
  type Histogram,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { ExportResultCode } from '@opentelemetry/core';
import { CipherstatMetricExporter } from '@cipherstat/otel';
import { exponentialBuckets } from '../src/histogram.js';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../../../services/collector/test/support/collector.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';

const ALPHA = 0.01; // the collector's sketch accuracy (services/collector/src/rollup/sketch.ts)
let c: TestCollector;

beforeAll(async () => {
  c = await startTestCollector();
});
afterAll(async () => c?.stop());

type Agg = 'count' | 'sum' | 'min' | 'max' | 'last' | 'p50' | 'p90' | 'p95' | 'p99';

/** One value over the last two hours (one `day` bucket may split them: the buckets are merged by asking for `interval: month`). */
async function query(account: TestAccount, metric: string, aggregation: Agg, extra: Record<string, unknown> = {}): Promise<{ tags: Record<string, string>; value: number | null }[]> {
  await c.services.processor!.drain();
  const now = Date.now();
  const res = await fetch(c.url + '/v1/query', {
    method: 'POST',
    headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric, aggregation, interval: 'month', from: now - 2 * 3600e3, to: now + 60e3, ...extra }),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as { series: { tags: Record<string, string>; points: [number, number | null][] }[] };
  return body.series.map((s) => {
    const values = s.points.map(([, v]) => v).filter((v): v is number => v !== null);
    expect(values.length, `${metric} ${aggregation}: one month bucket with data`).toBe(1);
    return { tags: s.tags, value: values[0]! };
  });
}
const one = async (account: TestAccount, metric: string, aggregation: Agg, extra?: Record<string, unknown>) => {
  const s = await query(account, metric, aggregation, extra);
  expect(s).toHaveLength(1);
  return s[0]!.value!;
};

/** A second exporter on the same MeterProvider: keeps what the SDK produced (scales, buckets). */
function recorder(temporality: AggregationTemporality, exponential: boolean) {
  const seen: ResourceMetrics[] = [];
  const exporter: PushMetricExporter = {
    export: (m, cb) => (seen.push(m), cb({ code: ExportResultCode.SUCCESS })),
    forceFlush: async () => {},
    shutdown: async () => {},
    selectAggregationTemporality: () => temporality,
    selectAggregation: (t) => (t == InstrumentType.HISTOGRAM && exponential ? { type: AggregationType.EXPONENTIAL_HISTOGRAM } : { type: AggregationType.DEFAULT }),
  };
  const points = (name: string) =>
    seen.flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics.filter((m) => m.descriptor.name == name))).flatMap((m) => m.dataPoints.map((p) => ({ type: m.dataPointType, value: p.value })));
  return { exporter, points };
}

/** The k-th smallest value with k = ⌊q·(n − 1)⌋: the sketch's rank convention. */
const exactQuantile = (sorted: number[], q: number) => sorted[Math.floor(q * (sorted.length - 1))]!;
const QS = { p50: 0.5, p90: 0.9, p95: 0.95, p99: 0.99 } as const;

/** Records the same workload on a provider wired to `exporter`, in two collection rounds. */
async function workload(exporter: CipherstatMetricExporter, temporality: AggregationTemporality) {
  const rec = recorder(temporality, true);
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': 'checkout', 'deployment.environment.name': 'test', 'host.name': 'not-sent' }),
    views: [{ instrumentName: 'otel.payload', aggregation: { type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [0, 100, 1000, 10000] } } }],
    readers: [
      new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 24 * 3600e3, exportTimeoutMillis: 24 * 3600e3 }),
      new PeriodicExportingMetricReader({ exporter: rec.exporter, exportIntervalMillis: 24 * 3600e3, exportTimeoutMillis: 24 * 3600e3 }),
    ],
  });
  const meter = provider.getMeter('shop.checkout', '1.2.3');
  const rnd = mulberry32(16);
  const latencies: number[] = [];
  const payloads: number[] = [];
  let cpu = 0;
  let conns = 0;
  meter.createObservableCounter('otel.cpu.seconds').addCallback((r) => r.observe(cpu));
  meter.createObservableUpDownCounter('otel.connections').addCallback((r) => r.observe(conns));
  meter.createObservableGauge('otel.heap.bytes').addCallback((r) => r.observe(1000 + cpu));
  const requests = meter.createCounter('otel.requests');
  const depth = meter.createUpDownCounter('otel.queue.depth');
  const temperature = meter.createGauge('otel.temperature');
  const latency = meter.createHistogram('otel.latency', { unit: 'ms' });
  const payload = meter.createHistogram('otel.payload', { unit: 'By' });
  for (const round of [0, 1]) {
    for (let i = 0; i < 100; i++) requests.add(1, { route: '/a' });
    for (let i = 0; i < 50; i++) requests.add(2.5, { route: '/b' });
    for (const d of round ? [10, -2] : [5, -3]) depth.add(d);
    temperature.record(round ? 21.5 : 20.5);
    for (let i = 0; i < 1500; i++) {
      const v = Math.round(Math.exp(Math.log(0.5) + rnd() * Math.log(10000)) * 1000) / 1000; // 0.5 ms .. 5 s, log-uniform
      latencies.push(v);
      latency.record(v);
      const p = Math.floor(rnd() * 20000);
      payloads.push(p);
      payload.record(p);
    }
    cpu = round ? 25 : 10;
    conns = round ? 4 : 7;
    await provider.forceFlush();
  }
  await provider.shutdown();
  return { latencies: latencies.sort((a, b) => a - b), payloads: payloads.sort((a, b) => a - b), rec };
}

/** `cumulative`: a sync gauge is re-sent at every collection, and min/max after the first export are only bounded (a cumulative point's min/max are the stream's). */
async function checkWorkload(account: TestAccount, w: Awaited<ReturnType<typeof workload>>, cumulative: boolean) {
  // counters (delta): exact per attribute set; resource and scope attributes are tags
  const requests = await query(account, 'otel.requests', 'sum', { groupBy: ['route', 'service.name', 'otel.scope.name', 'deployment.environment.name'] });
  expect(requests.map((s) => [s.tags, s.value]).sort()).toEqual([
    [{ route: '/a', 'service.name': 'checkout', 'otel.scope.name': 'shop.checkout', 'deployment.environment.name': 'test' }, 200],
    [{ route: '/b', 'service.name': 'checkout', 'otel.scope.name': 'shop.checkout', 'deployment.environment.name': 'test' }, 250],
  ]);
  expect(await one(account, 'otel.requests', 'sum', { filter: { 'host.name': 'not-sent' } })).toBe(0); // not in resourceAttributes: no such tag
  expect(await one(account, 'otel.queue.depth', 'sum')).toBe(10); // 5 − 3 + 10 − 2
  expect(await one(account, 'otel.cpu.seconds', 'sum')).toBe(25); // observed 10, then 25 (cumulative)
  expect(await one(account, 'otel.cpu.seconds', 'count')).toBe(2); // shutdown's collection: a zero delta, not sent
  expect(await one(account, 'otel.connections', 'sum')).toBe(4); // observed 7, then 4
  expect(await one(account, 'otel.temperature', 'last')).toBe(21.5);
  expect(await one(account, 'otel.temperature', 'count')).toBe(cumulative ? 3 : 2);
  expect(await one(account, 'otel.heap.bytes', 'max')).toBe(1025);
  expect(await one(account, 'otel.heap.bytes', 'min')).toBe(1010);

  // exponential histogram: count, sum, min, max exact; percentiles within (1 + α)·base − 1
  const lat = w.latencies;
  expect(await one(account, 'otel.latency', 'count')).toBe(lat.length);
  expect(await one(account, 'otel.latency', 'sum')).toBeCloseTo(lat.reduce((a, b) => a + b, 0), 6);
  const scales = w.rec.points('otel.latency').map((p) => {
    expect(p.type).toBe(DataPointType.EXPONENTIAL_HISTOGRAM);
    return (p.value as ExponentialHistogram).scale;
  });
  const base = Math.pow(2, Math.pow(2, -Math.min(...scales)));
  const bound = (1 + ALPHA) * base - 1;
  expect(bound).toBeLessThan(0.102); // the SDK's 160 buckets over 0.5 ms .. 5 s (13.3 doublings): scale 3, 10.1 %
  if (!cumulative) {
    expect(await one(account, 'otel.latency', 'min')).toBe(lat[0]);
    expect(await one(account, 'otel.latency', 'max')).toBe(lat[lat.length - 1]);
  }
  for (const [agg, q] of Object.entries({ ...QS, ...(cumulative ? { min: 0, max: 1 } : {}) })) {
    const got = await one(account, 'otel.latency', agg as Agg);
    const want = exactQuantile(lat, q);
    expect(Math.abs(got - want) / want, `${agg}: ${got} vs ${want}`).toBeLessThanOrEqual(bound * (1 + 1e-9));
  }

  // explicit buckets [0, 100, 1000, 10000]: the percentile lies in the true percentile's bucket (± α)
  const pay = w.payloads;
  expect(await one(account, 'otel.payload', 'count')).toBe(pay.length);
  expect(await one(account, 'otel.payload', 'sum')).toBeCloseTo(pay.reduce((a, b) => a + b, 0), 4);
  if (!cumulative) {
    expect(await one(account, 'otel.payload', 'min')).toBe(pay[0]);
    expect(await one(account, 'otel.payload', 'max')).toBe(pay[pay.length - 1]);
  }
  expect(w.rec.points('otel.payload').every((p) => p.type == DataPointType.HISTOGRAM && (p.value as Histogram).buckets.boundaries.length == 4)).toBe(true);
  const edges = [pay[0]!, 0, 100, 1000, 10000, pay[pay.length - 1]!];
  for (const [agg, q] of Object.entries({ ...QS, ...(cumulative ? { min: 0, max: 1 } : {}) })) {
    const got = await one(account, 'otel.payload', agg as Agg);
    const want = exactQuantile(pay, q);
    const i = edges.findIndex((e, j) => j > 0 && want <= e); // bucket (edges[i−1], edges[i]]
    expect(got, `${agg}: ${got} vs ${want}`).toBeGreaterThanOrEqual(Math.max(edges[i - 1]!, pay[0]!) * (1 - ALPHA));
    expect(got, `${agg}: ${got} vs ${want}`).toBeLessThanOrEqual(edges[i]! * (1 + ALPHA));
  }
}

it('delta (default): counters, up-down counters, gauges (sync and observable) and both histogram kinds arrive as recorded', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false });
  for (const t of Object.values(InstrumentType)) expect(exporter.selectAggregationTemporality(t)).toBe(AggregationTemporality.DELTA);
  const w = await workload(exporter, AggregationTemporality.DELTA);
  await checkWorkload(account, w, false);
  expect(exporter.stats().exports).toEqual({ success: 3, failed: 0 }); // two forceFlush, one shutdown
  expect(exporter.stats().points).toEqual({});
});

it('cumulative, when configured: the exporter sends differences, and the totals are the same', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, temporality: 'cumulative' });
  for (const t of Object.values(InstrumentType)) expect(exporter.selectAggregationTemporality(t)).toBe(AggregationTemporality.CUMULATIVE);
  const w = await workload(exporter, AggregationTemporality.CUMULATIVE);
  // the SDK's second cumulative point holds both rounds: only the difference was sent
  expect((w.rec.points('otel.latency')[1]!.value as ExponentialHistogram).count).toBe(3000);
  // a cumulative sync gauge is reported at every collection: shutdown's final one sent 21.5 again
  await checkWorkload(account, w, true);
  expect(exporter.stats().exports).toEqual({ success: 3, failed: 0 });
});

it('cumulative, with each collection split into several exports (the SDK reader\'s maxExportBatchSize): each stream sends its difference, never its whole total again', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, temporality: 'cumulative' });
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000, maxExportBatchSize: 1 }); // one data point per export
  const provider = new MeterProvider({ readers: [reader] });
  const counter = provider.getMeter('split').createCounter('otel.split');
  counter.add(1, { k: 'a' });
  counter.add(2, { k: 'b' });
  await provider.forceFlush(); // two exports: a, then b
  counter.add(10, { k: 'a' });
  counter.add(20, { k: 'b' });
  await provider.forceFlush(); // a's previous point came in the export before b's
  await provider.shutdown();
  expect(exporter.stats().exports.failed).toBe(0);
  expect(exporter.stats().exports.success).toBeGreaterThanOrEqual(4);
  expect(await one(account, 'otel.split', 'sum', { filter: { k: 'a' } })).toBe(11); // was 12: 1 + the whole 11 again
  expect(await one(account, 'otel.split', 'sum', { filter: { k: 'b' } })).toBe(22);
});

it("a large export with small batches (maxBatchBytes) is handed over in chunks of the Library's outbox, not dropped for persist_overflow", async () => {
  const account = await createAccount(c);
  // 1 KiB batches, 8 kept unsent: the first chunk (maxBatchSize × 8 / 2 = 2,000 points) overflowed it, and so
  // did a chunk of 4 batches counted without the Library's per-batch overhead (10 points: 10 batches).
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, maxBatchBytes: 1024, maxPersistedBatches: 8, histogram: 'explicit' });
  const provider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })] });
  const h = provider.getMeter('chunks').createHistogram('otel.chunked', { advice: { explicitBucketBoundaries: [10, 100] } });
  // a 328-byte point as the Library estimates it: one a batch beside its 400 bytes of overhead (three without it)
  for (let i = 0; i < 200; i++) h.record(i % 200, { route: '/checkout/' + 'x'.repeat(75) });
  await provider.forceFlush();
  await provider.shutdown();
  expect(exporter.stats().points).toEqual({});
  expect(exporter.stats().exports.failed).toBe(0);
  expect(await one(account, 'otel.chunked', 'count')).toBe(200);
});

it('shutdown() while the collector cannot be reached ends within the Library\'s shutdownTimeout and reports what it could not deliver (stopped), the exports still queued included', async () => {
  const account = await createAccount(c);
  // nothing listens on port 9: every attempt fails, and the key is pinned (no key request)
  const exporter = new CipherstatMetricExporter({ endpoint: 'http://127.0.0.1:9', accountId: account.accountId, writeKey: account.writeKey, collectorKey: account.collectorKey, persist: false, shutdownTimeout: 200, exportTimeout: 300 });
  const provider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })] });
  const counter = provider.getMeter('down').createCounter('otel.down');
  counter.add(5, { round: '1' });
  void provider.forceFlush(); // an export waiting for delivery (retries for minutes: never acknowledged)
  counter.add(7, { round: '2' }); // (two streams: two points, whichever collection takes this one)
  // The SDK exports once more (after the first export's wait ended at exportTimeout: its reader
  // waits for it), flushes (exportTimeout again), then shuts the exporter down: the Library's
  // shutdown ends at shutdownTimeout and reports what is left.
  // (Was: each export waited for its batch's delivery attempts, minutes apiece.)
  await provider.shutdown();
  expect(exporter.stats().points).toEqual({ stopped: 2 }); // both points, each reported (one per export)
});

it('an infinite observation in an explicit histogram is dropped alone (invalid_value); the other observations, in that export and in later cumulative ones, arrive', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, temporality: 'cumulative', histogram: 'explicit' });
  const provider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 })] });
  const h = provider.getMeter('inf').createHistogram('otel.inf', { advice: { explicitBucketBoundaries: [10, 100] } });
  for (const v of [1, 50, 500, Infinity]) h.record(v);
  await provider.forceFlush(); // was: every value of the overflow bucket, and the fitted ones, became NaN or Infinity
  for (const v of [5, 50]) h.record(v);
  await provider.forceFlush(); // was: the stream's sum stayed Infinity, so every later observation was dropped
  await provider.shutdown();
  expect(exporter.stats().points).toEqual({ invalid_value: 1 });
  expect(await one(account, 'otel.inf', 'count')).toBe(5);
  expect(await one(account, 'otel.inf', 'min')).toBe(1);
});

it('a result callback that throws does not stop later exports', { timeout: 60_000 }, async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false });
  const export1 = (n: number) =>
    new Promise<void>((done) =>
      exporter.export({ resource: resourceFromAttributes({}), scopeMetrics: [] }, () => {
        done();
        if (n == 1) throw new Error('a callback that throws');
      }),
    );
  await export1(1);
  await export1(2);
  await exporter.forceFlush(); // was: rejected, with every later export left unanswered
  expect(exporter.stats().exports).toEqual({ success: 2, failed: 0 });
  await exporter.shutdown();
});

it('maps attributes to tags by the documented bound and counts what it drops', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false });
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': 'checkout', 'deployment.environment.name': 'test' }),
    readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 24 * 3600e3 })],
  });
  const attrs: Record<string, string | string[]> = { arr: ['a', 'b'], 'http/method': 'GET' };
  for (let i = 0; i < 19; i++) attrs[`k${String(i).padStart(2, '0')}`] = i == 0 ? 'x'.repeat(300) : `v${i}`;
  provider.getMeter('bound').createCounter('otel.bound').add(3, attrs);
  provider.getMeter('bound').createCounter('otel.small').add(1, { 'x y': 'z' });
  await provider.forceFlush();
  await provider.shutdown();
  // kept: http_method and k00..k14 (16, the limit); k00 cut to 128 characters
  await c.services.processor!.drain(); // the listing shows what is processed: wait for it, not for the clock
  const listing = (await (await fetch(c.url + '/v1/metrics', { headers: { authorization: `Bearer ${account.readToken}` } })).json()) as { metrics: { name: string; tags: { key: string }[] }[] };
  const keys = (name: string) => (listing.metrics.find((m) => m.name == name)?.tags ?? []).map((t) => t.key).sort();
  expect(keys('otel.bound')).toEqual(['http_method', ...Array.from({ length: 15 }, (_, i) => `k${String(i).padStart(2, '0')}`)]);
  expect(keys('otel.small')).toEqual(['deployment.environment.name', 'otel.scope.name', 'service.name', 'x_y']);
  expect(await one(account, 'otel.bound', 'sum', { filter: { k00: 'x'.repeat(128), http_method: 'GET' } })).toBe(3);
  // dropped: arr (array), k15..k18, the scope and two resource attributes (over 16); cut: k00
  expect(exporter.stats().attributes).toEqual({ unsupported_value: 1, too_many: 7, truncated: 1 });
});

it('maps failures to ExportResult codes: a point the Library drops fails the export; after shutdown export fails', async () => {
  const account = await createAccount(c);
  const drops: string[] = [];
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, onDrop: (r) => drops.push(r) });
  const results: { code: number; error?: Error }[] = [];
  const provider = new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter: { ...wrap(exporter, results) }, exportIntervalMillis: 24 * 3600e3 })] });
  provider.getMeter('m').createCounter('otel.nan').add(Number.MAX_VALUE);
  provider.getMeter('m').createCounter('otel.nan').add(Number.MAX_VALUE); // the sum overflows to Infinity: the Library refuses it
  provider.getMeter('m').createCounter('otel.fine').add(1);
  await provider.forceFlush();
  expect(results.map((r) => r.code)).toEqual([ExportResultCode.FAILED]);
  expect(results[0]!.error!.message).toMatch(/dropped 1 points \(invalid_value: 1\)/);
  expect(drops).toEqual(['invalid_value']);
  expect(await one(account, 'otel.fine', 'sum')).toBe(1); // the rest was delivered
  await provider.shutdown();
  const after = await new Promise<{ code: number; error?: Error }>((r) => exporter.export({ resource: resourceFromAttributes({}), scopeMetrics: [] }, r));
  expect(after.code).toBe(ExportResultCode.FAILED);
  expect(exporter.stats().exports).toEqual({ success: 0, failed: 2 });
});

/** The exporter, with every export result also kept in `results`. */
function wrap(e: CipherstatMetricExporter, results: { code: number; error?: Error }[]): PushMetricExporter {
  return {
    export: (m, cb) => e.export(m, (r) => (results.push(r), cb(r))),
    forceFlush: () => e.forceFlush(),
    shutdown: () => e.shutdown(),
    selectAggregationTemporality: (t) => e.selectAggregationTemporality(t),
    selectAggregation: (t) => e.selectAggregation(t),
  };
}

it('cumulative: a new start time (restart) sends the whole point; a lower scale merges the previous buckets first', async () => {
  const account = await createAccount(c);
  const exporter = new CipherstatMetricExporter({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, temporality: 'cumulative' });
  const sum = (start: number, value: number): ResourceMetrics => ({
    resource: resourceFromAttributes({}),
    scopeMetrics: [
      {
        scope: { name: 's' },
        metrics: [
          {
            descriptor: { name: 'otel.restarts', description: '', unit: '', valueType: 1 },
            aggregationTemporality: AggregationTemporality.CUMULATIVE,
            dataPointType: DataPointType.SUM,
            isMonotonic: true,
            dataPoints: [{ startTime: [start, 0], endTime: [start + 1, 0], attributes: {}, value }],
          },
        ],
      },
    ],
  });
  for (const [start, value] of [[1, 10], [1, 15], [2, 3]] as const) {
    const r = await new Promise<{ code: number }>((done) => exporter.export(sum(start, value), done));
    expect(r.code).toBe(ExportResultCode.SUCCESS);
  }
  expect(await one(account, 'otel.restarts', 'sum')).toBe(18); // 10, then +5, then 3 after the restart
  await exporter.shutdown();

  // scale 2 → 1: buckets 4..7 at scale 2 are 2..3 at scale 1 (index >> 1); (2^(i/2), 2^((i+1)/2)]
  const side = (offset: number, bucketCounts: number[]) => ({ offset, bucketCounts });
  const prev: ExponentialHistogram = { count: 4, sum: 10, scale: 2, zeroCount: 0, positive: side(4, [1, 1, 1, 1]), negative: side(0, []) };
  const cur: ExponentialHistogram = { count: 9, sum: 30, scale: 1, zeroCount: 1, positive: side(2, [3, 4, 1]), negative: side(0, []) };
  const b = exponentialBuckets(cur, prev);
  const want = [
    [0, 0, 1],
    [2, 2 * Math.SQRT2, 1],
    [2 * Math.SQRT2, 4, 2],
    [4, 4 * Math.SQRT2, 1],
  ];
  expect(b.ranges).toHaveLength(want.length);
  b.ranges.forEach((r, i) => {
    expect(r.lo).toBeCloseTo(want[i]![0]!, 12);
    expect(r.hi).toBeCloseTo(want[i]![1]!, 12);
    expect(r.count).toBe(want[i]![2]);
  });
  expect(b.sum).toBe(20);
});

it("the README's OpenTelemetry snippet runs in Node as written and its metrics arrive", async () => {
  const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
  const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const code = /<!-- readme-test: otel -->\n```js\n([\s\S]*?)\n```/.exec(README)![1]!;
  const account = await createAccount(c);
  // inside the checkout (gitignored .tmp/), so the packages resolve to the built workspace ones
  const tmp = join(ROOT, '.tmp');
  mkdirSync(tmp, { recursive: true });
  const file = join(tmp, `readme-otel-${process.pid}.mjs`);
  writeFileSync(file, code.replaceAll('http://127.0.0.1:8787', c.url));
  try {
    await promisify(execFile)(process.execPath, [file], {
      cwd: ROOT,
      env: { ...process.env, CIPHERSTAT_ACCOUNT_ID: account.accountId, CIPHERSTAT_WRITE_KEY: account.writeKey },
      timeout: 120_000,
    });
  } finally {
    rmSync(file, { force: true });
  }
  expect(await query(account, 'orders', 'sum', { groupBy: ['country', 'service.name', 'otel.scope.name'] })).toEqual([
    { tags: { country: 'DE', 'service.name': 'checkout', 'otel.scope.name': 'shop.checkout' }, value: 1 },
  ]);
  expect(await one(account, 'checkout.duration_ms', 'p50')).toBe(412);
});
