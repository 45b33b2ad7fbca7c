/**
 * Grace period edges driven by the lifecycle sweep, the CLI against a running collector and
 * on its own, and keyring backups: a backup never resurrects a shredded account (tombstones,
 * also re-applied from storage after losing the keyring), and after the master key rotations
 * a backup from before the shred cannot be read at all.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { countPoints, inventory, keyNeedles, openable, snapshot } from './lifecycle-support.js';
import { isKeyringError } from '../src/keyring/index.js';

const DAY = 86_400_000;
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(ROOT, 'services/collector/src/cli.ts');
let offset = 0;
const now = () => Date.now() + offset;
let c: TestCollector;
const tmp = mkdtempSync(join(tmpdir(), 'cipherstat-backups-'));

/**
 * Runs the real CLI in a child process (`--json`: machine output; `--yes`: no confirmation
 * prompt); `remote` talks to the running collector, else it opens the data directory.
 */
function cli(args: string[], { remote = true } = {}): Promise<{ code: number; stdout: string; stderr: string; json: any }> {
  const env: NodeJS.ProcessEnv = { ...process.env, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN };
  for (const k of ['CIPHERSTAT_MASTER_KEY', 'CIPHERSTAT_MASTER_KEY_FILE', 'CIPHERSTAT_URL', 'CIPHERSTAT_DATA_DIR']) delete env[k];
  const where = remote ? ['--url', c.url, '--token', ADMIN_TOKEN] : ['--port', '1']; // port 1: nobody answers, so it runs locally
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args, '--json', ...(args.includes('--now') ? ['--yes'] : []), '--data-dir', c.dataDir, ...where], { cwd: ROOT, env, timeout: 120_000 }, (err, stdout, stderr) => {
      let json: any;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr, json });
    });
  });
}

/** On the collector's (simulated) clock, to its current transport key. */
async function send(a: TestAccount, n = 10): Promise<Response> {
  const collectorKey = (await (await fetch(`${c.url}/v1/collector-key`)).json()) as TestAccount['collectorKey'];
  const t = now();
  return post(c.url, envelope({ ...a, collectorKey }, points(n, (i) => ({ value: i, time: t - 1000, tags: { shop: `s${i % 4}` } })), { createdAt: t }).bytes);
}

/** A collector whose lifecycle sweep only runs when a test calls sweep() (no timer races). */
async function start(dataDir?: string): Promise<TestCollector> {
  const x = await startTestCollector({ now, dataDir });
  await x.services.lifecycle.stop();
  return x;
}

beforeAll(async () => {
  c = await start();
});
afterAll(async () => c?.stop());

describe('grace period, driven by the lifecycle sweep', () => {
  it('restores inside the grace period, refuses with 409 once it is over, and the sweep shreds', async () => {
    const a = await createAccount(c);
    expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}?graceDays=1`)).status).toBe(200);
    expect((await c.admin('POST', `/v1/accounts/${a.accountId}/restore`)).status).toBe(200);
    expect((await send(a)).status).toBe(202);
    expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}?graceDays=1`)).status).toBe(200);

    offset += DAY / 2;
    expect((await c.services.lifecycle.sweep()).shredded).toEqual([]);
    offset += DAY;
    const late = await c.admin('POST', `/v1/accounts/${a.accountId}/restore`);
    expect(late.status).toBe(409);
    expect((await late.json()).error.code).toBe('grace_period_over');

    const sweep = await c.services.lifecycle.sweep();
    expect(sweep.shredded).toEqual([a.accountId]);
    expect(sweep.errors).toEqual([]);
    const shown = await (await c.admin('GET', `/v1/accounts/${a.accountId}`)).json();
    expect(shown.state).toBe('shredded');
    expect((await c.admin('POST', `/v1/accounts/${a.accountId}/restore`)).status).toBe(410);
  });

  it('finishes a shred that a crash interrupted between the tombstone and the account row', async () => {
    const a = await createAccount(c);
    c.services.keyring.shred(a.accountId); // the process died right after this
    expect((await (await c.admin('GET', `/v1/accounts/${a.accountId}`)).json()).state).toBe('active');
    const sweep = await c.services.lifecycle.sweep();
    expect(sweep.shredded).toEqual([a.accountId]);
    expect((await (await c.admin('GET', `/v1/accounts/${a.accountId}`)).json()).state).toBe('shredded');
  });
});

describe('CLI', () => {
  it('deletes with --now, shows purge progress and verifies, against a running collector', async () => {
    const a = await createAccount(c);
    const keep = await createAccount(c);
    expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();

    const deleted = await cli(['accounts', 'delete', a.accountId, '--now']);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(deleted.json).toMatchObject({ accountId: a.accountId, state: 'shredded', destroyed: [`accounts/${a.accountId}.json`, 'keys v1', 'in-memory key cache (buffers zeroed)'] });
    expect(deleted.json.rowsToPurge.rollups).toBeGreaterThan(0);

    expect((await c.services.lifecycle.sweep()).purged).toEqual([a.accountId]);
    const shown = await cli(['accounts', 'show', a.accountId]);
    expect(shown.json).toMatchObject({ state: 'shredded', purge: { complete: true, pendingRows: 0 } });

    const verified = await cli(['verify', a.accountId]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.json).toMatchObject({ ok: true, keyring: { accountFile: false, filesMentioningAccount: [] } });
    const active = await cli(['verify', keep.accountId]);
    expect(active.code).toBe(1);
    expect(active.json.ok).toBe(false);
    expect(active.json.problems[0]).toMatch(/state is active/);
  });
});

describe('keyring backups', () => {
  let shredded: TestAccount;
  let kept: TestAccount;
  const oldBackup = join(tmp, 'before-shred.backup');

  it('a backup from before the shred does not resurrect the account, even into a lost keyring', async () => {
    shredded = await createAccount(c);
    kept = await createAccount(c);
    for (const a of [shredded, kept]) expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    const shreddedKeys = c.services.keyring.accountKeys(shredded.accountId)!;
    const keptKeys = c.services.keyring.accountKeys(kept.accountId)!;
    const shreddedData = await snapshot(c.services.store, shredded.accountId);

    const backup = await cli(['keyring', 'backup', '--out', oldBackup]);
    expect(backup.code, backup.stderr).toBe(0);
    expect(backup.json).toMatchObject({ file: oldBackup, masterKeyVersion: 1 });
    expect(Date.parse(backup.json.readableUntil)).toBeGreaterThan(Date.now());
    expect(statSync(oldBackup).mode & 0o777).toBe(0o600);
    // sealed under the master key: no account key is in it in any form
    const blob = readFileSync(oldBackup);
    for (const n of keyNeedles([shreddedKeys[0]!.secretKey, shreddedKeys[0]!.dataKey, shreddedKeys[0]!.macKey])) expect(blob.includes(n)).toBe(false);

    expect((await c.admin('DELETE', `/v1/accounts/${shredded.accountId}?now=true`)).status).toBe(200);

    // restored next to the live keyring: the tombstone wins
    const live = await cli(['keyring', 'restore', oldBackup]);
    expect(live.code, live.stderr).toBe(0);
    expect(live.json.restored).toEqual([]);
    expect(live.json.skipped).toContainEqual({ accountId: shredded.accountId, reason: 'tombstoned' });
    expect(c.services.keyring.accountKeys(shredded.accountId)).toBeUndefined();

    // disaster: the whole keyring directory is lost and restored from the old backup; storage
    // still says shredded, so the restore writes the tombstone again instead of the keys
    const dataDir = c.dataDir;
    await c.close();
    renameSync(join(dataDir, 'keyring'), join(tmp, 'lost-keyring'));
    const restored = await cli(['keyring', 'restore', oldBackup], { remote: false });
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.json.tombstonesApplied).toContain(shredded.accountId);
    expect(restored.json.restored).toContain(kept.accountId);
    expect(restored.json.restored).not.toContain(shredded.accountId);

    c = await start(dataDir);
    expect(c.services.keyring.isTombstoned(shredded.accountId)).toBe(true);
    expect(openable(shreddedData, inventory(c.services.keyring))).toEqual({ rollups: 0, dictionary: 0, batches: 0 });
    expect((await send(shredded)).status).toBe(410);
    expect(c.services.keyring.accountKeys(kept.accountId)![0]!.dataKey).toEqual(keptKeys[0]!.dataKey);
    expect((await send(kept)).status).toBe(202);
    await c.services.processor!.drain();
    expect(countPoints(await snapshot(c.services.store, kept.accountId), kept.accountId, keptKeys[0]!.dataKey)).toBe(20);
  });

  it('after two master key rotations (scheduled, then CLI) the old backup cannot be read at all', async () => {
    const keptKeys = c.services.keyring.accountKeys(kept.accountId)!;
    expect((await c.services.lifecycle.sweep()).masterRotation).toBeUndefined();
    offset += 31 * DAY;
    const sweep = await c.services.lifecycle.sweep();
    expect(sweep.masterRotation).toMatchObject({ version: 2, destroyed: [1], source: 'local' });
    expect((await c.services.lifecycle.sweep()).masterRotation).toBeUndefined(); // recorded: not due again

    const second = await cli(['keyring', 'rotate-master']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.json).toMatchObject({ version: 3, destroyed: [2] });
    expect(readdirSync(join(c.dataDir, 'master-keys'))).toEqual(['v3.key']);

    const refused = await cli(['keyring', 'restore', oldBackup]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/master key v1.*can never be restored/);
    try {
      c.services.keyring.restoreBackup(new Uint8Array(readFileSync(oldBackup)));
      expect.unreachable();
    } catch (e) {
      expect(isKeyringError(e) && e.code).toBe('master_key_missing');
    }

    // live entries were re-wrapped: the kept account is unaffected (in this process and a new one)
    expect(c.services.keyring.accountKeys(kept.accountId)![0]!.dataKey).toEqual(keptKeys[0]!.dataKey);
    expect((await send(kept)).status).toBe(202);
    await c.services.processor!.drain();

    // a recent backup restores into an empty keyring without the shredded account
    const recent = join(tmp, 'recent.backup');
    expect((await cli(['keyring', 'backup', '--out', recent])).json).toMatchObject({ masterKeyVersion: 3 });
    const dataDir = c.dataDir;
    await c.close();
    renameSync(join(dataDir, 'keyring'), join(tmp, 'lost-again'));
    const r = await cli(['keyring', 'restore', recent], { remote: false });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.restored).toContain(kept.accountId);
    expect(r.json.restored).not.toContain(shredded.accountId);
    expect(existsSync(join(dataDir, 'keyring', 'tombstones', `${shredded.accountId}.json`))).toBe(true);
    c = await start(dataDir);
    expect(c.services.keyring.accountKeys(shredded.accountId)).toBeUndefined();
    expect(c.services.keyring.accountKeys(kept.accountId)![0]!.dataKey).toEqual(keptKeys[0]!.dataKey);
  });
});
