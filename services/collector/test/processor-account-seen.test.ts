/**
 * A batch handed from ingest to processing carries what ingest saw of its account (retention,
 * confidential mode): its tick reads no account state from storage. The batches the poll finds
 * (other nodes, a crash) still read it. Real collector, real chDB, real keyring.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { metric, rows } from './lifecycle-support.js';
import { connectionOf } from '../src/storage/index.js';

const DAY = 86_400_000;
let c: TestCollector | undefined;
afterEach(async () => {
  await c?.stop();
  c = undefined;
});

/** Twelve points over three series with distinct values: a sum and a count per series tell every point apart. */
const batch = (a: TestAccount) =>
  envelope(a, points(12, (i) => ({ name: i % 2 ? 'orders' : 'page.load_ms', kind: i % 2 ? 'counter' : 'histogram', value: 1 + i * 7, tags: { country: ['DE', 'FR', 'US'][i % 3]! } })));

/** Lookups of account state so far (Accounts.get: cache hits and storage reads alike). */
const lookups = (col: TestCollector) => col.services.accounts.stats.hit + col.services.accounts.stats.miss;

const answer = async (a: TestAccount, metricName: string, aggregation: string) => {
  const res = await fetch(`${c!.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: metricName, aggregation, from: Date.now() - DAY, to: Date.now() + 60_000, interval: 'hour', groupBy: ['country'] }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { series: unknown }).series;
};

/** An account's rollup rows by level: how many, and their expiry relative to their bucket (retention). */
async function expiries(col: TestCollector, accountId: string): Promise<string[]> {
  const r = await connectionOf(col.services.store).query<{ level: number; n: string; keep: string }>(
    'SELECT level, count() AS n, groupUniqArray(toUnixTimestamp64Milli(expires_at) - toUnixTimestamp64Milli(bucket)) AS keep FROM rollups WHERE account_id = {a:String} GROUP BY level ORDER BY level',
    { a: accountId },
  );
  return r.map((x) => `${x.level}:${x.n}:${JSON.stringify(x.keep)}`);
}

describe('the account snapshot carried with a handed-off batch', () => {
  it('a tick of handed-off batches reads no account state, and writes what a tick that read it writes (answers, retention, confidential mode)', async () => {
    let offset = 0;
    c = await startTestCollector({ now: () => Date.now() + offset, config: { refusalFlushMs: 3_600_000 } });
    const handed = await createAccount(c, { retentionDays: 9 });
    const polled = await createAccount(c, { retentionDays: 9 });
    const secret = await createAccount(c, { confidential: true });
    const processor = c.services.processor!;
    await processor.stop(); // hand-offs wait in the queue
    // The poll's batch: stored and handed off, then forgotten by the queue (as a lost lease
    // forgets it), so only the poll brings it back — without anything ingest saw.
    expect((await post(c.url, batch(polled).bytes)).status).toBe(202);
    await processor.suspend();
    expect((await post(c.url, batch(handed).bytes)).status).toBe(202);
    expect((await post(c.url, batch(secret).bytes)).status).toBe(202);

    for (const a of [handed, polled, secret]) c.services.accounts.forget(a.accountId); // a tick that wanted state would read it
    const before = lookups(c);
    processor.start(); // its first poll finds nothing: the stored batch is younger than the poll's 10 s
    await processor.drain();
    expect(lookups(c)).toBe(before); // the handed-off batches' tick looked up no account state
    expect(await rows(c, handed.accountId, false)).toMatchObject({ processed: 1 });
    expect(await rows(c, polled.accountId, false)).toMatchObject({ processed: 0 });
    offset = 20_000;
    expect(await processor.poll()).toBe(1);
    await processor.drain();
    expect(lookups(c)).toBeGreaterThan(before); // the poll's batch: its tick reads the account (the count works)
    // The same points, the same answers and the same rows, either way.
    for (const [name, agg] of [['orders', 'sum'], ['orders', 'count'], ['page.load_ms', 'p95'], ['page.load_ms', 'max']] as const) {
      const h = await answer(handed, name, agg);
      expect(h).toEqual(await answer(polled, name, agg));
      expect(JSON.stringify(h)).not.toBe('[]');
    }
    const kept = await expiries(c, handed.accountId);
    expect(kept).toEqual(await expiries(c, polled.accountId));
    expect(kept[0]).toBe(`0:6:["${60_000 + 9 * DAY}"]`); // minute rows: bucket + 1 min + 9 days of retention, as ingest saw it
    // Confidential mode, as ingest saw it: the sealed batch is deleted once processed.
    expect(await rows(c, secret.accountId, false)).toMatchObject({ batches: 0, processed: 1 });
    expect(await rows(c, handed.accountId, false)).toMatchObject({ batches: 1, processed: 1 });
  });

  it('a setting changed on this node after ingest applies to the waiting batch (the newer of the two is used)', async () => {
    let offset = 0;
    c = await startTestCollector({ now: () => Date.now() + offset });
    const a = await createAccount(c, { retentionDays: 9 });
    const processor = c.services.processor!;
    await processor.stop();
    expect((await post(c.url, batch(a).bytes)).status).toBe(202); // seen: confidential false, 9 days
    offset = 1000; // the change is read later than ingest's snapshot
    const changed = await c.admin('PATCH', `/v1/accounts/${a.accountId}`, { confidential: true, retentionDays: 3 });
    expect(changed.status).toBe(200);
    const before = lookups(c);
    processor.start();
    await processor.drain();
    expect(lookups(c)).toBe(before);
    expect(await rows(c, a.accountId, false)).toMatchObject({ batches: 0, processed: 1 });
    expect((await expiries(c, a.accountId))[0]).toBe(`0:6:["${60_000 + 3 * DAY}"]`); // the new retention
  });

  it('a shred between ingest and the tick: the waiting batch is dropped and counted, never opened (the keyring tombstone)', async () => {
    c = await startTestCollector({ config: { refusalFlushMs: 3_600_000 } });
    const victim = await createAccount(c);
    const other = await createAccount(c);
    const processor = c.services.processor!;
    await processor.stop();
    expect((await post(c.url, batch(victim).bytes)).status).toBe(202);
    expect((await post(c.url, batch(other).bytes)).status).toBe(202);
    await c.services.lifecycle.stop(); // no purge: the rows are checked as processing left them
    const dropped = await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}');
    expect((await c.admin('DELETE', `/v1/accounts/${victim.accountId}?now=true`)).status).toBe(200);
    processor.start();
    await processor.drain();
    expect(await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}')).toBe(dropped + 1);
    expect(await rows(c, victim.accountId, false)).toMatchObject({ processed: 1, rollups: 0, dictionary: 0 });
    expect((await rows(c, other.accountId, false)).rollups).toBeGreaterThan(0);
    expect((await c.services.store.rejects(victim.accountId)).account_deleted).toBe(12);
  });
});
