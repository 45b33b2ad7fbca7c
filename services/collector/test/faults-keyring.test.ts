/**
 * Keyring faults against the real collector (`cipherstat serve` child processes on one data
 * directory, embedded chDB), with the files damaged for real. Every acknowledged batch is
 * tracked; each case ends with "counted exactly once, nothing acknowledged lost" once the
 * file is back. Runs the built CLI (`npm test` builds first).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { loadMasterKeys } from '../src/keyring/index.js';
import { atomicWrite } from '../src/keyring/fsutil.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';
import { until } from './lifecycle-support.js';
import { connectionOf } from '../src/storage/index.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const run = promisify(execFile);
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'cipherstat-keyfaults-'));
  dirs.push(d);
  return d;
};

interface Child {
  child: ChildProcess;
  url: string;
  /** stdout and stderr so far (JSON log lines). */
  out: () => string;
  logs: (msg: string) => Record<string, unknown>[];
  stop: () => Promise<void>;
}

const env = (dataDir: string, extra: Record<string, string> = {}) => ({
  ...process.env,
  PORT: '0',
  HOST: '127.0.0.1',
  CIPHERSTAT_DATA_DIR: dataDir,
  CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN,
  CIPHERSTAT_LOG_LEVEL: 'info',
  CIPHERSTAT_RATE_LIMIT: '100000',
  ...extra,
});

/** `cipherstat serve` on `dataDir`; resolves once it listens, rejects with its output when it exits first. */
function serve(dataDir: string, extra: Record<string, string> = {}): Promise<Child> {
  const child = spawn(process.execPath, [CLI, 'serve'], { env: env(dataDir, extra), stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const logs = (msg: string) =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => typeof l.msg === 'string' && l.msg.startsWith(msg));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ child, url: m[1]!, out: () => out, logs, stop });
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(Object.assign(new Error(`collector exited (${code}): ${out.slice(-3000)}`), { out, code })));
  });
}

/** A start that must fail: its exit code and output. */
async function serveFails(dataDir: string, extra: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  try {
    const c = await serve(dataDir, extra);
    await c.stop();
  } catch (e) {
    const { out, code } = e as { out: string; code: number };
    return { code, out };
  }
  throw new Error('the collector started');
}

const cli = async (dataDir: string, args: string[]) => {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args, '--data-dir', dataDir, '--port', '1'], { env: env(dataDir) });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const { code, stdout, stderr } = e as { code: number; stdout: string; stderr: string };
    return { code, stdout, stderr };
  }
};

const admin = (url: string, method: string, path: string, body?: unknown) =>
  fetch(url + path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });

async function createAccount(url: string): Promise<TestAccount> {
  const res = await admin(url, 'POST', '/v1/accounts', {});
  if (res.status !== 201) throw new Error(`create account: ${res.status} ${await res.text()}`);
  return (await res.json()) as TestAccount;
}

const POINTS = 10;

/** Every batch that got a 202, per account. */
class Acked {
  readonly ids = new Map<string, Set<string>>();
  /** Posts one batch; like a client, comes back after `503 overloaded` (backpressure on a busy machine). */
  async send(url: string, a: TestAccount): Promise<Response> {
    const e = envelope(a, points(POINTS, (i) => ({ value: i })));
    let res = await post(url, e.bytes);
    for (let i = 0; i < 60 && res.status === 503; i++) {
      const body = (await res.clone().json()) as { error: { code: string } };
      if (body.error.code !== 'overloaded') break;
      await new Promise((r) => setTimeout(r, 1000));
      res = await post(url, e.bytes);
    }
    if (res.status === 202) {
      let set = this.ids.get(a.accountId);
      if (!set) this.ids.set(a.accountId, (set = new Set()));
      set.add(e.batchId);
    }
    return res;
  }
  count(a: TestAccount): number {
    return this.ids.get(a.accountId)?.size ?? 0;
  }
}

const rowsOf = async (url: string, a: TestAccount) => ((await (await admin(url, 'GET', `/v1/accounts/${a.accountId}`)).json()) as { rows: { batches: number; processed: number } }).rows;

/** The total the query API answers for the account: what its owner sees counted. */
async function counted(url: string, a: TestAccount): Promise<number> {
  const now = Date.now();
  const res = await fetch(`${url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'orders', aggregation: 'count', interval: 'day', from: now - 2 * 86_400_000, to: now + 86_400_000 }),
  });
  if (res.status !== 200) throw new Error(`query: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { series: { points: [number, number][] }[] };
  return body.series.flatMap((s) => s.points).reduce((n, [, v]) => n + v, 0);
}

/** Storage, read after the collector stopped: every acknowledged batch stored once, processed once. */
async function expectExactlyOnce(dataDir: string, acked: Acked): Promise<void> {
  const store = await openStore({ dataDir });
  try {
    for (const [accountId, ids] of acked.ids) {
      const stored = await connectionOf(store).query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM batches WHERE account_id = {a:String} GROUP BY batch_id', { a: accountId });
      const byId = new Map(stored.map((r) => [r.batch_id, Number(r.n)]));
      for (const id of ids) expect(byId.get(id), `acknowledged batch ${id} of ${accountId}`).toBe(1);
      const processed = await connectionOf(store).query<{ n: string; accepted: string }>('SELECT count() AS n, sum(accepted) AS accepted FROM processed FINAL WHERE account_id = {a:String}', { a: accountId });
      expect(Number(processed[0]!.n), `processed batches of ${accountId}`).toBe(ids.size);
      expect(Number(processed[0]!.accepted), `accepted points of ${accountId}`).toBe(ids.size * POINTS);
    }
  } finally {
    await store.close();
  }
}

const keyFile = (dataDir: string, a: TestAccount) => join(dataDir, 'keyring', 'accounts', `${a.accountId}.json`);

/** Real damage to a real key file; returns the reason the collector must give. */
// Damage and restore go through the keyring's own atomicWrite (temp file, rename): a running
// collector reading the file meanwhile sees the old or the new bytes, never a half-written
// file (which it would rightly report with another reason first, a second log line).
const damage = {
  missing: (path: string) => (unlinkSync(path), 'file missing and no tombstone (only a tombstone means deleted)'),
  truncated: (path: string) => (atomicWrite(path, readFileSync(path).subarray(0, 40)), 'not JSON (truncated or garbled)'),
  empty: (path: string) => (atomicWrite(path, ''), 'empty file'),
  garbled: (path: string) => {
    const j = JSON.parse(readFileSync(path, 'utf8')) as { sealed: string };
    const bytes = Buffer.from(j.sealed, 'base64');
    bytes[bytes.length - 5]! ^= 0xff; // one flipped byte inside the ciphertext
    atomicWrite(path, JSON.stringify({ ...j, sealed: bytes.toString('base64') }) + '\n');
    return 'cannot unwrap (wrong master key or altered file)';
  },
};
type Damage = keyof typeof damage | 'missing master version';

describe('an account key entry that cannot be read: 503 account_key_unavailable, batches wait, nothing acknowledged is lost', () => {
  it('at start (missing, truncated, empty, garbled, wrapped under a destroyed master key version): refused, waiting, reported; counted exactly once after the restore', { timeout: 600_000 }, async () => {
    expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
    const dir = tmp();
    const acked = new Acked();
    const kinds: Damage[] = ['missing', 'truncated', 'empty', 'garbled', 'missing master version'];

    // 1. Accounts with processed data.
    let c = await serve(dir);
    const fine = await createAccount(c.url);
    const broken = new Map<Damage, TestAccount>();
    for (const k of kinds) broken.set(k, await createAccount(c.url));
    const all = [fine, ...broken.values()];
    for (const a of all) for (let i = 0; i < 3; i++) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r) => r.processed === 3), 90_000, 'first batches processed');
    await c.stop();

    // 2. A node that does not process (CIPHERSTAT_PROCESSING=false) acknowledges more: stored, not processed yet.
    c = await serve(dir, { CIPHERSTAT_PROCESSING: 'false' });
    for (const a of all) for (let i = 0; i < 4; i++) expect((await acked.send(c.url, a)).status).toBe(202);
    await c.stop();

    // 3. The damage. "Wrapped under a missing version": a copy of the entry from before a
    //    master key rotation (which destroyed v1) put back in place.
    const old = readFileSync(keyFile(dir, broken.get('missing master version')!));
    const rotated = await cli(dir, ['keyring', 'rotate-master']);
    expect(rotated.code, rotated.stderr).toBe(0);
    const originals = new Map(all.map((a) => [a.accountId, readFileSync(keyFile(dir, a))]));
    const reasons = new Map<string, string>();
    for (const [k, a] of broken) {
      if (k === 'missing master version') {
        writeFileSync(keyFile(dir, a), old);
        reasons.set(a.accountId, 'wrapped under master key v1, which is not available');
      } else reasons.set(a.accountId, damage[k](keyFile(dir, a)));
    }

    // 4. A start with the damage: the fine account works, every damaged one is refused and waits.
    c = await serve(dir);
    expect((await acked.send(c.url, fine)).status).toBe(202);
    for (const a of broken.values()) {
      const res = await acked.send(c.url, a);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('60');
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('account_key_unavailable');
      // The same answer from every API: the account view and queries.
      const shown = (await (await admin(c.url, 'GET', `/v1/accounts/${a.accountId}`)).json()) as { state: string; keyProblem: { file: string; reason: string } };
      expect(shown.state).toBe('key_unavailable');
      expect(shown.keyProblem).toMatchObject({ file: keyFile(dir, a), reason: reasons.get(a.accountId) });
      const q = await fetch(`${c.url}/v1/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metric: 'orders', aggregation: 'count', interval: 'day', from: Date.now() - 86_400_000, to: Date.now() }),
      });
      expect(q.status).toBe(503);
      expect(((await q.json()) as { error: { code: string } }).error.code).toBe('account_key_unavailable');
    }
    // The fine account's waiting batches are processed; the damaged ones' stay waiting (unmarked).
    await until(async () => (await rowsOf(c.url, fine)).processed === acked.count(fine), 90_000, 'fine account processed');
    // Let the poll (every 5 s, batches older than 10 s) pass over the waiting ones more than once.
    await new Promise((r) => setTimeout(r, 12_000));
    for (const a of broken.values()) expect(await rowsOf(c.url, a)).toEqual(expect.objectContaining({ batches: 7, processed: 3 }));
    // Logged once per account (and hour), with the file and the reason; counted in /metrics.
    for (const a of broken.values()) {
      const lines = c.logs('account key unavailable').filter((l) => l.accountId === a.accountId);
      expect(lines, a.accountId).toHaveLength(1);
      expect(lines[0]).toMatchObject({ file: keyFile(dir, a), reason: reasons.get(a.accountId), level: 50 });
    }
    const metrics = await (await fetch(`${c.url}/metrics`)).text();
    expect(metrics).toMatch(/^cipherstat_accounts_key_unavailable 5$/m);
    expect(metrics).toMatch(/^cipherstat_batch_rejects_total\{code="account_key_unavailable"\} 5$/m);

    // 5. The operator restores the files: the waiting batches are processed, ingest accepts again.
    for (const a of broken.values()) atomicWrite(keyFile(dir, a), originals.get(a.accountId)!);
    await new Promise((r) => setTimeout(r, 1000)); // past the keyring's file cache window
    for (const a of broken.values()) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(all[i]!)), 90_000, 'every acknowledged batch processed');
    for (const a of all) expect(await counted(c.url, a), a.accountId).toBe(acked.count(a) * POINTS);
    expect(await (await fetch(`${c.url}/metrics`)).text()).toMatch(/^cipherstat_accounts_key_unavailable 0$/m);
    for (const a of broken.values()) expect(((await (await admin(c.url, 'GET', `/v1/accounts/${a.accountId}`)).json()) as { state: string }).state).toBe('active');
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });

  it('while running: refused with 503 from the moment the file is damaged until it is restored; nothing acknowledged lost', async () => {
    const dir = tmp();
    const acked = new Acked();
    const c = await serve(dir);
    const kinds = ['missing', 'truncated', 'empty', 'garbled'] as const;
    const fine = await createAccount(c.url);
    const broken = new Map<(typeof kinds)[number], TestAccount>();
    for (const k of kinds) broken.set(k, await createAccount(c.url));
    const all = [fine, ...broken.values()];
    for (const a of all) for (let i = 0; i < 3; i++) {
      const res = await acked.send(c.url, a);
      expect(res.status, await res.text()).toBe(202);
    }

    const originals = new Map(all.map((a) => [a.accountId, readFileSync(keyFile(dir, a))]));
    const reasons = new Map([...broken].map(([k, a]) => [a.accountId, damage[k](keyFile(dir, a))]));
    await new Promise((r) => setTimeout(r, 1000)); // past the keyring's file cache window
    for (let round = 0; round < 3; round++) {
      expect((await acked.send(c.url, fine)).status).toBe(202);
      for (const a of broken.values()) {
        const res = await acked.send(c.url, a);
        expect(res.status, a.accountId).toBe(503);
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe('account_key_unavailable');
      }
    }
    for (const a of broken.values()) {
      const lines = c.logs('account key unavailable').filter((l) => l.accountId === a.accountId);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ file: keyFile(dir, a), reason: reasons.get(a.accountId) });
      const shown = (await (await admin(c.url, 'GET', `/v1/accounts/${a.accountId}`)).json()) as { state: string; keyProblem: { refusedBatches: number } };
      expect(shown).toMatchObject({ state: 'key_unavailable', keyProblem: { refusedBatches: 3 } });
    }
    expect(await (await fetch(`${c.url}/metrics`)).text()).toMatch(/^cipherstat_accounts_key_unavailable 4$/m);

    for (const a of broken.values()) atomicWrite(keyFile(dir, a), originals.get(a.accountId)!);
    await new Promise((r) => setTimeout(r, 1000));
    for (const a of all) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(all[i]!)), 90_000, 'every acknowledged batch processed');
    for (const a of all) expect(await counted(c.url, a), a.accountId).toBe(acked.count(a) * POINTS);
    expect(c.logs('account key readable again')).toHaveLength(4);
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });
});

/** Every key file of a data directory (keyring and master keys) with its bytes. */
function keyFiles(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name !== '.lock') out.set(p, readFileSync(p).toString('base64'));
    }
  };
  for (const d of ['keyring', 'master-keys']) if (existsSync(join(dataDir, d))) walk(join(dataDir, d));
  return out;
}

/** A data directory with a collector's keyring, two accounts and processed data; the collector stopped. */
async function populated(): Promise<{ dir: string; acked: Acked; accounts: TestAccount[]; keyId: string; backup: string }> {
  const dir = tmp();
  const acked = new Acked();
  const c = await serve(dir);
  const accounts = [await createAccount(c.url), await createAccount(c.url)];
  for (const a of accounts) for (let i = 0; i < 2; i++) expect((await acked.send(c.url, a)).status).toBe(202);
  await until(async () => (await Promise.all(accounts.map((a) => rowsOf(c.url, a)))).every((r) => r.processed === 2), 90_000, 'processed');
  const keyId = ((await (await fetch(`${c.url}/v1/collector-key`)).json()) as { keyId: string }).keyId;
  await c.stop();
  const backup = join(dir, '..', `${dir.split('/').pop()}.keyring-backup`);
  dirs.push(backup);
  const b = await cli(dir, ['keyring', 'backup', '--out', backup]);
  expect(b.code, b.stderr).toBe(0);
  return { dir, acked, accounts, keyId, backup };
}

/** Starts on `dir` again, sends one more batch per account (with the collector key the accounts were created with) and checks every total. */
async function recovers(dir: string, acked: Acked, accounts: TestAccount[], keyId: string): Promise<Child> {
  const c = await serve(dir);
  expect(((await (await fetch(`${c.url}/v1/collector-key`)).json()) as { keyId: string }).keyId).toBe(keyId);
  for (const a of accounts) expect((await acked.send(c.url, a)).status).toBe(202);
  await until(async () => (await Promise.all(accounts.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(accounts[i]!)), 90_000, 'processed');
  for (const a of accounts) expect(await counted(c.url, a)).toBe(acked.count(a) * POINTS);
  return c;
}

async function recoversExactly(dir: string, acked: Acked, accounts: TestAccount[], keyId: string): Promise<void> {
  await (await recovers(dir, acked, accounts, keyId)).stop();
  await expectExactlyOnce(dir, acked);
}

describe('keys are created once: a start that lacks what opens the keyring refuses, says what to restore, writes nothing', () => {
  it('master key missing: refused naming the file to restore, no key generated; counted exactly once after the restore', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    const key = join(dir, 'master-keys', 'v1.key');
    const saved = readFileSync(key);
    unlinkSync(key);
    const before = keyFiles(dir);
    const { code, out } = await serveFails(dir);
    expect(code).not.toBe(0);
    expect(out).toContain('master key missing');
    expect(out).toContain(`Restore ${key} from your master key backup`);
    expect(out).toContain('Nothing was written');
    expect(out).not.toContain('GENERATED A NEW MASTER KEY');
    expect(readdirSync(join(dir, 'master-keys'))).toEqual([]);
    expect(keyFiles(dir)).toEqual(before);
    writeFileSync(key, saved, { mode: 0o600 });
    await recoversExactly(dir, acked, accounts, keyId);
  });

  it('wrong master key: refused as the wrong key (not a damaged file), nothing written; counted exactly once after the restore', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    const key = join(dir, 'master-keys', 'v1.key');
    const saved = readFileSync(key);
    writeFileSync(key, randomBytes(32).toString('base64') + '\n');
    const before = keyFiles(dir);
    const { code, out } = await serveFails(dir);
    expect(code).not.toBe(0);
    expect(out).toContain('transport.json: cannot unwrap (wrong master key or altered file)');
    expect(out).toContain('is not the one this keyring was written with: restore the right one from your master key backup');
    expect(keyFiles(dir)).toEqual(before);
    writeFileSync(key, saved);
    await recoversExactly(dir, acked, accounts, keyId);
  });

  it('a stray master key version is ignored with a warning, never adopted; removing it changes nothing', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    const stray = join(dir, 'master-keys', 'v2.key');
    writeFileSync(stray, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    const c = await recovers(dir, acked, accounts, keyId);
    const warned = c.logs('master key file v2.key is not part of any recorded rotation: ignored');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ path: stray, current: 1 });
    // New entries are wrapped under the recorded version, and the record did not move.
    const created = await createAccount(c.url);
    expect(JSON.parse(readFileSync(keyFile(dir, created), 'utf8')).masterKeyVersion).toBe(1);
    expect(JSON.parse(readFileSync(join(dir, 'keyring', 'master-rotation.json'), 'utf8'))).toMatchObject({ masterKeyVersion: 1 });
    expect(JSON.parse(readFileSync(join(dir, 'keyring', 'master-rotation.json'), 'utf8')).pending).toBeUndefined();
    await c.stop();
    const check = await cli(dir, ['keyring', 'check', '--json']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: true, problems: [], ignoredMasterKeyVersions: [2] });
    unlinkSync(stray);
    const again = await recovers(dir, acked, [...accounts], keyId);
    expect(again.logs('master key file')).toHaveLength(0);
    expect((await admin(again.url, 'GET', `/v1/accounts/${created.accountId}`)).status).toBe(200);
    expect(((await (await admin(again.url, 'GET', `/v1/accounts/${created.accountId}`)).json()) as { state: string }).state).toBe('active');
    await again.stop();
    await expectExactlyOnce(dir, acked);
  });

  for (const fault of ['missing', 'garbled'] as const) {
    it(`transport.json ${fault}: refused with what to restore, never regenerated; the keyring backup brings the same collector key back`, async () => {
      const { dir, acked, accounts, keyId, backup } = await populated();
      const transport = join(dir, 'keyring', 'transport.json');
      if (fault === 'missing') unlinkSync(transport);
      else damage.garbled(transport);
      const before = keyFiles(dir);
      const { code, out } = await serveFails(dir);
      expect(code).not.toBe(0);
      if (fault === 'missing') {
        expect(out).toContain(`${transport} is missing, but the keyring holds 2 account(s) and 0 tombstone(s)`);
        expect(out).toContain('Restore it from a keyring backup (`cipherstat keyring restore FILE`)');
      } else {
        expect(out).toContain('transport.json: cannot unwrap (wrong master key or altered file); transport.json is damaged: restore it from a keyring backup');
      }
      expect(keyFiles(dir)).toEqual(before);
      const check = await cli(dir, ['keyring', 'check']);
      expect(check.code).toBe(1);
      expect(check.stdout).toMatch(/transport\.json\t(corrupt_entry\tmissing|unwrap_failed\tcannot unwrap)/);
      const restored = await cli(dir, ['keyring', 'restore', backup]);
      expect(restored.code, restored.stderr).toBe(0);
      await recoversExactly(dir, acked, accounts, keyId);
    });
  }
});

describe('cipherstat keyring new-transport-key', () => {
  it('mints a collector key only when asked, over a keyring whose transport.json is lost; the accounts keep working with it', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    unlinkSync(join(dir, 'keyring', 'transport.json'));
    const made = await cli(dir, ['keyring', 'new-transport-key', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const fresh = JSON.parse(made.stdout) as { keyId: string; publicKey: string };
    expect(fresh.keyId).not.toBe(keyId);
    const c = await serve(dir);
    expect(((await (await fetch(`${c.url}/v1/collector-key`)).json()) as { keyId: string }).keyId).toBe(fresh.keyId);
    // A client still pinned to the old key is refused as such; one with the new key is counted.
    const old = envelope(accounts[0]!, points(POINTS));
    expect((await post(c.url, old.bytes)).status).toBe(400);
    const moved = accounts.map((a) => ({ ...a, collectorKey: fresh }));
    for (const a of moved) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(moved.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(moved[i]!)), 90_000, 'processed');
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });
});

describe('cipherstat keyring check', () => {
  it('lists every entry that cannot be read with the file and the reason (human and --json), exit 1; exit 0 once restored', async () => {
    const { dir, accounts } = await populated();
    const [a, b] = accounts as [TestAccount, TestAccount];
    const saved = [readFileSync(keyFile(dir, a)), readFileSync(keyFile(dir, b))];
    damage.truncated(keyFile(dir, a));
    damage.garbled(keyFile(dir, b));
    const human = await cli(dir, ['keyring', 'check']);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain('3 entries, 2 cannot be read');
    expect(human.stdout).toContain(`accounts/${a.accountId}.json\tcorrupt_entry\tnot JSON (truncated or garbled)`);
    expect(human.stdout).toContain(`accounts/${b.accountId}.json\tunwrap_failed\tcannot unwrap (wrong master key or altered file)`);
    const json = await cli(dir, ['keyring', 'check', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: false,
      entries: 3,
      problems: expect.arrayContaining([
        { file: `accounts/${a.accountId}.json`, accountId: a.accountId, code: 'corrupt_entry', reason: 'not JSON (truncated or garbled)' },
        { file: `accounts/${b.accountId}.json`, accountId: b.accountId, code: 'unwrap_failed', reason: 'cannot unwrap (wrong master key or altered file)' },
      ]),
    });
    // serve checks the same at start: each damaged account logged with file and reason before it listens
    const c = await serve(dir);
    const unreadable = c.logs('keyring checked')[0];
    expect(unreadable).toMatchObject({ entries: 3, unreadable: 2 });
    expect(c.logs('account key unavailable').map((l) => l.accountId).sort()).toEqual([a.accountId, b.accountId].sort());
    expect(await (await fetch(`${c.url}/metrics`)).text()).toMatch(/^cipherstat_accounts_key_unavailable 2$/m);
    await c.stop();
    writeFileSync(keyFile(dir, a), saved[0]!);
    writeFileSync(keyFile(dir, b), saved[1]!);
    const ok = await cli(dir, ['keyring', 'check']);
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.stdout).toContain('3 entries, 0 cannot be read');
  });
});

describe('an interrupted master key rotation', () => {
  it('is reported (/metrics, verify, keyring check) while it cannot finish and resumed by the next lifecycle pass; nothing acknowledged lost', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    const [a, b] = accounts as [TestAccount, TestAccount];
    // The state a crash right after the rotation recorded its new version leaves: v2 current,
    // nothing re-wrapped yet. (The real code path, stopped where kill -9 would stop it.)
    const master = loadMasterKeys({ dataDir: dir, log: { info() {}, warn() {} } });
    expect(master.rotate()).toBe(2);
    expect(readdirSync(join(dir, 'master-keys')).sort()).toEqual(['v1.key', 'v2.key']);
    // ... and one damaged entry that keeps the re-wrap from finishing.
    const saved = readFileSync(keyFile(dir, b));
    damage.truncated(keyFile(dir, b));

    const c = await serve(dir, { CIPHERSTAT_LIFECYCLE_INTERVAL_MS: '500' });
    expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => c.logs('lifecycle step failed').length > 0 && true, 90_000, 'the resume to fail');
    expect(await (await fetch(`${c.url}/metrics`)).text()).toMatch(/^cipherstat_master_key_rotation_incomplete 1$/m);
    const verify = (await (await admin(c.url, 'GET', `/v1/accounts/${a.accountId}/verify`)).json()) as { problems: string[] };
    expect(verify.problems).toContainEqual(expect.stringMatching(/^master key rotation to v2 \(started .*\) has not finished/));
    const check = await cli(dir, ['keyring', 'check', '--json']);
    expect(JSON.parse(check.stdout)).toMatchObject({ ok: false, rotationInProgress: { version: 2 } });
    expect(readdirSync(join(dir, 'master-keys')).sort()).toEqual(['v1.key', 'v2.key']);

    // The operator restores the file: the next pass finishes the rotation.
    writeFileSync(keyFile(dir, b), saved);
    await until(async () => readdirSync(join(dir, 'master-keys')).length === 1 && true, 90_000, 'the rotation to finish');
    expect(readdirSync(join(dir, 'master-keys'))).toEqual(['v2.key']);
    await until(async () => /^cipherstat_master_key_rotation_incomplete 0$/m.test(await (await fetch(`${c.url}/metrics`)).text()), 90_000, 'metric cleared');
    const record = JSON.parse(readFileSync(join(dir, 'keyring', 'master-rotation.json'), 'utf8'));
    expect(record).toMatchObject({ masterKeyVersion: 2 });
    expect(record.pending).toBeUndefined();
    for (const f of ['transport.json', `accounts/${a.accountId}.json`, `accounts/${b.accountId}.json`]) {
      expect(JSON.parse(readFileSync(join(dir, 'keyring', f), 'utf8')).masterKeyVersion, f).toBe(2);
    }
    await c.stop();
    const again = await recovers(dir, acked, accounts, keyId);
    await again.stop();
    await expectExactlyOnce(dir, acked);
  });

  it('with nothing in the way, the next start resumes and finishes it', async () => {
    const { dir, acked, accounts, keyId } = await populated();
    const master = loadMasterKeys({ dataDir: dir, log: { info() {}, warn() {} } });
    expect(master.rotate()).toBe(2);
    const c = await recovers(dir, acked, accounts, keyId);
    await until(async () => readdirSync(join(dir, 'master-keys')).length === 1 && true, 90_000, 'the rotation to finish');
    expect(readdirSync(join(dir, 'master-keys'))).toEqual(['v2.key']);
    expect(c.logs('master key rotated')).toHaveLength(1);
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });
});
