/**
 * 202 means durable: a collector child process under concurrent load is killed with SIGKILL;
 * after a restart on the same data directory every batch that got a 202 is stored exactly
 * once, and processing finishes exactly once (no rollup part without its processed marker).
 * Runs the built CLI (`npm test` builds first).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';
import { CLI, startCollectorProcess, stopProcess, type CollectorProcess } from './support/faults.js';
import { connectionOf } from '../src/storage/index.js';

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-kill-'));
const children: CollectorProcess[] = [];
const startChild = async () => {
  const p = await startCollectorProcess(dataDir);
  children.push(p);
  return p;
};

afterAll(async () => {
  for (const p of children) await stopProcess(p, 'SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

it('every acknowledged batch survives kill -9 exactly once', async () => {
  expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
  let p = await startChild();
  let { url } = p;
  const res = await fetch(`${url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: '{}' });
  const account = (await res.json()) as TestAccount;

  const acked = new Set<string>();
  let stop = false;
  let killedAt = 0;
  const worker = async () => {
    while (!stop) {
      const e = envelope(account, points(20, (i) => ({ value: i, tags: { w: String(i % 4) } })));
      try {
        const r = await post(url, e.bytes);
        if (r.status === 202) {
          await r.json();
          acked.add(e.batchId);
        }
      } catch {
        // the collector died mid-request: this batch was not acknowledged
      }
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  while (acked.size < 150) await new Promise((r) => setTimeout(r, 20));
  const killed = stopProcess(p, 'SIGKILL');
  killedAt = acked.size;
  await killed;
  stop = true;
  await Promise.all(workers);
  expect(killedAt).toBeGreaterThanOrEqual(150);

  // Restart on the same directory: recovery processes what the crash left unprocessed.
  p = await startChild();
  ({ url } = p);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const shown = await (await fetch(`${url}/v1/accounts/${account.accountId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    if (shown.rows.processed >= shown.rows.batches && shown.rows.batches >= acked.size) break;
    if (Date.now() > deadline) throw new Error(`not processed after restart: ${JSON.stringify(shown.rows)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  await stopProcess(p);

  const store = await openStore({ dataDir });
  try {
    const rows = await connectionOf(store).query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM batches WHERE account_id = {a:String} GROUP BY batch_id', { a: account.accountId });
    const stored = new Map(rows.map((r) => [r.batch_id, Number(r.n)]));
    for (const id of acked) expect(stored.get(id), `acknowledged batch ${id}`).toBe(1);
    const processed = await connectionOf(store).query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM processed FINAL WHERE account_id = {a:String} GROUP BY batch_id', { a: account.accountId });
    expect(processed.length).toBe(stored.size);
    for (const p of processed) expect(Number(p.n)).toBe(1);
    // Rows a compaction pass wrote (parts `c:…`) have no marker by design.
    const orphans = await connectionOf(store).query<{ n: string }>("SELECT count() AS n FROM rollups WHERE part NOT IN (SELECT part FROM processed) AND NOT startsWith(part, 'c:')");
    expect(Number(orphans[0]!.n)).toBe(0);
    const accepted = await connectionOf(store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
    expect(Number(accepted[0]!.n)).toBe(stored.size * 20);
  } finally {
    await store.close();
  }
});
