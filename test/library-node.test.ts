/**
 * The Library in Node against a real collector (in-process, chDB on a temp dir): points
 * recorded → flushed → processed; a batch whose connection drops after the collector stored
 * it is retried and stored once.
 */
import { connect, createServer, type Server } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createLibrary } from '@cipherstat/library';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { until } from '../services/collector/test/lifecycle-support.js';
import { connectionOf } from '../services/collector/src/storage/index.js';

let c: TestCollector;
let account: TestAccount;

beforeAll(async () => {
  c = await startTestCollector();
  account = await createAccount(c);
});
afterAll(async () => c?.stop());

async function accepted(accountId: string): Promise<{ points: number; batches: number }> {
  await c.services.processor!.drain();
  const r = await connectionOf(c.services.store).query<{ points: string; batches: string }>(
    'SELECT sum(accepted) AS points, count() AS batches FROM processed FINAL WHERE account_id = {a:String}',
    { a: accountId },
  );
  return { points: Number(r[0]!.points), batches: Number(r[0]!.batches) };
}

it('records, flushes and gets every point processed', async () => {
  const drops: string[] = [];
  const lib = createLibrary({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false, onDrop: (reason) => drops.push(reason) });
  for (let i = 0; i < 250; i++) lib.count('orders', 1, { country: i % 2 ? 'DE' : 'FR' });
  for (let i = 0; i < 50; i++) lib.observe('page.load_ms', 100 + i);
  lib.gauge('cart.items', 3);
  lib.count('bad name', 1); // dropped by the Library itself, with a reason
  await lib.flush();
  expect(await accepted(account.accountId)).toMatchObject({ points: 301 });
  expect(drops).toEqual(['invalid_name']);
  // Node 20+ has CompressionStream: every batch deflated (flag 0x01, docs/protocol.md §Flags)
  const flags = await connectionOf(c.services.store).query<{ f: number }>('SELECT DISTINCT flags AS f FROM batches WHERE account_id = {a:String}', { a: account.accountId });
  expect(flags.map((r) => Number(r.f))).toEqual([1]);
  await lib.shutdown();
});

it('retries a batch whose connection dropped after the collector stored it, and it is stored once', async () => {
  const other = await createAccount(c);
  const target = new URL(c.url);
  let dropped = 0;
  // A proxy that forwards everything but swallows the first response to a POST and cuts the connection.
  const proxy: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    let isPost = false;
    client.on('data', (d) => {
      if (d.toString('latin1').startsWith('POST')) isPost = true;
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (isPost && dropped === 0) {
        dropped++;
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(d);
    });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const port = (proxy.address() as { port: number }).port;
  try {
    const errors: string[] = [];
    const lib = createLibrary({
      endpoint: `http://127.0.0.1:${port}`,
      accountId: other.accountId,
      writeKey: other.writeKey,
      collectorKey: other.collectorKey,
      persist: false,
      retryBaseDelay: 20,
      retryMaxDelay: 50,
      onError: (e) => errors.push(e.message),
    });
    for (let i = 0; i < 40; i++) lib.count('orders', 1);
    await lib.flush();
    await lib.shutdown();
    expect(dropped).toBe(1);
    const rows = await c.services.store.countAccountRows(other.accountId);
    expect(rows.batches).toBe(1);
    expect(await accepted(other.accountId)).toEqual({ points: 40, batches: 1 });
  } finally {
    proxy.close();
  }
});

const refusals = async (code: string) => {
  const text = await (await fetch(`${c.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`cipherstat_batch_rejects_total{code="${code}"} `));
  return line ? Number(line.split(' ')[1]) : 0;
};

it('deactivated: stops sending, keeps its queue within its bounds, re-checks and delivers after a restore by itself; shredded: stops for good', async () => {
  const a = await createAccount(c);
  const drops: [string, number][] = [];
  const errors: string[] = [];
  const lib = createLibrary({
    endpoint: c.url, accountId: a.accountId, writeKey: a.writeKey, collectorKey: a.collectorKey, persist: false,
    maxBatchSize: 5, maxPersistedBatches: 3, recheckInterval: 200, // a short re-check cadence for the test (default: hourly)
    onDrop: (reason, info) => drops.push([reason, info.count]), onError: (e) => errors.push(e.code),
  });
  expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}`)).status).toBe(200); // deactivated, restorable
  const before = await refusals('account_deactivated');
  for (let i = 0; i < 40; i++) lib.count('orders', 1);
  await lib.flush(); // resolves: a paused queue counts as parked
  expect(errors).toEqual(['account_deactivated']);
  // it keeps asking, one batch at a time, never dropping for retries
  await until(async () => (await refusals('account_deactivated')) >= before + 3, 30_000, 'two re-checks');
  // only its bounds drop points (15 waiting at most: maxBatchSize × maxPersistedBatches), each reported
  expect(drops.filter(([reason]) => reason !== 'queue_full' && reason !== 'persist_overflow')).toEqual([]);
  expect((await accepted(a.accountId)).points).toBe(0);

  expect((await c.admin('POST', `/v1/accounts/${a.accountId}/restore`)).status).toBe(200);
  // no new record, no flush, no restart: the next re-check delivers everything kept
  const kept = 40 - drops.reduce((n, [, count]) => n + count, 0);
  expect(kept).toBe(15);
  await until(async () => (await accepted(a.accountId)).points === kept, 30_000, 'delivery after the restore');
  expect(errors).toEqual(['account_deactivated']);

  // shredded: 410, for good
  expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}?now=true`)).status).toBe(200);
  lib.count('orders', 1);
  await lib.flush();
  expect(errors).toEqual(['account_deactivated', 'account_gone']);
  lib.count('orders', 1);
  expect(drops.at(-1)).toEqual(['stopped', 1]);
  const gone = await refusals('account_deleted');
  await new Promise((r) => setTimeout(r, 1000)); // (several re-check periods: nothing more is sent)
  expect(await refusals('account_deleted')).toBe(gone);
  await lib.shutdown();
});
