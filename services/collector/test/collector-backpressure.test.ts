/**
 * Backpressure: when processing falls behind (the oldest batch waiting for a tick waited longer
 * than CIPHERSTAT_MAX_PROCESS_LAG_MS), ingest answers 503 overloaded with Retry-After instead
 * of acknowledging more than it can process; once processing catches up it accepts again, and
 * everything acknowledged is processed exactly once. The writer's queue (batches waiting for
 * their durable insert) is capped the same way.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { BatchWriter } from '../src/ingest/writer.js';
import type { BatchRow, Store } from '../src/storage/types.js';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';
import { batch } from './support/storage-conformance.js';

let c: TestCollector;
let a: TestAccount;
/** The collector's clock: real time unless a test sets it. */
let clock: number | undefined;

beforeAll(async () => {
  c = await startTestCollector({ config: { maxProcessLagMs: 50 }, now: () => clock ?? Date.now() });
  a = await createAccount(c);
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('ingest backpressure', () => {
  it('answers 503 overloaded while processing is behind, accepts again once it caught up', async () => {
    const processor = c.services.processor!;
    await processor.stop(); // processing halts: hand-offs wait in its queue
    const first = envelope(a, points(10));
    expect((await post(c.url, first.bytes)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 120)); // the waiting batch is now older than 50 ms
    const refused = await post(c.url, envelope(a, points(10)).bytes);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await refused.json()).error.code).toBe('overloaded');
    expect((await fetch(`${c.url}/healthz`)).status).toBe(200);

    processor.start(); // the poll picks the stored batch up
    await expect.poll(async () => (await post(c.url, envelope(a, points(10)).bytes)).status, { timeout: 120_000, interval: 200 }).toBe(202);
    await processor.drain();
    const [row] = await connectionOf(c.services.store).query<{ n: string; pts: string }>(
      'SELECT count() AS n, sum(accepted) AS pts FROM processed FINAL WHERE account_id = {a:String}',
      { a: a.accountId },
    );
    expect(Number(row!.n)).toBeGreaterThanOrEqual(2); // the first batch and the one accepted again
    expect(Number(row!.pts)).toBe(Number(row!.n) * 10);
  });
});

describe('Retry-After of overloaded', () => {
  it('reflects the backlog: as many seconds as the oldest waiting batch has waited, spread up to half again (1 to 60)', async () => {
    const acct = await createAccount(c);
    const processor = c.services.processor!;
    await processor.drain();
    await processor.stop();
    clock = Date.now();
    try {
      const first = envelope(acct, points(10));
      expect((await post(c.url, first.bytes)).status).toBe(202);
      clock += 30_000; // the batch has waited 30 s for processing
      const refused = await post(c.url, envelope(acct, points(10)).bytes);
      expect(refused.status).toBe(503);
      expect((await refused.json()).error.code).toBe('overloaded');
      // drawn from [30, 45] (retryAfterSeconds: refused senders do not come back together)
      const after = Number(refused.headers.get('retry-after'));
      expect(after).toBeGreaterThanOrEqual(30);
      expect(after).toBeLessThanOrEqual(45);
      clock += 600_000;
      expect((await post(c.url, envelope(acct, points(10)).bytes)).headers.get('retry-after')).toBe('60');
    } finally {
      clock = undefined;
      processor.start();
    }
    await processor.drain();
    const [row] = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM processed FINAL WHERE account_id = {a:String}', { a: acct.accountId });
    expect(Number(row!.n)).toBe(1); // the acknowledged batch, counted once
  });
});

describe('CIPHERSTAT_MAX_QUEUED_BATCHES', () => {
  it('batches waiting for their durable insert are capped: beyond the cap 503 overloaded, nothing of the queue is lost', async () => {
    expect(loadConfig({}, {}).maxQueuedBatches).toBe(20_000);
    const maxQueued = loadConfig({}, { CIPHERSTAT_MAX_QUEUED_BATCHES: '2' }).maxQueuedBatches;
    const store = c.services.store;
    // The real store, its duplicate check held until released: the first group's insert is in flight.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const gated = Object.create(store, { existingBatches: { value: async (rows: BatchRow[]) => (await held, store.existingBatches(rows)) } }) as Store;
    const writer = new BatchWriter(gated, c.services.metrics, { maxQueued });
    const acct = await createAccount(c);
    const row = (i: number) => batch(acct.accountId, `queued-${i}`, Date.now());
    const first = writer.submit(row(1)); // taken into the insert in flight
    await new Promise((r) => setImmediate(r));
    const queued = [writer.submit(row(2)), writer.submit(row(3))]; // wait for the next insert: the cap
    await expect(writer.submit(row(4))).rejects.toMatchObject({ status: 503, code: 'overloaded' });
    release();
    expect(await Promise.all([first, ...queued])).toEqual(['stored', 'stored', 'stored']);
    await writer.close();
  });

  it('CIPHERSTAT_MAX_QUEUED_BYTES caps the bytes they hold (waiting and in flight), however few they are: 503 overloaded at the cap, accepted again once inserted, nothing lost', async () => {
    expect(loadConfig({}, {}).maxQueuedBytes).toBe(256 * 1024 * 1024);
    const maxQueuedBytes = loadConfig({}, { CIPHERSTAT_MAX_QUEUED_BYTES: '3000' }).maxQueuedBytes;
    const store = c.services.store;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const gated = Object.create(store, { existingBatches: { value: async (rows: BatchRow[]) => (await held, store.existingBatches(rows)) } }) as Store;
    const writer = new BatchWriter(gated, c.services.metrics, { maxQueued: 1000, maxQueuedBytes });
    const acct = await createAccount(c);
    const row = (i: number) => ({ ...batch(acct.accountId, `bytes-${i}`, Date.now()), sealed: new Uint8Array(1000).fill(i) });
    const first = writer.submit(row(1)); // 1,000 bytes in the insert in flight
    await new Promise((r) => setImmediate(r));
    const queued = [writer.submit(row(2)), writer.submit(row(3))]; // 3,000 held: the cap, with 3 of 1,000 batches
    await expect(writer.submit(row(4))).rejects.toMatchObject({ status: 503, code: 'overloaded', message: 'too many bytes waiting for storage' });
    release();
    expect(await Promise.all([first, ...queued])).toEqual(['stored', 'stored', 'stored']);
    expect(await writer.submit(row(4))).toBe('stored'); // nothing held any more
    const stored = await store.existingBatches([1, 2, 3, 4].map(row));
    expect(stored.size).toBe(4);
    await writer.close();
  });
});
