import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { connectionOf } from '../src/storage/index.js';

const dataDir = await mkdtemp(join(tmpdir(), 'cipherstat-storage-kill-'));
afterAll(() => rm(dataDir, { recursive: true, force: true }));

it('keeps every acknowledged insert, exactly once and whole, after kill -9', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./support/storage-kill-child.ts', import.meta.url)), dataDir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let acked = -1;
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      for (const m of s.matchAll(/acked (\d+)/g)) acked = Number(m[1]);
      if (acked >= 30) resolve();
    });
  });
  child.kill('SIGKILL');
  await exited;

  const store = await openStore({ dataDir });
  await store.migrate();
  const rows = await connectionOf(store).query<{ i: string; n: string }>(
    "SELECT splitByChar('-', batch_id)[1] AS i, count() AS n FROM cipherstat.batches WHERE account_id = 'acct-kill' GROUP BY i",
  );
  const inserts = new Map(rows.map((r) => [Number(r.i.slice(1)), Number(r.n)]));
  for (let i = 0; i <= acked; i++) expect(inserts.get(i), `insert ${i}`).toBe(10);
  for (const [i, n] of inserts) {
    expect(i).toBeLessThanOrEqual(acked + 1); // at most the one in flight
    expect(n).toBe(10); // an insert is all or nothing
  }
  await store.close();
});
