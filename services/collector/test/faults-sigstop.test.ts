/**
 * Fault suite, a frozen collector: `cipherstat serve` stopped with SIGSTOP while the Library
 * (Node) keeps recording and sending, then resumed with SIGCONT. Requests in flight simply wait
 * or fail and are retried by the Library; every point recorded is counted exactly once and the
 * Library dropped nothing. No assertion on timing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { createLibrary } from '@cipherstat/library';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, type TestAccount } from './support/collector.js';
import { startCollectorProcess, stopProcess, type CollectorProcess } from './support/faults.js';
import { connectionOf } from '../src/storage/index.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-sigstop-'));
let p: CollectorProcess | undefined;

afterAll(async () => {
  if (p) {
    p.child.kill('SIGCONT');
    await stopProcess(p, 'SIGKILL');
  }
  rmSync(dataDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('SIGSTOP/SIGCONT under Library traffic: every point recorded counted exactly once, nothing dropped', { timeout: 600_000 }, async () => {
  p = await startCollectorProcess(dataDir);
  const res = await fetch(`${p.url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: '{}' });
  const account = (await res.json()) as TestAccount;
  const drops: string[] = [];
  const lib = createLibrary({
    endpoint: p.url,
    accountId: account.accountId,
    writeKey: account.writeKey,
    persist: false,
    flushInterval: 100,
    maxRetries: 100,
    retryBaseDelay: 100,
    retryMaxDelay: 1000,
    onDrop: (reason) => drops.push(reason),
  });

  let recorded = 0;
  let running = true;
  const traffic = (async () => {
    while (running) {
      for (let i = 0; i < 10; i++) lib.count('orders', 1, { country: i % 2 ? 'DE' : 'FR' });
      recorded += 10;
      await sleep(20);
    }
  })();
  await sleep(1000);
  p.child.kill('SIGSTOP'); // frozen: connections are accepted by the kernel, nothing answers
  await sleep(3000);
  p.child.kill('SIGCONT');
  await sleep(1000);
  running = false;
  await traffic;
  await lib.flush();
  await lib.shutdown();
  expect(drops).toEqual([]);

  const res2 = await fetch(`${p.url}/v1/accounts/${account.accountId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(res2.status).toBe(200);
  await stopProcess(p); // graceful: what was acknowledged is flushed and processed at the next start at the latest
  p = await startCollectorProcess(dataDir);
  await expect
    .poll(async () => {
      const shown = (await (await fetch(`${p!.url}/v1/accounts/${account.accountId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as {
        rows: { batches: number; processed: number };
      };
      return shown.rows.processed >= shown.rows.batches && shown.rows.batches > 0;
    }, { timeout: 180_000, interval: 500 })
    .toBe(true);
  await stopProcess(p);
  p = undefined;

  const store = await openStore({ dataDir });
  try {
    const rows = await connectionOf(store).query<{ n: string; dupes: string; pts: string }>(
      `SELECT count() AS n, count() - uniqExact(batch_id) AS dupes, sum(accepted) AS pts FROM processed FINAL WHERE account_id = {a:String}`,
      { a: account.accountId },
    );
    expect(Number(rows[0]!.dupes)).toBe(0);
    expect(Number(rows[0]!.pts)).toBe(recorded);
    console.log(`fault SIGSTOP: ${recorded} points recorded, ${rows[0]!.pts} counted in ${rows[0]!.n} batches`);
  } finally {
    await store.close();
  }
});
