/**
 * 202 means durable: a collector child process under concurrent load is killed with SIGKILL;
 * after a restart on the same data directory every batch that got a 202 is stored exactly
 * once, and processing finishes exactly once (no rollup part without its processed marker).
 * Runs the built CLI (`npm test` builds first).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-kill-'));
const children: ChildProcess[] = [];

afterAll(() => {
  for (const ch of children) if (ch.exitCode === null) ch.kill('SIGKILL');
  rmSync(dataDir, { recursive: true, force: true });
});

function startChild(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', CIPHERSTAT_DATA_DIR: dataDir, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_RATE_LIMIT: '100000' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ child, url: m[1]! });
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`collector exited (${code}): ${out.slice(-2000)}`)));
  });
}

it('every acknowledged batch survives kill -9 exactly once', { timeout: 120_000 }, async () => {
  expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
  let { child, url } = await startChild();
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
  child.kill('SIGKILL');
  killedAt = acked.size;
  await new Promise((r) => child.once('exit', r));
  stop = true;
  await Promise.all(workers);
  expect(killedAt).toBeGreaterThanOrEqual(150);

  // Restart on the same directory: recovery processes what the crash left unprocessed.
  ({ child, url } = await startChild());
  const deadline = Date.now() + 60_000;
  for (;;) {
    const shown = await (await fetch(`${url}/v1/accounts/${account.accountId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    if (shown.rows.processed >= shown.rows.batches && shown.rows.batches >= acked.size) break;
    if (Date.now() > deadline) throw new Error(`not processed after restart: ${JSON.stringify(shown.rows)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));

  const store = await openStore({ dataDir }, {});
  try {
    const rows = await store.query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM batches WHERE account_id = {a:String} GROUP BY batch_id', { a: account.accountId });
    const stored = new Map(rows.map((r) => [r.batch_id, Number(r.n)]));
    for (const id of acked) expect(stored.get(id), `acknowledged batch ${id}`).toBe(1);
    const processed = await store.query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM processed FINAL WHERE account_id = {a:String} GROUP BY batch_id', { a: account.accountId });
    expect(processed.length).toBe(stored.size);
    for (const p of processed) expect(Number(p.n)).toBe(1);
    // Rows a compaction pass wrote (parts `c:…`) have no marker by design.
    const orphans = await store.query<{ n: string }>("SELECT count() AS n FROM rollups WHERE part NOT IN (SELECT part FROM processed) AND NOT startsWith(part, 'c:')");
    expect(Number(orphans[0]!.n)).toBe(0);
    const accepted = await store.query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
    expect(Number(accepted[0]!.n)).toBe(stored.size * 20);
  } finally {
    await store.close();
  }
});
