/**
 * Keyring faults against the real collector (`cipherstat serve` child processes on one data
 * directory, embedded chDB), with the files damaged for real. Every acknowledged batch is
 * tracked; each case ends with "counted exactly once, nothing acknowledged lost" once the
 * file is back. Runs the built CLI (`npm test` builds first).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';

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

async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 90_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
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
  const store = await openStore({ dataDir }, {});
  try {
    for (const [accountId, ids] of acked.ids) {
      const stored = await store.query<{ batch_id: string; n: string }>('SELECT batch_id, count() AS n FROM batches WHERE account_id = {a:String} GROUP BY batch_id', { a: accountId });
      const byId = new Map(stored.map((r) => [r.batch_id, Number(r.n)]));
      for (const id of ids) expect(byId.get(id), `acknowledged batch ${id} of ${accountId}`).toBe(1);
      const processed = await store.query<{ n: string; accepted: string }>('SELECT count() AS n, sum(accepted) AS accepted FROM processed FINAL WHERE account_id = {a:String}', { a: accountId });
      expect(Number(processed[0]!.n), `processed batches of ${accountId}`).toBe(ids.size);
      expect(Number(processed[0]!.accepted), `accepted points of ${accountId}`).toBe(ids.size * POINTS);
    }
  } finally {
    await store.close();
  }
}

const keyFile = (dataDir: string, a: TestAccount) => join(dataDir, 'keyring', 'accounts', `${a.accountId}.json`);

/** Real damage to a real key file; returns the reason the collector must give. */
const damage = {
  missing: (path: string) => (unlinkSync(path), 'file missing and no tombstone (only a tombstone means deleted)'),
  truncated: (path: string) => (writeFileSync(path, readFileSync(path).subarray(0, 40)), 'not JSON (truncated or garbled)'),
  empty: (path: string) => (writeFileSync(path, ''), 'empty file'),
  garbled: (path: string) => {
    const j = JSON.parse(readFileSync(path, 'utf8')) as { sealed: string };
    const bytes = Buffer.from(j.sealed, 'base64');
    bytes[bytes.length - 5]! ^= 0xff; // one flipped byte inside the ciphertext
    writeFileSync(path, JSON.stringify({ ...j, sealed: bytes.toString('base64') }) + '\n');
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
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r) => r.processed === 3), 'first batches processed');
    await c.stop();

    // 2. An ingest-only node acknowledges more: stored, not processed yet.
    c = await serve(dir, { CIPHERSTAT_ROLE: 'ingest' });
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
    await until(async () => (await rowsOf(c.url, fine)).processed === acked.count(fine), 'fine account processed');
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
    for (const a of broken.values()) writeFileSync(keyFile(dir, a), originals.get(a.accountId)!);
    await new Promise((r) => setTimeout(r, 1000)); // past the keyring's file cache window
    for (const a of broken.values()) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(all[i]!)), 'every acknowledged batch processed');
    for (const a of all) expect(await counted(c.url, a), a.accountId).toBe(acked.count(a) * POINTS);
    expect(await (await fetch(`${c.url}/metrics`)).text()).toMatch(/^cipherstat_accounts_key_unavailable 0$/m);
    for (const a of broken.values()) expect(((await (await admin(c.url, 'GET', `/v1/accounts/${a.accountId}`)).json()) as { state: string }).state).toBe('active');
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });

  it('while running: refused with 503 from the moment the file is damaged until it is restored; nothing acknowledged lost', { timeout: 300_000 }, async () => {
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

    for (const a of broken.values()) writeFileSync(keyFile(dir, a), originals.get(a.accountId)!);
    await new Promise((r) => setTimeout(r, 1000));
    for (const a of all) expect((await acked.send(c.url, a)).status).toBe(202);
    await until(async () => (await Promise.all(all.map((a) => rowsOf(c.url, a)))).every((r, i) => r.processed === acked.count(all[i]!)), 'every acknowledged batch processed');
    for (const a of all) expect(await counted(c.url, a), a.accountId).toBe(acked.count(a) * POINTS);
    expect(c.logs('account key readable again')).toHaveLength(4);
    await c.stop();
    await expectExactlyOnce(dir, acked);
  });
});
