/**
 * Memory audit of a shred (lifecycle-memory-*.test.ts): after `DELETE ?now=true` and a
 * `verify`, heap snapshots of the main thread and of the tick worker hold none of the shredded
 * account's keys, in any encoding (raw bytes, base64, base64url, hex). V8 heap snapshots hold
 * every string and object reachable after a full GC, not the contents of ArrayBuffers, so the
 * audit also checks that every key buffer the keyring had handed out is zeroed.
 */
import { expect } from 'vitest';
import { closeSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './collector.js';
import { until } from '../lifecycle-support.js';

const ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');
const URL_ALPHABET = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_');
const HEX = Buffer.from('0123456789abcdef');

/** Base64 (unpadded prefix) and hex written straight into bytes: the test itself never holds a key as a JS string. */
export function encodings(key: Uint8Array): Buffer[] {
  const b64 = (alphabet: Buffer) => {
    const out: number[] = [];
    for (let i = 0; i + 3 <= key.length; i += 3) {
      const n = (key[i]! << 16) | (key[i + 1]! << 8) | key[i + 2]!;
      out.push(alphabet[(n >> 18) & 63]!, alphabet[(n >> 12) & 63]!, alphabet[(n >> 6) & 63]!, alphabet[n & 63]!);
    }
    return Buffer.from(out); // the first 30 bytes: 40 characters no other string shares by chance
  };
  const hex = Buffer.alloc(key.length * 2);
  key.forEach((b, i) => {
    hex[2 * i] = HEX[b >> 4]!;
    hex[2 * i + 1] = HEX[b & 15]!;
  });
  return [Buffer.from(key), b64(ALPHABET), b64(URL_ALPHABET), hex];
}

/** Copies of an account's key bytes (every version: secret, data and MAC key) as search needles. */
export function keyNeedlesOf(c: TestCollector, accountId: string): { needles: Buffer[]; buffers: Uint8Array[] } {
  const buffers = (c.services.keyring.accountKeys(accountId) ?? []).flatMap((k) => [k.secretKey, k.dataKey, k.macKey]);
  expect(buffers.length).toBeGreaterThanOrEqual(3);
  return { needles: buffers.flatMap(encodings), buffers };
}

const found = (snapshot: Buffer, needles: Buffer[]) => needles.filter((n) => snapshot.includes(n)).length;

/**
 * A memory dump of another process (Linux): every readable mapping of `pid`, read through
 * /proc/PID/mem (ArrayBuffer contents, native heaps and stacks included, unlike a V8 heap
 * snapshot). Returns, per needle, whether it occurs anywhere; chunks overlap by the longest
 * needle so nothing is missed at a boundary. Mappings that vanish while read are skipped.
 */
export function processMemoryIncludes(pid: number, needles: Buffer[]): boolean[] {
  const hit = needles.map(() => false);
  const overlap = Math.max(...needles.map((n) => n.length)) - 1;
  const chunk = Buffer.alloc(8 << 20);
  const mem = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const [range, perms, , , , path] = line.split(/\s+/);
      if (!range || !perms?.startsWith('r') || path === '[vvar]' || path === '[vsyscall]') continue;
      const [from, to] = range.split('-').map((h) => BigInt(`0x${h}`)) as [bigint, bigint];
      for (let at = from; at < to; ) {
        const want = Number(to - at < BigInt(chunk.length) ? to - at : BigInt(chunk.length));
        let n: number;
        try {
          n = readSync(mem, chunk, 0, want, at);
        } catch {
          break; // unmapped or unreadable meanwhile
        }
        if (n <= 0) break;
        const view = chunk.subarray(0, n);
        needles.forEach((needle, i) => {
          if (!hit[i] && view.includes(needle)) hit[i] = true;
        });
        if (n < want || at + BigInt(n) >= to) break;
        at += BigInt(Math.max(1, n - overlap));
      }
    }
  } finally {
    closeSync(mem);
  }
  return hit;
}

function mainThreadSnapshot(): Buffer {
  const file = writeHeapSnapshot(join(tmpdir(), `cipherstat-heap-${process.pid}-${Date.now()}.heapsnapshot`));
  try {
    return readFileSync(file);
  } finally {
    rmSync(file, { force: true });
  }
}

async function workerSnapshot(c: TestCollector): Promise<Buffer | undefined> {
  const stream = await c.services.processor?.workerHeapSnapshot();
  if (!stream) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks);
}

/** Sends points to `a` and waits until the processor has written its rollups. */
async function feed(c: TestCollector, a: TestAccount): Promise<void> {
  for (let i = 0; i < 3; i++) {
    const res = await post(c.url, envelope(a, points(20, (j) => ({ value: j, name: j % 2 ? 'orders' : 'revenue', tags: { country: ['DE', 'FR'][j % 2]! } }))).bytes);
    expect(res.status).toBe(202);
  }
  await c.services.processor!.drain();
  await until(async () => (await c.services.store.countAccountRows(a.accountId)).rollups! > 0, 30_000, 'rollups');
}

async function query(c: TestCollector, a: TestAccount): Promise<void> {
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - 3_600_000, to: Date.now() + 3_600_000, groupBy: ['country'] }),
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { series: unknown[] }).series.length).toBeGreaterThan(0);
}

/**
 * The scenario: a target and a control account both ingest, are processed (in the worker or
 * inline), queried and verified (which tries every key in the keyring); then the target is
 * shredded and verified. The snapshots must hold none of the target's keys; the positive
 * controls show the search and the snapshots can see what they look for.
 */
export async function auditShred(mode: 'worker' | 'inline'): Promise<void> {
  const c = await startTestCollector({ fromDist: mode === 'worker', config: { processWorker: mode === 'worker' } });
  try {
    const target = await createAccount(c);
    const control = await createAccount(c);
    for (const a of [target, control]) {
      await feed(c, a);
      await query(c, a);
    }
    // verify tries every key of every account (the target's too) against the control's rows
    expect((await c.admin('GET', `/v1/accounts/${control.accountId}/verify`)).status).toBe(200);
    if (mode === 'worker') expect(await workerSnapshot(c), 'the processor runs a worker thread').toBeDefined();

    const { needles, buffers } = keyNeedlesOf(c, target.accountId);
    const controlNeedles = keyNeedlesOf(c, control.accountId).needles;
    expect((await c.admin('DELETE', `/v1/accounts/${target.accountId}?now=true`)).status).toBe(200);
    expect((await c.admin('GET', `/v1/accounts/${target.accountId}/verify`)).status).toBe(200);

    // The control is untouched: still processed and queried (before the snapshots, which stall
    // the event loop long enough for idle keep-alive sockets to be closed under a client).
    await feed(c, control);
    await query(c, control);

    // Every key buffer this process handed out for the target is zeroed.
    for (const b of buffers) expect(b.every((x) => x === 0)).toBe(true);

    // Main thread: none of the target's keys in any encoding.
    const heldControlKey = Buffer.from(controlNeedles[1]!).toString('latin1'); // positive control: a key held as a string
    const main = mainThreadSnapshot();
    expect(found(main, needles), 'target key material in the main thread heap').toBe(0);
    expect(main.includes(Buffer.from(heldControlKey, 'latin1')), 'the search finds a key held as a string').toBe(true);

    if (mode === 'worker') {
      const worker = (await workerSnapshot(c))!;
      expect(found(worker, needles), 'target key material in the tick worker heap').toBe(0);
      // Positive control: this is the heap of the worker that processed both accounts; it still
      // holds the control's caches (keyed by its id) and nothing keyed by the target's.
      expect(worker.includes(Buffer.from(control.accountId))).toBe(true);
      expect(worker.includes(Buffer.from(target.accountId))).toBe(false);
    }
  } finally {
    await c.stop();
  }
}
