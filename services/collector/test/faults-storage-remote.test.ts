/**
 * Fault suite, remote storage: a real collector on the test ClickHouse HTTP endpoint behind a
 * fault proxy that refuses, kills and hangs it for real. Each case answers promptly with
 * `503 storage_unavailable` (deadlines: no request waits on hung storage past its deadline),
 * logs the failed write, and ends with every batch retried until acknowledged: counted exactly
 * once, nothing acknowledged lost. No assertion on timing.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { ClickHouseHttp } from './support/clickhouse-http.js';
import { createAccount, envelope, points, post, type TestAccount, type TestCollector } from './support/collector.js';
import { collectorBehindFaultProxy, type FaultMode, type FaultProxy } from './support/fault-proxy.js';
import { expectExactlyOnce, tracker, waitProcessed } from './support/faults.js';
import { connectionOf } from '../src/storage/index.js';
import { everyFewSeconds } from '../src/logger.js';

let shim: ClickHouseHttp;
let proxy: FaultProxy;
let c: TestCollector;
let close: (() => Promise<void>) | undefined;

beforeAll(async () => {
  // Short deadlines so the suite is quick; what is asserted is the answer, never its timing.
  // No backpressure (maxProcessLagMs 0): a processor stuck on hung storage would otherwise
  // turn the refusals into `overloaded` before the write path is reached.
  ({ c, proxy, shim, close } = await collectorBehindFaultProxy({ storageTimeoutMs: 1500, queryTimeoutMs: 1500, readyTimeoutMs: 500, rateLimit: 100_000, maxProcessLagMs: 0 }));
});
afterAll(async () => close?.());

/** createAccount, again while this file's short deadlines refuse it (a loaded machine). */
async function newAccount(): Promise<TestAccount> {
  for (let i = 0; ; i++) {
    try {
      return await createAccount(c);
    } catch (e) {
      if (i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

const errorOf = async (res: Response) => ((await res.json()) as { error: { code: string } }).error.code;

async function faultCase(mode: Exclude<FaultMode, 'pass'>): Promise<{ acknowledged: number; counted: number }> {
  const account = await newAccount();
  const t = tracker(() => c.url, account);
  // Before the fault: acknowledged (sent again if this file's short deadlines refused it on a loaded machine).
  for (let i = 0; i < 20; i++) if ((await t.send()) !== 202) await t.retryAll();

  // Batches in flight when the fault starts, and more during it.
  const logsBefore = c.logs.length;
  const inFlight = Array.from({ length: 10 }, () => t.send());
  await proxy.mode(mode);
  try {
    await Promise.all(inFlight);
    for (let i = 0; i < 10; i++) {
      const status = await t.send();
      expect(status).toBe(503);
    }
    expect(t.statuses.get('503 storage_unavailable')).toBeGreaterThanOrEqual(10);

    const refused = await post(c.url, t.sent.get([...t.sent.keys()].at(-1)!)!);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect(await errorOf(refused)).toBe('storage_unavailable');

    const ready = await fetch(`${c.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, storage: false });
    expect((await fetch(`${c.url}/healthz`)).status).toBe(200);

    // A query ends in 503 too (its account read or its statements pass their deadline).
    const q = await fetch(`${c.url}/v1/query`, {
      method: 'POST',
      headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - 3_600_000, to: Date.now() }),
    });
    expect(q.status).toBe(503);
    expect(await errorOf(q)).toBe('storage_unavailable');

    // The failure is in the log with its error: the failed insert's line (`ingest insert failed`)
    // or, when the account read before it failed, the request's (`storage call failed`).
    const failed = c.logs.slice(logsBefore).filter((l) => /ingest insert failed|storage call failed/.test(l));
    expect(failed.length, 'a log line for the failed storage call').toBeGreaterThan(0);
    expect(JSON.parse(failed[0]!).err).toBeTruthy();
  } finally {
    await proxy.mode('pass'); // a failed assertion above must not leave the next case without storage
  }
  await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 120_000, interval: 250 }).toBe(200);
  await t.retryAll();
  await waitProcessed(c.services.store, account.accountId, t.acked.size);
  const totals = await expectExactlyOnce(c.services.store, account.accountId, t);
  console.log(`fault ${mode}: ${totals.acknowledged} acknowledged, ${totals.counted} counted, statuses ${JSON.stringify([...t.statuses])}`);
  return totals;
}

describe('remote storage faults', () => {
  it('storage refused: 503 storage_unavailable at once, /readyz 503; counted exactly once after', async () => {
    await faultCase('refuse');
  });
  it('storage killed mid-request: 503 storage_unavailable; counted exactly once after', async () => {
    await faultCase('kill');
  });
  it('storage hung: requests end at their deadline in 503, /readyz 503; counted exactly once after', async () => {
    await faultCase('hang');
    const line = c.logs.find((l) => /ingest insert failed|storage call failed/.test(l) && l.includes('storage did not answer within 1500 ms'));
    expect(line, 'the log names the deadline').toBeDefined();
  });

  it('a second outage right after storage came back is logged again (the log limit clears on recovery)', async () => {
    const account = await newAccount();
    // A different range each time: the result cache may answer a query it has just answered
    // without storage (the derivation watermark is reused for a second), which is not the point here.
    const query = (hours: number) =>
      fetch(`${c.url}/v1/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - hours * 3_600_000, to: Date.now() }),
      });
    const t = tracker(() => c.url, account);
    while ((await t.send()) !== 202) await t.retryAll(); // (this file's short deadlines, on a loaded machine)
    await waitProcessed(c.services.store, account.accountId, 1);
    expect((await query(1)).status).toBe(200); // the metric and the read token are known before storage goes
    for (let outage = 1; outage <= 2; outage++) {
      const logsBefore = c.logs.length;
      await proxy.mode('refuse');
      try {
        // Both outages fail with the same message, which the log limit would otherwise hold back for a while.
        expect((await query(1 + outage)).status).toBe(503);
        const lines = c.logs.slice(logsBefore).filter((l) => /storage call failed/.test(l));
        expect(lines.length, `the failure logged in outage ${outage}`).toBeGreaterThan(0);
      } finally {
        await proxy.mode('pass');
      }
      await expect.poll(async () => (await fetch(`${c.url}/readyz`)).status, { timeout: 120_000, interval: 250 }).toBe(200);
    }
  });

  it('compaction after a backlog with more keys than one statement can hold: every statement fits, totals unchanged', { timeout: 600_000 }, async () => {
    const account = await newAccount();
    // Two batches over the same 1,000 series, each processed before the next is sent (so in two
    // ticks, never aggregated together): 1,000 groups (or more) of two rows each, 2,000 row keys.
    // (Sent again until acknowledged: this collector's short deadlines may refuse on a loaded machine.)
    // One point time for both, so both ticks write the same minute whatever the wait between them.
    const time = Date.now() - 1000;
    for (let b = 0; b < 2; b++) {
      const e = envelope(account, points(1000, (i) => ({ value: 1, time, tags: { s: String(i) } })));
      await expect.poll(async () => (await post(c.url, e.bytes)).status, { timeout: 120_000, interval: 500 }).toBe(202);
      await waitProcessed(c.services.store, account.accountId, b + 1);
    }
    const sum = async () => {
      const ask = () =>
        fetch(`${c.url}/v1/query`, {
          method: 'POST',
          headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - 3_600_000, to: Date.now() }),
        });
      let res = await ask();
      for (let i = 0; i < 20 && res.status === 503; i++) res = await ask(); // this file's short query deadline, on a loaded machine
      expect(res.status).toBe(200);
      const body = (await res.json()) as { series: { points: [number, number | null][] }[] };
      return body.series.reduce((n, s) => n + s.points.reduce((m, [, v]) => m + (v ?? 0), 0), 0);
    };
    expect(await sum()).toBe(2000);
    const sent = shim.requests.length;
    const report = await c.services.compactor!.runUntilDone();
    expect(report).toMatchObject({ failedRows: 0, unfinished: 0 });
    expect(report.groups).toBeGreaterThanOrEqual(1000);
    const statements = shim.requests.slice(sent);
    // The group keys of one pass did not fit one statement: several statements, each within a URL field.
    expect(statements.filter((r) => 'keys' in r.params).length).toBeGreaterThan(2);
    for (const r of statements) for (const v of Object.values(r.params)) expect(Buffer.byteLength(v)).toBeLessThan(128 * 1024);
    const [rows] = await connectionOf(c.services.store).query<{ rows: string; groups: string }>(
      'SELECT count() AS rows, uniqExact(level, metric, bucket, series) AS groups FROM rollups WHERE account_id = {a:String}',
      { a: account.accountId },
    );
    expect(Number(rows!.rows)).toBe(Number(rows!.groups)); // one row per group now
    expect(await sum()).toBe(2000);
  });
});

describe('the storage failure log limit (README "When things go wrong")', () => {
  it('one line per error message every 10 s, with a count of those held back; another message at once; a success clears it', () => {
    vi.useFakeTimers({ toFake: ['performance'] }); // the limit's clock only: nothing here waits
    try {
      const lines: [string, number][] = [];
      const limited = everyFewSeconds();
      const fail = (message: string) => limited(message, (suppressed) => lines.push([message, suppressed]));
      for (let i = 0; i < 5; i++) fail('connection refused');
      fail('timeout');
      expect(lines).toEqual([['connection refused', 0], ['timeout', 0]]);
      vi.advanceTimersByTime(9_999);
      fail('connection refused');
      expect(lines).toHaveLength(2);
      vi.advanceTimersByTime(1);
      fail('connection refused');
      expect(lines.at(-1)).toEqual(['connection refused', 5]); // the 5 held back since the last line
      limited.reset(); // a write or a readiness check succeeded: the next outage is a new incident
      fail('connection refused');
      expect(lines.at(-1)).toEqual(['connection refused', 0]);
      expect(lines).toHaveLength(4);
    } finally {
      vi.useRealTimers();
    }
  });
});
