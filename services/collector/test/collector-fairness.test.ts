/**
 * Fairness between tenants (issue 10, part 2), on a real collector with chDB: the account that
 * costs processing is slowed, the others keep getting 202 and their points counted; every
 * refusal is counted for its account (GET /v1/metrics rejects); a read token's queries have a
 * concurrency limit and a rows budget; a heavy query's merge gives the event loop back between
 * slices, so /healthz is answered while it runs. No clock assertions: limits are configured so
 * that the outcome does not depend on speed.
 */
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { Gauge } from 'prom-client';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';
import { writeRollups, type GenPoint } from './query-support.js';
import { ALONE_FACTOR, DEFAULT_MS_PER_POINT, FairQueue } from '../src/process/fair-queue.js';
import { Fairness, retryAfterSeconds } from '../src/ingest/fairness.js';
import { Intake } from '../src/process/intake.js';
import { createMetrics } from '../src/metrics.js';
import { isCollectorError } from '../src/errors.js';
import { Compactor } from '../src/compaction/compactor.js';
import { createLogger } from '../src/logger.js';
import type { BatchRow } from '../src/storage/types.js';

let c: TestCollector | undefined;
afterEach(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
  c = undefined;
});

const readRejects = async (col: TestCollector, a: TestAccount): Promise<Record<string, number>> => {
  const res = await fetch(`${col.url}/v1/metrics`, { headers: { authorization: `Bearer ${a.readToken}` } });
  expect(res.status).toBe(200);
  return (await res.json()).rejects;
};

const processedPoints = async (col: TestCollector, a: TestAccount): Promise<number> => {
  const [row] = await connectionOf(col.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: a.accountId });
  return Number(row?.n ?? 0);
};

const runQuery = (url: string, a: TestAccount, body: object) =>
  fetch(`${url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

const batch = (accountId: string, i: number, pointCount: number): BatchRow =>
  ({ accountId, batchId: `${accountId}-${i}`, receivedAt: i, createdAt: i, pointCount, sdk: 't', sealed: new Uint8Array(), expiresAt: 0 }) as BatchRow;

/** `n` points of metric `orders`, each its own series (tag `item` = prefix + i). */
const distinctSeries = (n: number, prefix: string) => points(n, (i) => ({ tags: { item: `${prefix}${i}` } }));

describe('fairness between tenants at ingest', () => {
  it('a heavy-cardinality tenant gets its points rejected (counted) and is slowed; another tenant keeps getting 202 and its points are counted', async () => {
    c = await startTestCollector({ config: { maxSeriesPerMetric: 50, maxNewValuesPerHour: 10_000, accountPointsPerSecond: 500 } });
    const heavy = await createAccount(c);
    const calm = await createAccount(c);
    const processor = c.services.processor!;

    // The heavy tenant: 300 new series of one metric in one batch (the limit is 50).
    expect((await post(c.url, envelope(heavy, distinctSeries(300, 'a')).bytes)).status).toBe(202);
    for (let i = 0; i < 5; i++) expect((await post(c.url, envelope(calm, points(10)).bytes)).status).toBe(202);
    await processor.drain();

    const heavyRejects = await readRejects(c, heavy);
    expect(heavyRejects.series_limit).toBe(250);
    expect(await processedPoints(c, heavy)).toBe(50);
    expect(await readRejects(c, calm)).toEqual({});
    expect(await processedPoints(c, calm)).toBe(50);

    // Fed back to ingest: the heavy tenant now has 1 % of its points budget (5/s, burst
    // 10): its next 300-point batch is let in from the full bucket, the one after is refused.
    expect((await post(c.url, envelope(heavy, distinctSeries(300, 'b')).bytes)).status).toBe(202);
    const slowed = await post(c.url, envelope(heavy, distinctSeries(300, 'c')).bytes);
    expect(slowed.status).toBe(429);
    expect((await slowed.json()).error.code).toBe('cardinality_limited');
    expect(Number(slowed.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // The other tenant is not.
    for (let i = 0; i < 5; i++) expect((await post(c.url, envelope(calm, points(10)).bytes)).status).toBe(202);
    await processor.drain();
    expect(await processedPoints(c, calm)).toBe(100);
    const after = await readRejects(c, heavy);
    expect(after.cardinality_limited).toBe(1);
    expect(after.series_limit).toBe(550); // the second batch's 300 new series are all over the limit
    expect(await readRejects(c, calm)).toEqual({});
  });

  it('new tag values per hour are limited per account (new_values_limit)', async () => {
    c = await startTestCollector({ config: { maxNewValuesPerHour: 20 } });
    const a = await createAccount(c);
    // Metric name + tag key + 100 values: the first points fit in 20 new entries, the rest are refused.
    expect((await post(c.url, envelope(a, distinctSeries(100, 'v')).bytes)).status).toBe(202);
    await c.services.processor!.drain();
    const rejects = await readRejects(c, a);
    expect(rejects.new_values_limit).toBeGreaterThan(70);
    expect(rejects.new_values_limit! + (await processedPoints(c, a))).toBe(100);
  });

  it('an account behind in processing gets 503 with Retry-After; another account still gets 202, and the refusal is counted for the first', async () => {
    c = await startTestCollector({ config: { maxProcessLagMs: 1000 } });
    const heavy = await createAccount(c);
    const calm = await createAccount(c);
    const processor = c.services.processor!;
    await processor.stop(); // processing halts: hand-offs wait in their account's queue
    expect((await post(c.url, envelope(heavy, points(10)).bytes)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1500)); // heavy's waiting batch is now older than 1 s
    const refused = await post(c.url, envelope(heavy, points(10)).bytes);
    expect(refused.status).toBe(503);
    expect((await refused.json()).error.code).toBe('overloaded');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Nothing of the calm account waits: it is not slowed by the other's backlog.
    expect((await post(c.url, envelope(calm, points(10)).bytes)).status).toBe(202);

    processor.start();
    await processor.drain();
    expect(await processedPoints(c, calm)).toBe(10);
    expect(await processedPoints(c, heavy)).toBe(10);
    expect((await readRejects(c, heavy)).overloaded).toBe(1);
    expect(await readRejects(c, calm)).toEqual({});
  });

  it('a refused batch sent again as the same bytes while its account is still behind is refused before its outer layer is opened, counted for the account; once caught up, the same bytes are accepted', async () => {
    c = await startTestCollector({ config: { maxProcessLagMs: 1000 } });
    const heavy = await createAccount(c);
    const processor = c.services.processor!;
    const opened = async () => (await c!.services.metrics.ingestOpenedBytes.get()).values[0]?.value ?? 0;
    await processor.stop();
    expect((await post(c.url, envelope(heavy, points(10)).bytes)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 1500));
    const resent = envelope(heavy, points(7)).bytes;
    expect((await post(c.url, resent)).status).toBe(503);
    const before = await opened();
    for (let i = 0; i < 2; i++) {
      const again = await post(c.url, resent);
      expect(again.status).toBe(503);
      expect((await again.json()).error.code).toBe('overloaded');
      expect(Number(again.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    expect(await opened()).toBe(before); // refused without the open
    // Other bytes (another batch of the account) are opened as always, and refused.
    expect((await post(c.url, envelope(heavy, points(3)).bytes)).status).toBe(503);
    expect(await opened()).toBeGreaterThan(before);

    processor.start();
    await processor.drain();
    expect((await post(c.url, resent)).status).toBe(202);
    await processor.drain();
    expect(await processedPoints(c, heavy)).toBe(17);
    expect((await readRejects(c, heavy)).overloaded).toBe(4);
  });

  it('true overload: at CIPHERSTAT_MAX_PROCESS_BACKLOG batches waiting in all, everyone gets 503 overloaded, also an account with nothing waiting; accepted again once processed', async () => {
    // Per-account lag off (0): only the global cap refuses here.
    c = await startTestCollector({ config: { maxProcessBacklog: 2, maxProcessLagMs: 0 } });
    const busy = await createAccount(c);
    const calm = await createAccount(c);
    const processor = c.services.processor!;
    await processor.stop(); // processing halts: hand-offs wait in its queue
    expect((await post(c.url, envelope(busy, points(5)).bytes)).status).toBe(202);
    expect((await post(c.url, envelope(busy, points(5)).bytes)).status).toBe(202);
    const refused = await post(c.url, envelope(calm, points(5)).bytes);
    expect(refused.status).toBe(503);
    // Nothing was processed lately: as long as the oldest has waited, halved (a moment: 1 s; a slow machine: a few).
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).error.code).toBe('overloaded');
    // refused before its envelope is opened (no account known): counted service-wide
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    expect(metrics).toMatch(/^cipherstat_batch_rejects_total\{code="overloaded"\} 1$/m);
    processor.start();
    await processor.drain();
    expect((await post(c.url, envelope(calm, points(5)).bytes)).status).toBe(202);
    expect(await processedPoints(c, busy)).toBe(10);
  });

  it('true overload in bytes: batches waiting in all holding CIPHERSTAT_MAX_PROCESS_BACKLOG_BYTES or more get everyone 503 overloaded, however few they are; accepted again once processed', async () => {
    // Per-account lag off (0) and a batch count far away: only the bytes refuse here.
    c = await startTestCollector({ config: { maxProcessBacklog: 1000, maxProcessBacklogBytes: 4096, maxProcessLagMs: 0 } });
    const big = await createAccount(c);
    const calm = await createAccount(c);
    const processor = c.services.processor!;
    await processor.stop(); // processing halts: hand-offs wait in its queue
    let stored = 0;
    while (processor.backlogBytes < 4096) {
      expect((await post(c.url, envelope(big, points(200)).bytes)).status).toBe(202);
      stored++;
    }
    expect(processor.backlog).toBe(stored); // a few batches, far below the count ceiling
    expect(stored).toBeLessThan(100);
    const refused = await post(c.url, envelope(calm, points(1)).bytes);
    expect(refused.status).toBe(503);
    expect((await refused.json()).error.code).toBe('overloaded');
    processor.start();
    await processor.drain();
    expect(processor.backlogBytes).toBe(0);
    expect((await post(c.url, envelope(calm, points(1)).bytes)).status).toBe(202);
    expect(await processedPoints(c, big)).toBe(200 * stored);
  });

  it('Retry-After follows the backlog and is spread, so senders refused together do not come back as one wave', () => {
    // Edges: at least 1, at most 60, s..s+s/2 for s the expected seconds rounded up.
    expect(retryAfterSeconds(0, () => 0.99)).toBe(1);
    expect(retryAfterSeconds(0.2, () => 0)).toBe(1);
    expect(retryAfterSeconds(1, () => 0.99)).toBe(1);
    expect(retryAfterSeconds(2, () => 0)).toBe(2);
    expect(retryAfterSeconds(2, () => 0.99)).toBe(3);
    expect(retryAfterSeconds(7.2, () => 0)).toBe(8);
    expect(retryAfterSeconds(7.2, () => 0.99)).toBe(12);
    expect(retryAfterSeconds(59, () => 0.99)).toBe(60);
    expect(retryAfterSeconds(1e9, () => 0)).toBe(60);
    expect(retryAfterSeconds(Number.NaN, () => 0)).toBe(60);
    // Every value of the range is drawn (a seeded sequence over [0, 1)).
    const seen = new Set(Array.from({ length: 100 }, (_, i) => retryAfterSeconds(10, () => i / 100)));
    expect([...seen].sort((a, b) => a - b)).toEqual([10, 11, 12, 13, 14, 15]);

    // The global cap: half of what the backlog needs at the recent rate.
    const config = { maxProcessLagMs: 1000, maxProcessBacklog: 10, maxProcessBacklogBytes: 1000, accountBytesPerSecond: 1e9, accountPointsPerSecond: 1e9 };
    const refusal = (p: { backlog: number; backlogBytes?: number; accountLagMs: () => number; drainSeconds: () => number }, account?: string) => {
      const f = new Fairness({ config, processing: { backlogBytes: 0, ...p } });
      try {
        if (account) f.admit(account, { bytes: 1, points: 1 });
        else f.checkGlobal();
      } catch (e) {
        if (isCollectorError(e)) return { code: e.code, after: e.retryAfter! };
        throw e;
      }
      return undefined;
    };
    const global = refusal({ backlog: 10, accountLagMs: () => 0, drainSeconds: () => 16 });
    expect(global?.code).toBe('overloaded');
    expect(global!.after).toBeGreaterThanOrEqual(8);
    expect(global!.after).toBeLessThanOrEqual(12);
    expect(refusal({ backlog: 9, accountLagMs: () => 0, drainSeconds: () => 16 })).toBeUndefined();
    // the same ceiling in bytes: few batches, but big ones
    expect(refusal({ backlog: 2, backlogBytes: 1000, accountLagMs: () => 0, drainSeconds: () => 16 })?.code).toBe('overloaded');
    expect(refusal({ backlog: 2, backlogBytes: 999, accountLagMs: () => 0, drainSeconds: () => 16 })).toBeUndefined();
    // An account behind: about as long again as its oldest batch waited.
    const behind = refusal({ backlog: 1, accountLagMs: () => 4000, drainSeconds: () => 1 }, 'acct_a');
    expect(behind?.code).toBe('overloaded');
    expect(behind!.after).toBeGreaterThanOrEqual(4);
    expect(behind!.after).toBeLessThanOrEqual(6);
  });

  it('the drain estimate behind Retry-After: what waits, at the rate processed over the last seconds; before any, how long the oldest waited', () => {
    let now = 1_000_000;
    const intake = new Intake({ metrics: createMetrics(), now: () => now });
    const rows = (n: number, from: number): BatchRow[] =>
      Array.from({ length: n }, (_, i) => ({ accountId: 'acct_a', batchId: `b${from + i}`, receivedAt: now, pointCount: 10, sealed: new Uint8Array(1), version: 2 }) as BatchRow);
    intake.push(rows(30, 0));
    now += 4000;
    expect(intake.drainSeconds()).toBe(4); // nothing processed yet: as long as the oldest waited
    const done = intake.take().slice(0, 10);
    expect(done.length).toBeGreaterThan(0);
    intake.processed(done); // in about the last 5 s
    intake.push(rows(20, 100));
    expect(intake.size).toBeGreaterThanOrEqual(20);
    expect(intake.drainSeconds()).toBeCloseTo(intake.size / (done.length / 5), 5);
  });

  it('points per second per account: over budget is 429 points_rate_limited, counted; another account is not affected', async () => {
    // 0.01 points/s, burst 0.02: the first batch (from the full bucket) leaves it ~20 points in
    // debt, ~2000 s to refill, so the second is refused however slow the machine
    c = await startTestCollector({ config: { accountPointsPerSecond: 0.01 } });
    const a = await createAccount(c);
    const b = await createAccount(c);
    expect((await post(c.url, envelope(a, points(20)).bytes)).status).toBe(202);
    const refused = await post(c.url, envelope(a, points(20)).bytes);
    expect(refused.status).toBe(429);
    expect((await refused.json()).error.code).toBe('points_rate_limited');
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await post(c.url, envelope(b, points(20)).bytes)).status).toBe(202);
    expect((await readRejects(c, a)).points_rate_limited).toBe(1);
  });

  it('bytes per second per account: over budget is 429 bytes_rate_limited', async () => {
    // burst 2 bytes: the first batch (from the full bucket) leaves it in debt for most of an
    // hour, so the second is refused however long the first took on a loaded machine
    c = await startTestCollector({ config: { accountBytesPerSecond: 1 } });
    const a = await createAccount(c);
    const big = () => envelope(a, points(40, (i) => ({ tags: { page: `/some/long/page/path/${i}` } }))).bytes; // > 2000 bytes
    expect((await post(c.url, big())).status).toBe(202); // from the full bucket
    const refused = await post(c.url, big());
    expect(refused.status).toBe(429);
    expect((await refused.json()).error.code).toBe('bytes_rate_limited');
  });

  it('the processing queue serves accounts round robin: one account\'s backlog does not fill the tick', () => {
    const q = new FairQueue();
    for (let i = 0; i < 500; i++) q.push(batch('heavy', i, 100), i);
    q.push(batch('calm', 0, 100), 1000);
    const first = q.take(10, { ms: 1_000_000, points: 1_000_000 });
    expect(first.map((r) => r.accountId)).toContain('calm');
    expect(q.oldestOf('calm')).toBeUndefined();
    // Heavy's cost per point was measured high (10 ms a point: 1000 ms a batch): past the CPU
    // budget after its first batch, so it gets one batch per tick, the others theirs.
    q.recordCost('heavy', 1000, 100);
    q.push(batch('calm', 1, 100), 1001);
    q.push(batch('calm', 2, 100), 1002);
    const second = q.take(1000, { ms: 500, points: 1_000_000 });
    expect(second.map((r) => r.accountId)).toEqual(['heavy', 'calm', 'calm']);
    expect(q.countOf('heavy')).toBe(500 - 1 - first.filter((r) => r.accountId === 'heavy').length);
  });

  it('an account alone in the queue gets ALONE_FACTOR times its per-tick budget; with others waiting, the budget: its backlog is spread over ticks', () => {
    const q = new FairQueue();
    for (let i = 0; i < 100; i++) q.push(batch('heavy', i, 350), i);
    q.recordCost('heavy', 0, 350); // measured cheap: only the points budget bounds it
    const points = (rows: BatchRow[]) => rows.reduce((s, r) => s + r.pointCount, 0);
    const budget = { ms: 1_000_000, points: 1000 };
    expect(ALONE_FACTOR).toBe(4);
    const tick = q.take(1000, budget);
    expect(tick.every((r) => r.accountId === 'heavy')).toBe(true);
    expect(points(tick)).toBe(11 * 350); // alone: 11 batches fit in 4 × 1000 points, a 12th would not
    // Another account with a backlog of its own: both get the plain budget (2 × 350 fit in 1000).
    for (let i = 0; i < 10; i++) q.push(batch('busy', i, 350), 1000 + i);
    const shared = q.take(1000, budget);
    expect(points(shared.filter((r) => r.accountId === 'heavy'))).toBe(2 * 350);
    expect(points(shared.filter((r) => r.accountId === 'busy'))).toBe(2 * 350);
    // A batch of another account arriving now is in the very next tick, beside heavy's next share.
    q.push(batch('calm', 0, 20), 2000);
    const next = q.take(1000, budget);
    expect(next.filter((r) => r.accountId === 'calm')).toHaveLength(1);
    expect(points(next.filter((r) => r.accountId === 'heavy'))).toBe(2 * 350);
    // One batch larger than the budget still moves (alone in its tick).
    q.push(batch('big', 0, 50_000), 3000);
    expect(q.take(1000, budget).filter((r) => r.accountId === 'big')).toHaveLength(1);
  });

  it('the CPU estimate bounds a tick too: an unmeasured account is assumed expensive, a measured rise counts at once', () => {
    const q = new FairQueue();
    for (let i = 0; i < 100; i++) q.push(batch('a', i, 350), i);
    // Unmeasured: DEFAULT_MS_PER_POINT (0.1 ms) → 35 ms a batch → 28 batches in 4 × a 250 ms budget (alone).
    expect(q.take(1000, { ms: 250, points: 1_000_000 })).toHaveLength(Math.floor((ALONE_FACTOR * 250) / (350 * DEFAULT_MS_PER_POINT)));
    q.recordCost('a', 3.5, 350); // cheap: 0.01 ms a point
    expect(q.estimate('a', 100)).toBeCloseTo(1);
    q.recordCost('a', 350, 350); // new series: 1 ms a point, taken at once
    expect(q.estimate('a', 100)).toBeCloseTo(100);
    expect(q.take(1000, { ms: 250, points: 1_000_000 })).toHaveLength(2); // 350 ms a batch: 2 fit in 4 × 250 ms
    expect(q.take(1000, { ms: 250 / ALONE_FACTOR, points: 1_000_000 })).toHaveLength(1); // the first always moves
    q.recordCost('a', 3.5, 350); // cheap again: falls by half per tick
    expect(q.estimate('a', 100)).toBeCloseTo(50.5);
  });

  it('processing: one account\'s queued batches, alone, go through ticks of at most ALONE_FACTOR × CIPHERSTAT_PROCESS_TICK_ACCOUNT_POINTS points', async () => {
    // Only the points bound decides (no CPU estimate, which a loaded machine inflates), and no
    // backpressure: the queued batches wait longer than the default lag allows while stopped.
    // The account is alone in the queue: ALONE_FACTOR × 25 = 100 points a tick.
    c = await startTestCollector({ config: { processTickAccountPoints: 25, processTickAccountMs: Number.MAX_SAFE_INTEGER, maxProcessLagMs: 0 } });
    const a = await createAccount(c);
    const processor = c.services.processor!;
    await processor.stop(); // hand-offs wait in the queue
    for (let i = 0; i < 5; i++) expect((await post(c.url, envelope(a, points(50)).bytes)).status).toBe(202);
    processor.start();
    await processor.drain();
    expect(await processedPoints(c, a)).toBe(250);
    // Two 50-point batches per tick: three ticks (parts), none with more than 100 points.
    const ticks = await connectionOf(c.services.store).query<{ part: string; n: string }>(
      'SELECT part, sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String} GROUP BY part ORDER BY n DESC',
      { a: a.accountId },
    );
    expect(ticks.map((t) => Number(t.n))).toEqual([100, 100, 50]);
  });
});

describe('queries cannot starve the node', () => {
  /** 30,000 minute rollup rows of metric `heavy`: 500 series, one row per minute for an hour. */
  async function heavyAccount(col: TestCollector): Promise<{ a: TestAccount; body: object }> {
    const a = await createAccount(col);
    const keys = (await col.services.keyring.accountKeys(a.accountId))!;
    const now = Date.now();
    const from = now - 3_600_000 - (now % 60_000);
    const pts: GenPoint[] = [];
    for (let m = 0; m < 60; m++) for (let s = 0; s < 500; s++) pts.push({ kind: 'counter', name: 'heavy', value: 1, time: from + m * 60_000 + 1, tags: { item: `i${s}` } });
    await writeRollups(col.services.store, a.accountId, keys[0]!, pts, 1);
    return { a, body: { metric: 'heavy', aggregation: 'sum', interval: 'minute', from, to: from + 3_600_000 } };
  }

  it('/healthz is answered while a heavy query is still merging (the merge runs in a query worker thread)', async () => {
    // From the compiled files, like the service: merges of all but small reads go to the query
    // worker. Merged inline, the gauge would rise and fall without a turn of the event loop.
    c = await startTestCollector({ fromDist: true });
    const { a, body } = await heavyAccount(c);
    const merging = c.services.metrics.registry.getSingleMetric('cipherstat_queries_merging') as Gauge;
    const value = async () => (await merging.get()).values[0]?.value ?? 0;
    let answered = false;
    const q = runQuery(c.url, a, body).then(async (r) => {
      answered = true;
      return { status: r.status, json: await r.json() };
    });
    // Wait (by turns of the event loop, not time) until the query is opening and merging rows.
    while ((await value()) === 0 && !answered) await new Promise((r) => setImmediate(r));
    expect(answered).toBe(false);
    const health = await fetch(`${c.url}/healthz`);
    expect(health.status).toBe(200);
    // Still merging when /healthz came back: it did not wait for the query.
    expect(await value()).toBe(1);
    expect(answered).toBe(false);
    const res = await q;
    expect(res.status).toBe(200);
    expect(res.json.meta.rows).toBe(30_000);
    expect(res.json.series[0].points.reduce((s: number, [, v]: [number, number]) => s + v, 0)).toBe(30_000);
  });

  it('per read token: more queries at once than allowed → 429 too_many_queries; over the rows budget → 429 query_budget_exceeded with Retry-After; both counted', async () => {
    // The rows budget refills with the clock (50,000 rows a minute): on a loaded machine the
    // seconds between the queries below would refill part of it. A clock that stands still
    // keeps the budget exactly where the queries leave it.
    const frozen = Date.now();
    c = await startTestCollector({ config: { queryConcurrency: 1, queryRowsPerMinute: 50_000 }, now: () => frozen });
    const { a, body } = await heavyAccount(c);
    const other = await createAccount(c);
    const all = await Promise.all([0, 1, 2].map(() => runQuery(c!.url, a, body)));
    const statuses = all.map((r) => r.status).sort();
    expect(statuses[0]).toBe(200);
    expect(statuses.slice(1)).toEqual([429, 429]);
    for (const r of all) if (r.status === 429) expect((await r.json()).error.code).toBe('too_many_queries');

    // GET /v1/metrics within the budget: answered (its listing cached from here on)
    const metricsOf = (t: TestAccount) => fetch(`${c!.url}/v1/metrics`, { headers: { authorization: `Bearer ${t.readToken}` } });
    expect((await metricsOf(a)).status).toBe(200);
    // One heavy query (30,000 rows) is let in with the budget it has left; the next exceeds it
    // (other aggregations: not answered from the cache).
    const second = await runQuery(c.url, a, { ...body, aggregation: 'count' });
    expect(second.status).toBe(200);
    const third = await runQuery(c.url, a, { ...body, aggregation: 'max' });
    expect(third.status).toBe(429);
    expect((await third.json()).error.code).toBe('query_budget_exceeded');
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // GET /v1/metrics reads storage afresh on every request (reject counts, envelope versions):
    // under the token's slot and budget too, though its listing is cached.
    const listing = await metricsOf(a);
    expect(listing.status).toBe(429);
    expect((await listing.json()).error.code).toBe('query_budget_exceeded');
    // Another token is not affected (its account recorded nothing: 404 unknown_metric, not 429).
    expect((await runQuery(c.url, other, { ...body, metric: 'orders' })).status).toBe(404);
    // The 404's names (for "did you mean") came from the account's listing, made under its slot
    // and cached like GET /v1/metrics's: the next unknown name does not list the account again.
    expect(c.services.queryCache.get(other.accountId, 'metrics')).toBeDefined();

    await c.services.refusals.flush();
    const rejects = await c.services.store.rejects(a.accountId);
    expect(rejects.too_many_queries).toBe(2);
    expect(rejects.query_budget_exceeded).toBe(2);
  });
});

describe('compaction does not hold the event loop', () => {
  it('a pass opens and merges rows in slices, giving the event loop a turn every `sliceRows` rows (counted), with the same answers', async () => {
    c = await startTestCollector({ env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
    const a = await createAccount(c);
    const keys = (await c.services.keyring.accountKeys(a.accountId))![0]!;
    const now = Date.now();
    const from = now - 2 * 3_600_000 - (now % 60_000);
    const pts: GenPoint[] = [];
    for (let m = 0; m < 30; m++) for (let s = 0; s < 20; s++) for (let k = 0; k < 8; k++) pts.push({ kind: 'counter', name: 'sliced', value: 1, time: from + m * 60_000 + k, tags: { item: `i${s}` } });
    // 4 partial rows per (bucket, series), as 4 ticks would write them; their markers make them mergeable.
    const written = await writeRollups(c.services.store, a.accountId, keys, pts, 4);
    await c.services.store.markProcessed([0, 1, 2, 3].map((i) => ({ accountId: a.accountId, batchId: `b${i}`, processedAt: now, accepted: 1, rejected: 0, part: `part1_${i}` })));
    const body = { metric: 'sliced', aggregation: 'sum', interval: 'hour', from, to: now };
    const before = await runQuery(c.url, a, body);
    expect(before.status).toBe(200);
    const answer = (await before.json()).series;

    const compactor = new Compactor({ store: c.services.store, keyring: c.services.keyring, log: createLogger({ level: 'silent' }), sliceRows: 100, maxDayPacks: 0 });
    const report = await compactor.runPass();
    expect(report).toMatchObject({ failedRows: 0, unmarkedRows: 0, more: false });
    expect(report.mergedRows).toBeGreaterThan(written / 2); // groups of one row are left as they are
    // Every row opened counts toward a slice: at least one turn per 100 rows merged.
    expect(report.slices).toBeGreaterThanOrEqual(Math.floor(report.mergedRows / 100));
    const after = await runQuery(c.url, a, body);
    expect((await after.json()).series).toEqual(answer);
  });
});
