/**
 * Twins: a batch stored again after it was processed. In role `all` ingest's duplicate check is
 * this process's memory only (ingest/writer.ts), so a retry after a restart is stored again and
 * answered `duplicate: false`; processing must still count it once (a tick leaves out batches
 * with a live processed marker) and, in confidential mode, delete its sealed row.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { countPoints, metric, rows, snapshot } from './lifecycle-support.js';
import { connectionOf } from '../src/storage/index.js';

const dirs: string[] = [];
const running: TestCollector[] = [];
afterAll(async () => {
  for (const c of running) await c.stop().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(dataDir: string, fromDist = false): Promise<TestCollector> {
  const c = await startTestCollector({ dataDir, fromDist });
  running.push(c);
  return c;
}

const pointsOf = async (c: TestCollector, a: TestAccount) =>
  countPoints(await snapshot(c.services.store, a.accountId), a.accountId, c.services.keyring.accountKeys(a.accountId)![0]!.dataKey);

async function markers(c: TestCollector, batchId: string): Promise<number> {
  const r = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM processed FINAL WHERE batch_id = {b:String}', { b: batchId });
  return Number(r[0]!.n);
}

describe.each([
  ['inline ticks', false],
  ['the tick worker', true],
])('a batch sent again after a restart (%s)', (_name, fromDist) => {
  it('is answered duplicate: false by the new process, stored once, counted once; a confidential twin is deleted', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-twins-'));
    dirs.push(dataDir);
    const first = await start(dataDir, fromDist);
    const plain = await createAccount(first);
    const secret = await createAccount(first, { confidential: true });
    const t = Date.now();
    const make = (a: TestAccount) => envelope(a, points(10, (i) => ({ value: i + 1, time: t - 1000, tags: { plan: i % 2 ? 'pro' : 'free' } })), { createdAt: t });
    const [ep, es] = [make(plain), make(secret)];
    for (const e of [ep, es]) expect(await (await post(first.url, e.bytes)).json()).toEqual({ batchId: e.batchId, duplicate: false });
    await first.services.processor!.drain();
    expect(await pointsOf(first, plain)).toBe(10);
    expect(await pointsOf(first, secret)).toBe(10);
    expect((await rows(first, secret.accountId, false)).batches).toBe(0);
    await first.stop();

    const second = await start(dataDir, fromDist);
    // This process has not seen them: stored again, not a duplicate in its answer …
    for (const e of [ep, es]) expect(await (await post(second.url, e.bytes)).json()).toEqual({ batchId: e.batchId, duplicate: false });
    // … and from now on it remembers them.
    for (const e of [ep, es]) expect(await (await post(second.url, e.bytes)).json()).toEqual({ batchId: e.batchId, duplicate: true });
    await second.services.processor!.drain();
    // Counted once: no second marker, the same points.
    expect(await markers(second, ep.batchId)).toBe(1);
    expect(await markers(second, es.batchId)).toBe(1);
    expect(await pointsOf(second, plain)).toBe(10);
    expect(await pointsOf(second, secret)).toBe(10);
    expect(await metric(second.url, 'cipherstat_batch_twins_total')).toBe(2);
    // The plain account's batch is one row for every reader; the confidential one's twin is gone.
    expect((await rows(second, plain.accountId)).batches).toBe(1);
    expect((await rows(second, secret.accountId, false)).batches).toBe(0);
    // A new batch of the same accounts is processed as usual beside them.
    const fresh = make(plain);
    expect(await (await post(second.url, fresh.bytes)).json()).toEqual({ batchId: fresh.batchId, duplicate: false });
    await second.services.processor!.drain();
    expect(await pointsOf(second, plain)).toBe(20);
    expect(await markers(second, fresh.batchId)).toBe(1);
    await second.stop(); // chDB opens one data directory per process
  });
});
