/**
 * The tick worker thread (dist/process/tick-worker.js, built by `npm test`'s pretest): it computes the
 * same tick as the inline path, keeps its caches across the thread boundary, survives a crash
 * without losing or double-counting a batch, and a collector running it answers queries like
 * one that does not. No test here sets a shorter timeout than the suite's, which is sized for a
 * loaded machine (vitest.config.ts): under `npm run test:stress` two of them ran past 60 s and 120 s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { encodeInner, keyPair, randomBytes, seal, toHex, type Point } from '@cipherstat/protocol';
import { computeTick, rollupRefs, TickState, type TickAccount, type TickInput, type SentTickOutput, type TickKey, type TickOutput } from '../src/process/tick.js';
import { TickWorker } from '../src/process/worker-client.js';
import { createLogger } from '../src/logger.js';
import { openDict, openRollup } from '../src/at-rest/records.js';
import { Processor } from '../src/process/processor.js';
import type { BatchRow } from '../src/storage/types.js';
import { ADMIN_TOKEN, envelope, post, startTestCollector, type TestAccount } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';
import { keyNeedlesOf } from './support/memory.js';
import { tempDirs } from './support/temp-dirs.js';

const WORKER = fileURLToPath(new URL('../dist/process/tick-worker.js', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const built = existsSync(WORKER) && existsSync(CLI);
if (!built) console.warn('processor-worker tests skipped: services/collector/dist is missing (run `npx tsc -b packages/protocol services/collector`)');

const tmp = tempDirs('cipherstat-');
const children: ChildProcess[] = [];
afterAll(() => {
  for (const ch of children) if (ch.exitCode === null) ch.kill('SIGKILL');
});

// ---------------------------------------------------------------------------------------------
// Inline and worker compute the same tick.

const key = (version: number): TickKey => ({ version, ...keyPair(), dataKey: randomBytes(32), macKey: randomBytes(32) });
const NOW = Date.now();
const pts = (n: number, seed: number): Point[] =>
  Array.from({ length: n }, (_, i) => ({
    id: i,
    kind: i % 3 ? 'counter' : 'histogram',
    name: i % 3 ? 'orders' : 'page.load_ms',
    value: (i * 7 + seed) % 50,
    time: NOW - 1000 - ((i * 61_000 + seed) % 7_200_000),
    tags: i % 4 ? ({ country: ['DE', 'FR', 'US'][(i + seed) % 3]!, page: `/p/${(i * seed) % 5}` } as Record<string, string>) : {},
  }));

/** Tick input: an account with two key versions (batches sealed to either), a deleted one, a confidential one, bad batches. */
function tickInput(): { input: TickInput; accounts: Map<string, TickAccount | null> } {
  const a: TickAccount = { keys: [key(1), key(2)], retentionDays: 30, confidential: false };
  const c: TickAccount = { keys: [key(1)], retentionDays: 90, confidential: true };
  const accounts = new Map<string, TickAccount | null>([['acct_a', a], ['acct_b', null], ['acct_c', c]]);
  const sealed: { accountId: string; batchId: string; bytes: Uint8Array; pointCount: number }[] = [];
  const batch = (accountId: string, to: TickKey, points: Point[], o: { batchId?: string; innerBatchId?: string } = {}) => {
    const batchId = o.batchId ?? toHex(randomBytes(16));
    sealed.push({ accountId, batchId, bytes: seal(encodeInner(accountId, o.innerBatchId ?? batchId, points), to.publicKey), pointCount: points.length });
  };
  for (let i = 0; i < 6; i++) batch('acct_a', a.keys[i % 2]!, pts(40, i));
  batch('acct_a', a.keys[1]!, [...pts(10, 9), { id: 10, kind: 'counter', name: 'bad name!', value: 1, time: NOW, tags: {} }]);
  batch('acct_a', a.keys[1]!, pts(5, 3), { innerBatchId: toHex(randomBytes(16)) }); // batch_mismatch
  sealed.push({ accountId: 'acct_a', batchId: toHex(randomBytes(16)), bytes: randomBytes(300), pointCount: 50 }); // garbage
  batch('acct_b', key(1), pts(7, 1));
  batch('acct_c', c.keys[0]!, pts(12, 4));
  // The sealed bytes as views into one buffer, as storage may hand them over.
  const all = new Uint8Array(sealed.reduce((n, s) => n + s.bytes.length + 3, 0));
  let at = 3;
  const rows = sealed.map((s) => {
    all.set(s.bytes, at);
    at += s.bytes.length + 3;
    return { accountId: s.accountId, batchId: s.batchId, pointCount: s.pointCount, receivedAt: NOW, sealed: all.subarray(at - s.bytes.length - 3, at - 3) };
  });
  return { input: { rows, accounts, now: NOW, part: 'p1' }, accounts };
}

/** The output with ciphertexts opened (their nonces are random), CPU costs as points only (times vary). */
function readable(out: TickOutput, accounts: Map<string, TickAccount | null>) {
  const dataKey = (id: string) => accounts.get(id)!.keys.at(-1)!.dataKey;
  const { insert, timings, ...rest } = out;
  // The insert body encodes exactly the rows (random nonces aside: checked in storage-schema.test.ts); times vary.
  expect(insert.rowEnds.length).toBe(out.rollups.length);
  expect(Object.keys(timings).sort()).toEqual(['aggregate', 'encode', 'open', 'seal']);
  return {
    ...rest,
    costs: Object.fromEntries(Object.entries(out.costs).map(([id, c]) => [id, c.points])),
    rollups: out.rollups.map(({ agg, ...r }) => ({ ...r, plain: toHex(openRollup(dataKey(r.accountId), r, agg) ?? new Uint8Array()) })),
    dict: out.dict.map(({ ciphertext, ...d }) => ({ ...d, entry: openDict(dataKey(d.accountId), d.accountId, d.kind, d.pseudonym, ciphertext) })),
  };
}

/**
 * The rows of a worker's output as written (its insert body), each with the identity of the inline
 * computation's row at the same place: the worker's ciphertext must open under that identity (it
 * is bound as associated data) for `readable` to compare the plaintexts. The sealed field of a
 * TSV row is the one that opens, whatever its column.
 */
function rowsOfInsert(out: SentTickOutput, inline: TickOutput, accounts: Map<string, TickAccount | null>): TickOutput['rollups'] {
  const body = Buffer.from(out.insert.body);
  expect(out.insert.rowEnds.length).toBe(inline.rollups.length);
  const unescape = (f: Buffer) => {
    const bytes: number[] = [];
    for (let i = 0; i < f.length; i++) {
      if (f[i] !== 0x5c) bytes.push(f[i]!);
      else bytes.push({ t: 0x09, n: 0x0a, r: 0x0d, '\\': 0x5c }[String.fromCharCode(f[++i]!)]!);
    }
    return new Uint8Array(bytes);
  };
  let start = 0;
  return inline.rollups.map((r, i) => {
    const row = body.subarray(start, out.insert.rowEnds[i]! - 1);
    start = out.insert.rowEnds[i]!;
    const fields: Buffer[] = [];
    for (let at = 0; at <= row.length; ) {
      const tab = row.indexOf(0x09, at);
      const end = tab < 0 ? row.length : tab;
      fields.push(row.subarray(at, end));
      at = end + 1;
    }
    const dataKey = accounts.get(r.accountId)!.keys.at(-1)!.dataKey;
    const agg = fields.map(unescape).find((f) => f.length > 40 && openRollup(dataKey, r, f) !== null);
    expect(agg).toBeDefined();
    return { ...r, agg: agg! };
  });
}

describe.skipIf(!built)('tick in a worker thread', () => {
  it('computes what the inline path computes, with the same cache semantics; a retired thread takes its caches with it', async () => {
    const lines: string[] = [];
    const remote = new TickWorker(pathToFileURL(WORKER), createLogger({ destination: { write: (l: string) => void lines.push(l) } }));
    try {
      let state = new TickState();
      const { input, accounts } = tickInput();
      const both = async (i: TickInput) => {
        const computed = computeTick(state, i);
        const local = readable(computed, accounts);
        // The rows stay in the worker (tick.ts forTransfer): their keys and the insert body cross.
        const out = await remote.tick(i);
        expect('rollups' in out).toBe(false);
        expect(rollupRefs(out, i.part)).toEqual(rollupRefs(computed, i.part));
        const { rollupKeys: _keys, ...sent } = out;
        expect(readable({ ...sent, rollups: rowsOfInsert(out, computed, accounts) }, accounts)).toEqual(local);
        return local;
      };

      const first = await both(input);
      expect(first.rollups.length).toBeGreaterThan(10);
      expect(first.rollups.every((r) => r.plain.length > 0)).toBe(true);
      expect(first.dict.length).toBeGreaterThan(5);
      expect(first.dict.every((d) => d.entry !== null)).toBe(true);
      const codes = Object.fromEntries(first.rejects.map((r) => [`${r.accountId}/${r.code}`, r.count]));
      expect(codes).toMatchObject({ 'acct_a/inner_auth_failed': 1, 'acct_a/batch_mismatch': 1, 'acct_b/account_deleted': 7, 'acct_a/invalid_name': 1 });
      expect(first.batchRejects).toEqual({ inner_auth_failed: 1, batch_mismatch: 1, account_deleted: 1 });
      expect(first.pointsProcessed).toBe(6 * 40 + 10 + 12);
      expect(first.confidential.map((c) => c.accountId)).toEqual(['acct_c']);
      expect(first.processed).toHaveLength(input.rows.length);

      // Dictionary entries are emitted once per thread (the processor writes what a failed tick
      // emitted with the next one: processor.ts `unwritten`)...
      expect((await both(input)).dict).toEqual([]);
      // ...and a retired thread takes every cache with it: the next tick runs in a new thread,
      // which derives and emits everything again, as fresh inline state does.
      await remote.retire();
      expect(remote.heapSnapshot()).toBeUndefined();
      state = new TickState();
      const again = await both(input);
      expect(again.dict.map((d) => d.pseudonym)).toEqual(first.dict.map((d) => d.pseudonym));
      // Cardinality limits reach the worker too (they were once left out of the message, and the
      // worker ran without any): from fresh state on both sides, the same series are refused.
      await remote.retire();
      state = new TickState();
      const limited = await both({ ...input, limits: { seriesPerMetric: 4, newValuesPerHour: 1_000_000 } });
      expect(limited.rejects.some((r) => r.code === 'series_limit')).toBe(true);
      expect(limited.pointsProcessed).toBeLessThan(first.pointsProcessed);
      expect(lines.filter((l) => l.includes('tick worker started'))).toHaveLength(3);
      expect(lines.join('')).not.toContain('tick worker failed');
    } finally {
      await remote.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// A crashed worker: the tick fails, nothing is written twice, a new worker finishes the work.

describe.skipIf(!built)('processor with a worker thread', () => {
  it('retries the batches of a tick whose worker died, exactly once', async () => {
    const c = await startTestCollector({ config: { processing: false } }); // stores batches, processes nothing
    try {
      const account = (await c.services.accounts.create({})) as unknown as TestAccount;
      for (let i = 0; i < 3; i++) expect((await post(c.url, envelope(account, pts(20, i)).bytes)).status).toBe(202);
      // The first worker exits on its first tick; the next one is the real worker.
      const marker = join(tmp('worker'), 'crashed');
      const code = `import { existsSync, writeFileSync } from 'node:fs';
        import { parentPort } from 'node:worker_threads';
        if (existsSync(${JSON.stringify(marker)})) await import(${JSON.stringify(pathToFileURL(WORKER).href)});
        else { writeFileSync(${JSON.stringify(marker)}, ''); parentPort.once('message', () => process.exit(7)); }`;
      const { store, keyring, accounts, metrics, log } = c.services;
      const p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, workerUrl: new URL(`data:text/javascript,${encodeURIComponent(code)}`) });
      const count = async () => {
        const [r] = await connectionOf(store).query<{ n: string; acc: string }>('SELECT count() AS n, sum(accepted) AS acc FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
        return { batches: Number(r!.n), accepted: Number(r!.acc) };
      };

      expect(await p.poll()).toBe(3);
      await p.drain();
      expect(existsSync(marker)).toBe(true);
      expect(c.logs.join('')).toContain('tick worker exited with code 7');
      expect(await count()).toEqual({ batches: 0, accepted: 0 });

      expect(await p.poll()).toBe(3); // left for the poll, as after any failed tick
      await p.drain();
      expect(await count()).toEqual({ batches: 3, accepted: 60 });
      const [r] = await connectionOf(store).query<{ unmarked: string; parts: string }>(
        'SELECT countIf(part NOT IN (SELECT part FROM processed)) AS unmarked, uniqExact(part) AS parts FROM rollups WHERE account_id = {a:String}',
        { a: account.accountId },
      );
      expect(Number(r!.unmarked)).toBe(0);
      expect(Number(r!.parts)).toBe(1);
      expect(c.logs.filter((l) => l.includes('tick worker started'))).toHaveLength(2);
      await p.stop();
    } finally {
      await c.stop();
    }
  });

  it('forgetting an account (shred, wipe) leaves nothing of it in the tick worker: keys, pseudonyms and dictionary state go with the retired thread', async () => {
    const c = await startTestCollector({ config: { processing: false } }); // stores batches, processes nothing
    try {
      const gone = (await c.services.accounts.create({})) as unknown as TestAccount;
      const kept = (await c.services.accounts.create({})) as unknown as TestAccount;
      const { store, keyring, accounts, metrics, log } = c.services;
      const p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, workerUrl: pathToFileURL(WORKER) });
      // Dictionary entries written, per account (counted at the insert: storage may merge duplicates away).
      const inserted = new Map<string, number>();
      const insertDictionary = store.insertDictionary.bind(store);
      store.insertDictionary = async (rows) => {
        await insertDictionary(rows);
        for (const r of rows) inserted.set(r.accountId, (inserted.get(r.accountId) ?? 0) + 1);
      };
      const dictRows = async (a: TestAccount) => inserted.get(a.accountId) ?? 0;
      const snapshot = async () => {
        const chunks: Buffer[] = [];
        for await (const chunk of (await p.workerHeapSnapshot())!) chunks.push(Buffer.from(chunk as Buffer));
        return Buffer.concat(chunks);
      };
      const send = async (a: TestAccount, seed: number) => {
        expect((await post(c.url, envelope(a, pts(20, seed)).bytes)).status).toBe(202);
        expect(await p.poll()).toBe(1);
        await p.drain();
      };
      await send(gone, 1);
      await send(kept, 2);
      const written = { gone: await dictRows(gone), kept: await dictRows(kept) };
      expect(written.gone).toBeGreaterThan(0);
      expect((await snapshot()).includes(Buffer.from(gone.accountId))).toBe(true); // the search sees what it looks for
      // Known entries are not written again by the same thread.
      await send(kept, 3);
      expect(await dictRows(kept)).toBe(written.kept);

      const { needles } = keyNeedlesOf(c, gone.accountId);
      await p.forgetAccount(gone.accountId);
      expect(p.workerHeapSnapshot(), 'the thread that held the account was retired').toBeUndefined();
      // The next tick runs in a new thread: it derives the other account's state again (its
      // dictionary entries are emitted and written again) and holds nothing of the forgotten one.
      await send(kept, 4);
      expect(await dictRows(kept)).toBeGreaterThan(written.kept);
      const heap = await snapshot();
      expect(heap.includes(Buffer.from(kept.accountId))).toBe(true);
      expect(heap.includes(Buffer.from(gone.accountId))).toBe(false);
      expect(needles.filter((n) => heap.includes(n))).toEqual([]);
      // Its dictionary state went too: its entries are emitted again when it sends again.
      await send(gone, 5);
      expect(await dictRows(gone)).toBeGreaterThan(written.gone);
      expect(c.logs.join('')).not.toContain('tick worker failed');
      await p.stop();
    } finally {
      await c.stop();
    }
  });

  it('processes on the main thread after the worker failed three ticks in a row (a file that does not load)', async () => {
    const c = await startTestCollector({ config: { processing: false } });
    try {
      const account = (await c.services.accounts.create({})) as unknown as TestAccount;
      for (let i = 0; i < 3; i++) expect((await post(c.url, envelope(account, pts(20, i)).bytes)).status).toBe(202);
      const { store, keyring, accounts, metrics, log } = c.services;
      const broken = new URL(`data:text/javascript,${encodeURIComponent("throw new Error('broken worker file')")}`);
      const p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, workerUrl: broken });
      const processed = async () => Number((await connectionOf(store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId }))[0]!.n);
      let attempts = 0;
      while ((await processed()) === 0 && attempts < 6) {
        attempts++;
        await p.poll(); // failed ticks leave their batches to the poll
        await p.drain();
      }
      expect(attempts).toBe(4); // three failed ticks, then inline
      expect(await processed()).toBe(60);
      expect(c.logs.join('')).toContain('processing on the main thread from now on');
      await p.stop();
    } finally {
      await c.stop();
    }
  });

  it('drops the tick computed ahead when the one before it fails; the retry counts once and writes the dictionary', async () => {
    const c = await startTestCollector({ config: { processing: false } });
    try {
      const { store, keyring, accounts, metrics, log } = c.services;
      const { accountId } = await accounts.create({});
      const publicKey = (await keyring.accountKeys(accountId))!.at(-1)!.publicKey;
      // 1100 batches: a full tick of 1000, and the next one computed while the first writes.
      const rows: BatchRow[] = Array.from({ length: 1100 }, (_, i) => {
        const batchId = toHex(randomBytes(16));
        const points: Point[] = [{ id: 0, kind: 'counter', name: `m${i % 3}`, value: 1, time: NOW - 1000, tags: { k: `v${i % 700}` } }];
        return { accountId, batchId, receivedAt: NOW, createdAt: NOW, pointCount: 1, sdk: 'test/0', sealed: seal(encodeInner(accountId, batchId, points), publicKey), expiresAt: NOW + 86_400_000 };
      });
      // No CPU bound per tick (it depends on the cost measured): ticks of 1000 and 100 batches, whatever the machine's speed.
      const tickBudget = { ms: Infinity, points: Infinity };
      const p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, workerUrl: pathToFileURL(WORKER), tickBudget });
      const count = async (sql: string) => Number((await connectionOf(store).query<{ n: string }>(sql, { a: accountId }))[0]!.n);
      const original = store.markProcessed.bind(store);
      store.markProcessed = async () => {
        store.markProcessed = original;
        throw new Error('injected markProcessed failure');
      };

      p.enqueue(rows);
      await p.drain();
      expect(c.logs.join('')).toContain('injected markProcessed failure');
      expect(await count('SELECT count() AS n FROM processed WHERE account_id = {a:String}')).toBe(0);

      p.enqueue(rows); // what the poll would find
      await p.drain();
      expect(await count('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}')).toBe(1100);
      expect(await count('SELECT count() AS n FROM processed FINAL WHERE account_id = {a:String}')).toBe(1100);
      expect(await count('SELECT countIf(part NOT IN (SELECT part FROM processed)) AS n FROM rollups WHERE account_id = {a:String}')).toBe(0);
      // Every pseudonym the rollups use has its dictionary entry.
      expect(await count('SELECT uniqExact(pseudonym) AS n FROM dictionary WHERE account_id = {a:String} AND kind = 2')).toBe(700);
      expect(await count('SELECT uniqExact(pseudonym) AS n FROM dictionary WHERE account_id = {a:String} AND kind = 0')).toBe(3);
      const dict = (kind: number) => `(SELECT pseudonym FROM dictionary WHERE account_id = {a:String} AND kind = ${kind})`;
      expect(await count(`SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND metric NOT IN ${dict(0)}`)).toBe(0);
      expect(await count(`SELECT count() AS n FROM (SELECT arrayJoin(tag_values) AS v FROM rollups WHERE account_id = {a:String}) WHERE v NOT IN ${dict(2)}`)).toBe(0);
      await p.stop();
    } finally {
      await c.stop();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The built collector, worker on and off: same processing, same query answers.

function startChild(dataDir: string, worker: '0' | '1'): Promise<{ url: string; logs: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', CIPHERSTAT_DATA_DIR: dataDir, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_PROCESS_WORKER: worker },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ url: m[1]!, logs: () => out });
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`collector exited (${code}): ${out.slice(-2000)}`)));
  });
}

describe.skipIf(!built)('the built collector with and without the worker', () => {
  it('processes the same batches into the same query answers', async () => {
    const [on, off] = await Promise.all([startChild(tmp('worker-on'), '1'), startChild(tmp('worker-off'), '0')]);
    const run = async (c: { url: string }) => {
      const admin = (method: string, path: string, body?: unknown) =>
        fetch(c.url + path, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
      const account = (await (await admin('POST', '/v1/accounts', {})).json()) as TestAccount;
      const batches = Array.from({ length: 40 }, (_, i) => envelope(account, pts(50, i)));
      await Promise.all(batches.map((b) => post(c.url, b.bytes)));
      const deadline = Date.now() + 60_000;
      let rows: { batches: number; processed: number };
      for (;;) {
        rows = ((await (await admin('GET', `/v1/accounts/${account.accountId}`)).json()) as { rows: typeof rows }).rows;
        if (rows.batches >= 40 && rows.processed >= rows.batches) break;
        if (Date.now() > deadline) throw new Error(`not processed: ${JSON.stringify(rows)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const query = async (q: object) => {
        const res = await fetch(`${c.url}/v1/query`, {
          method: 'POST',
          headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ from: NOW - 3 * 3_600_000, to: NOW + 60_000, ...q }),
        });
        expect(res.status).toBe(200);
        // meta.rows counts stored rollup rows, which depends on how batches happened to
        // coalesce into ticks (timing); the answer itself must not.
        const body = (await res.json()) as { meta: Record<string, unknown> };
        delete body.meta.rows;
        return body;
      };
      return {
        rows,
        answers: [
          await query({ metric: 'orders', aggregation: 'sum', interval: 'hour', groupBy: ['country'] }),
          await query({ metric: 'orders', aggregation: 'count', interval: 'minute', filter: { page: ['/p/1', '/p/2'] } }),
          await query({ metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', groupBy: ['country', 'page'] }),
          await query({ metric: 'page.load_ms', aggregation: 'avg', interval: 'day' }),
        ],
      };
    };
    const [a, b] = await Promise.all([run(on), run(off)]);
    expect(a.rows.processed).toBe(40);
    expect(a.answers).toEqual(b.answers);
    expect(JSON.stringify(a.answers)).toContain('"DE"');
    expect(on.logs()).toContain('tick worker started');
    expect(off.logs()).not.toContain('tick worker started');
  });
});
