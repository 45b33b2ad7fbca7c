/**
 * Fault suite, disk full: a collector process whose data directory is on a small tmpfs, filled
 * to the last block. Ingest answers `503 storage_unavailable` and logs the failed insert with
 * the path and the free space; account creation answers `503 storage_unavailable` (not 500);
 * a restart on the full disk says which file it could not write; once space is freed, every
 * refused batch is sent again and everything acknowledged is counted exactly once.
 * Needs root to mount the tmpfs: skipped with a message otherwise. No assertion on timing.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, type TestAccount } from './support/collector.js';
import { expectExactlyOnce, startCollectorProcess, stopProcess, tracker, type CollectorProcess } from './support/faults.js';

const mountPoint = mkdtempSync(join(tmpdir(), 'cipherstat-diskfull-'));
let mounted = false;
let mountError = '';
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', mountPoint], { stdio: 'pipe' });
  mounted = true;
} catch (e) {
  mountError = String((e as { stderr?: Buffer }).stderr ?? e).trim();
  console.warn(`faults-disk-full: SKIPPED: cannot mount a tmpfs at ${mountPoint} (needs root): ${mountError}`);
}
const dataDir = join(mountPoint, 'data');
let fillers = 0;
const running: CollectorProcess[] = [];

afterAll(async () => {
  for (const p of running) await stopProcess(p, 'SIGKILL');
  if (mounted) execFileSync('umount', ['-l', mountPoint]);
  rmSync(mountPoint, { recursive: true, force: true });
});

/** Fills the file system to its last block (dd stops at ENOSPC), again after the engine freed some. */
function fillDisk(): void {
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${join(mountPoint, `filler-${fillers++}`)}`, 'bs=4k'], { stdio: 'pipe' });
  } catch {
    // "No space left on device": that is the point
  }
}

const adminCreate = (url: string) =>
  fetch(`${url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{}' });

it.skipIf(!mounted)('disk full: 503 storage_unavailable naming the path and free space, a restart names the file, nothing acknowledged lost', { timeout: 600_000 }, async () => {
  const start = async () => {
    const p = await startCollectorProcess(dataDir, { CIPHERSTAT_MAX_PROCESS_LAG_MS: '0' });
    running.push(p);
    return p;
  };
  let p = await start();
  const account = (await (await adminCreate(p.url)).json()) as TestAccount;
  const t = tracker(() => p.url, account);
  for (let i = 0; i < 30; i++) expect(await t.send()).toBe(202);

  fillDisk();
  for (let i = 0; i < 5; i++) expect(await t.send()).toBe(503);
  expect(t.statuses.get('503 storage_unavailable')).toBe(5);
  expect(t.retryAfter.every((v) => Number(v) >= 1)).toBe(true);
  // Readiness still answers (within CIPHERSTAT_READY_TIMEOUT_MS: 200 when a read works, else 503), liveness too.
  expect([200, 503]).toContain((await fetch(`${p.url}/readyz`)).status);
  expect((await fetch(`${p.url}/healthz`)).status).toBe(200);
  // The failed insert is logged with the engine's error, the path and the free space.
  await expect.poll(() => p.output().split('\n').find((l) => l.includes('ingest insert failed')), { timeout: 180_000 }).toBeDefined();
  const line = JSON.parse(p.output().split('\n').find((l) => l.includes('ingest insert failed'))!);
  expect(line.err).toMatch(/NOT_ENOUGH_SPACE|No space left|ENOSPC/);
  expect(line.disk).toMatch(new RegExp(`^disk full: cannot write ${join(dataDir, 'clickhouse')} \\(\\d+ bytes free\\)`));

  fillDisk();
  // Account creation: 503 storage_unavailable (its key file cannot be written), the file named in the log.
  const created = await adminCreate(p.url);
  expect(created.status).toBe(503);
  expect(((await created.json()) as { error: { code: string } }).error.code).toBe('storage_unavailable');
  await expect.poll(() => p.output().split('\n').find((l) => l.includes('storage call failed') && l.includes('disk full: cannot write')), { timeout: 180_000 }).toBeDefined();
  expect(p.output()).toMatch(new RegExp(`disk full: cannot write ${join(dataDir, 'keyring')}\\S* \\(\\d+ bytes free\\)`));

  // A restart on the full disk fails, saying which file it could not write.
  await stopProcess(p, 'SIGKILL');
  fillDisk();
  const failed = await start().then(
    () => undefined,
    (e: { output?: string }) => e.output ?? '',
  );
  expect(failed, 'the start on a full disk fails').toBeDefined();
  expect(failed).toMatch(new RegExp(`disk full: cannot write ${mountPoint}\\S+ \\(\\d+ bytes free\\)`));

  // Space freed: start, every refused batch sent again until acknowledged, counted exactly once.
  for (let i = 0; i < fillers; i++) rmSync(join(mountPoint, `filler-${i}`));
  p = await start();
  await t.retryAll();
  await expect
    .poll(async () => {
      const res = await fetch(`${p.url}/v1/accounts/${account.accountId}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      const shown = (await res.json()) as { rows: { processed: number } };
      return shown.rows.processed;
    }, { timeout: 180_000, interval: 500 })
    .toBeGreaterThanOrEqual(t.acked.size);
  await stopProcess(p);
  const store = await openStore({ dataDir });
  try {
    const totals = await expectExactlyOnce(store, account.accountId, t);
    console.log(`fault disk full: ${totals.acknowledged} acknowledged, ${totals.counted} counted, statuses ${JSON.stringify([...t.statuses])}`);
  } finally {
    await store.close();
  }
});
