/**
 * The tick cadence (CIPHERSTAT_PROCESS_COALESCE_MS, CIPHERSTAT_PROCESS_TICK_MIN_BATCHES;
 * process/intake.ts): under load a tick waits for the rest of the cadence since the previous tick
 * was taken, unless enough batches are queued, a drain waits or hand-offs are few. No assertion
 * on time or on how ticks coalesce: the waits asserted are bounded by a cadence of minutes, and
 * the end-to-end case checks only that every point counts once, against the plaintext sums.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { Intake, TICK_BATCHES } from '../src/process/intake.js';
import { createMetrics } from '../src/metrics.js';
import { connectionOf } from '../src/storage/index.js';
import { loadConfig } from '../src/config.js';
import type { BatchRow } from '../src/storage/types.js';

const rows = (n: number, from: number, accountId = 'acct_a'): BatchRow[] =>
  Array.from({ length: n }, (_, i) => ({ accountId, batchId: `b${from + i}`, receivedAt: Date.now(), pointCount: 10, sealed: new Uint8Array(1), version: 2 }) as BatchRow);

const CADENCE_MS = 600_000; // never elapses within a test

describe('tick cadence (intake)', () => {
  it('under load, the next tick waits for the rest of the cadence since the previous was taken; at once without a previous tick', () => {
    const intake = new Intake({ metrics: createMetrics(), now: Date.now, coalesceMs: CADENCE_MS, coalesceMinRate: 1 });
    intake.push(rows(5, 0));
    expect(intake.coalesceWait()).toBe(0); // no tick taken yet
    expect(intake.take().length).toBe(5);
    intake.push(rows(5, 100));
    const wait = intake.coalesceWait();
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(CADENCE_MS);
    intake.urgent++; // a drain waits: no wait
    expect(intake.coalesceWait()).toBe(0);
    intake.urgent--;
    expect(intake.coalesceWait()).toBeGreaterThan(0);
  });

  it('minBatches queued start the tick before its cadence (and wake a waiting one); the default and the most is TICK_BATCHES', async () => {
    const intake = new Intake({ metrics: createMetrics(), now: Date.now, coalesceMs: CADENCE_MS, minBatches: 8, coalesceMinRate: 1 });
    intake.push(rows(3, 0));
    intake.take();
    intake.push(rows(7, 100));
    expect(intake.coalesceWait()).toBeGreaterThan(0);
    const waiting = intake.coalesce(); // would wait out the cadence
    intake.push(rows(1, 200)); // the 8th queued batch wakes it
    await waiting;
    expect(intake.coalesceWait()).toBe(0);
    expect(intake.take().length).toBe(8);

    const big = new Intake({ metrics: createMetrics(), now: Date.now, coalesceMs: CADENCE_MS, minBatches: 5000, coalesceMinRate: 1 });
    big.push(rows(1, 0));
    big.take();
    big.push(rows(TICK_BATCHES - 1, 100));
    expect(big.coalesceWait()).toBeGreaterThan(0);
    big.push(rows(1, 5000)); // a full tick is queued: minBatches above it counts as TICK_BATCHES
    expect(big.coalesceWait()).toBe(0);
  });

  it('a quiet collector (fewer hand-offs per second than coalesceMinRate) and cadence 0 never wait', () => {
    const quiet = new Intake({ metrics: createMetrics(), now: Date.now, coalesceMs: CADENCE_MS, coalesceMinRate: 1_000_000 });
    quiet.push(rows(5, 0));
    quiet.take();
    quiet.push(rows(5, 100));
    expect(quiet.coalesceWait()).toBe(0);
    const none = new Intake({ metrics: createMetrics(), now: Date.now, coalesceMs: 0, coalesceMinRate: 1 });
    none.push(rows(5, 0));
    none.take();
    none.push(rows(5, 100));
    expect(none.coalesceWait()).toBe(0);
  });

  it('is configured by CIPHERSTAT_PROCESS_COALESCE_MS and CIPHERSTAT_PROCESS_TICK_MIN_BATCHES (1 to 1000)', () => {
    const c = loadConfig({}, { CIPHERSTAT_PROCESS_COALESCE_MS: '750', CIPHERSTAT_PROCESS_TICK_MIN_BATCHES: '40' });
    expect(c.processCoalesceMs).toBe(750);
    expect(c.processTickMinBatches).toBe(40);
    expect(loadConfig({}, {}).processTickMinBatches).toBe(TICK_BATCHES);
    expect(() => loadConfig({}, { CIPHERSTAT_PROCESS_TICK_MIN_BATCHES: '1001' })).toThrow();
    expect(() => loadConfig({}, { CIPHERSTAT_PROCESS_TICK_MIN_BATCHES: '0' })).toThrow();
  });
});

describe('tick cadence (collector, tick worker)', () => {
  let c: TestCollector | undefined;
  afterEach(async () => {
    await c?.stop();
    c = undefined;
  });

  it('with a long cadence and a small minimum batch count, every point of many concurrent batches counts once: sums equal the plaintext', async () => {
    // From dist: ticks run in the worker thread, so the next tick's CPU part may start during a write (its cadence permitting).
    c = await startTestCollector({ fromDist: true, config: { processCoalesceMs: 2000, processTickMinBatches: 7 } });
    const accounts: TestAccount[] = [];
    for (let i = 0; i < 3; i++) accounts.push(await createAccount(c));
    const now = Date.now();
    const want = new Map<string, number>();
    const sends: Promise<Response>[] = [];
    for (let b = 0; b < 60; b++) {
      const a = accounts[b % 3]!;
      const pts = Array.from({ length: 4 }, (_, i) => ({ id: i, kind: 'counter' as const, name: 'orders', value: 1 + ((b * 7 + i) % 5), time: now - 1000 - i, tags: { page: `/p${(b + i) % 6}` } }));
      want.set(a.accountId, (want.get(a.accountId) ?? 0) + pts.reduce((s, p) => s + p.value, 0));
      sends.push(post(c.url, envelope(a, pts).bytes));
    }
    for (const r of await Promise.all(sends)) expect(r.status).toBe(202);
    await c.services.processor!.drain();
    for (const a of accounts) {
      const [row] = await connectionOf(c.services.store).query<{ n: string; batches: string }>('SELECT sum(accepted) AS n, count() AS batches FROM processed FINAL WHERE account_id = {a:String}', { a: a.accountId });
      expect(Number(row!.n)).toBe(80);
      expect(Number(row!.batches)).toBe(20);
      const res = await fetch(`${c.url}/v1/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metric: 'orders', aggregation: 'sum', from: now - 3_600_000, to: now + 60_000, interval: 'minute', groupBy: ['page'] }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { series: { points: [number, number | null][] }[] };
      expect(body.series.reduce((n, s) => n + s.points.reduce((m, [, v]) => m + (v ?? 0), 0), 0)).toBe(want.get(a.accountId));
    }
  });
});
