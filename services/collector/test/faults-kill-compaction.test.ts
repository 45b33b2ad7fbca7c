/**
 * Fault suite, `kill -9` while compaction runs: a collector process compacting every 100 ms
 * (each batch adds a partial rollup row to the same groups, so every pass has work) is killed
 * with SIGKILL three times while batches arrive and passes run. After the last restart every
 * acknowledged batch is processed exactly once and the query API's total is exact: no merged
 * row is counted next to its sources. Where in a pass the kill lands is not controlled; the
 * assertions hold wherever it does. No assertion on timing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, type TestAccount } from './support/collector.js';
import { POINTS_PER_BATCH, expectExactlyOnce, startCollectorProcess, stopProcess, tracker, type CollectorProcess } from './support/faults.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-killcompact-'));
const ENV = { CIPHERSTAT_COMPACTION_INTERVAL_MS: '100', CIPHERSTAT_MAX_PROCESS_LAG_MS: '0' };
let p: CollectorProcess | undefined;

afterAll(async () => {
  if (p) await stopProcess(p, 'SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

const admin = (url: string, path: string) => fetch(url + path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
const processedRows = async (url: string, accountId: string) => ((await (await admin(url, `/v1/accounts/${accountId}`)).json()) as { rows: { processed: number } }).rows.processed;
/** Sum of `orders` over the last hours through the query API (what a dashboard shows). */
async function queriedSum(url: string, account: TestAccount): Promise<number> {
  const res = await fetch(`${url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - 3 * 3_600_000, to: Date.now() }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { series: { points: [number, number | null][] }[] };
  return body.series.reduce((n, s) => n + s.points.reduce((m, [, v]) => m + (v ?? 0), 0), 0);
}

it('kill -9 during compaction passes: processed exactly once, the queried total exact', { timeout: 900_000 }, async () => {
  p = await startCollectorProcess(dataDir, ENV);
  const account = (await (await fetch(`${p.url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: '{}' })).json()) as TestAccount;
  const t = tracker(() => p!.url, account);
  let passesSeen = 0;
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 30; i++) await t.send();
    await expect.poll(() => processedRows(p!.url, account.accountId), { timeout: 180_000, interval: 250 }).toBeGreaterThanOrEqual(t.acked.size);
    // A pass that merged something has run (the scheduler keeps starting new ones): kill now.
    await expect.poll(() => p!.output().includes('"msg":"rollup compaction pass"'), { timeout: 180_000, interval: 50 }).toBe(true);
    passesSeen++;
    for (let i = 0; i < 5; i++) void t.send(); // batches arriving while it dies
    await stopProcess(p, 'SIGKILL');
    p = await startCollectorProcess(dataDir, ENV);
  }
  expect(passesSeen).toBe(3);
  await t.retryAll();
  await expect.poll(() => processedRows(p!.url, account.accountId), { timeout: 180_000, interval: 250 }).toBeGreaterThanOrEqual(t.acked.size);
  // Passes after the restart finish what the kills interrupted; the total never moves.
  const expected = t.acked.size * (POINTS_PER_BATCH * (POINTS_PER_BATCH + 1)) / 2; // values 1..5 per batch
  await expect.poll(() => queriedSum(p!.url, account), { timeout: 180_000, interval: 500 }).toBe(expected);
  await expect.poll(() => p!.output().split('"msg":"rollup compaction pass"').length > 1, { timeout: 180_000, interval: 100 }).toBe(true);
  expect(await queriedSum(p.url, account)).toBe(expected);
  await stopProcess(p);
  p = undefined;
  const store = await openStore({ dataDir });
  try {
    const totals = await expectExactlyOnce(store, account.accountId, t);
    console.log(`fault kill -9 during compaction: ${totals.acknowledged} acknowledged, ${totals.counted} counted, ${expected} queried`);
  } finally {
    await store.close();
  }
});
