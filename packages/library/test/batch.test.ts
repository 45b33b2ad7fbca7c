/** Batching rules: count, bytes, time; ids; sealed once. */
import fc from 'fast-check';
import { encodeInner, FLAG_DEFLATE, INFO_INNER, innerAad, keyPair, openEnvelope, openInner, randomBytes, toBase64, toHex, type Point } from '@cipherstat/protocol';
import { deflateRaw, hpkeOpen, hpkeSeal, inflateRaw } from '@cipherstat/protocol/node';
import { fallback } from '../src/fallback.js';
import type { StoredBatch } from '../src/persist.js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fits, OVERHEAD, pointSize, type QueuedPoint } from '../src/batch.js';
import { envelope, form, revive } from '../src/seal.js';
import { inProcess } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

let col: ReturnType<typeof inProcess>;
beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2025-06-01T12:00:00Z') });
  col = inProcess();
});
afterEach(() => vi.useRealTimers());

const setup = (options: Record<string, unknown> = {}) =>
  harness({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, collectorKey: col.collectorKey, ...options }, { fetch: col.fetch });
const load = { load: () => Promise.resolve(fallback), deflate: deflateRaw };
const sizes = () => [...col.batches.values()].map((p) => p.length);

describe('batching', () => {
  it('by count: a full batch is cut on the next tick, ids are indices', async () => {
    const h = setup({ maxBatchSize: 3 });
    for (let i = 0; i < 7; i++) h.lib.count('a', i);
    expect(col.calls).toHaveLength(0); // recording never seals or sends synchronously
    await vi.advanceTimersByTimeAsync(0);
    expect(sizes()).toEqual([3, 3, 1]);
    expect([...col.batches.values()].map((b) => b.map((p) => p.id))).toEqual([[0, 1, 2], [0, 1, 2], [0]]);
    expect([...col.batches.values()].flat().map((p) => p.value)).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('by time: flushInterval after the first point of a batch', async () => {
    const h = setup({ flushInterval: 1000 });
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(999);
    expect(col.batches.size).toBe(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(col.batches.size).toBe(1);
    await vi.advanceTimersByTimeAsync(5000);
    h.lib.count('b');
    h.lib.count('c');
    await vi.advanceTimersByTimeAsync(1000);
    expect(sizes()).toEqual([1, 2]);
  });

  it('by bytes: no envelope exceeds maxBatchBytes', async () => {
    const h = setup({ maxBatchBytes: 2048 });
    for (let i = 0; i < 20; i++) h.lib.count('checkout.step', i, { page: 'p'.repeat(100), variant: 'é'.repeat(20) });
    await vi.advanceTimersByTimeAsync(0);
    expect(sizes().length).toBeGreaterThan(3);
    expect(sizes().reduce((a, b) => a + b)).toBe(20);
    const posts = col.calls.filter((c) => c.init?.method === 'POST');
    for (const p of posts) expect((p.init!.body as Uint8Array).length).toBeLessThanOrEqual(2048);
  });

  it('flush() cuts at once; batch ids are 32 random hex characters, unique', async () => {
    const h = setup();
    for (let i = 0; i < 5; i++) {
      h.lib.count('a');
      await h.lib.flush();
    }
    const ids = [...col.batches.keys()];
    expect(ids).toHaveLength(5);
    expect(new Set(ids).size).toBe(5);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
  });

  it('points keep their recording time', async () => {
    const h = setup({ flushInterval: 10_000 });
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(4000);
    h.lib.count('b');
    await vi.advanceTimersByTimeAsync(6000);
    const [a, b] = col.points();
    expect(b!.time - a!.time).toBe(4000);
  });
});

describe('size estimate', () => {
  const account = keyPair();
  const key = { keyId: toHex(randomBytes(8)), publicKey: keyPair().publicKey };
  const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$/);
  const tags = fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/), fc.string({ maxLength: 256, unit: 'grapheme' }), { maxKeys: 16 });
  const point = fc.record({
    kind: fc.constantFrom('counter', 'gauge', 'histogram') as fc.Arbitrary<Point['kind']>,
    name,
    value: fc.double({ noNaN: true, noDefaultInfinity: true }),
    dt: fc.integer({ min: 0, max: 30 * 24 * 3600e3 }),
    tags,
  });

  it('is an upper bound of the sealed envelope (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(point, { minLength: 1, maxLength: 40 }), async (ps) => {
        const now = Date.now();
        const queued: QueuedPoint[] = ps.map((p) => ({ id: 0, kind: p.kind, name: p.name, value: p.value, time: now + p.dt, tags: p.tags, _size: pointSize(p.name, p.tags) }));
        const bytes = (await envelope(await form('acct_12345678', account.publicKey, queued, load), key, 'acct_12345678', load)).length;
        expect(bytes).toBeLessThanOrEqual(OVERHEAD + queued.reduce((n, p) => n + p._size, 0));
      }),
      { numRuns: 100 },
    );
  });

  it('fits() takes at least one point, then as many as count and bytes allow', () => {
    const q = (...s: number[]) => s.map((_size) => ({ _size }) as QueuedPoint);
    expect(fits(q(100, 100, 100), 2, 10_000)).toBe(2);
    expect(fits(q(100, 100, 100), 10, OVERHEAD + 200)).toBe(2);
    expect(fits(q(5000, 1), 10, 1024)).toBe(1);
    expect(fits([], 10, 1024)).toBe(0);
  });
});

describe('sealed once', () => {
  const one = () => [{ id: 0, kind: 'counter', name: 'a', value: 1, time: Date.now(), tags: {}, _size: 0 } as QueuedPoint];

  it('v2: the envelope is sealed once per collector key and stored; a revived batch resends the same bytes', async () => {
    const account = keyPair();
    const collector = keyPair();
    const k1 = { keyId: toHex(randomBytes(8)), publicKey: collector.publicKey };
    const k2 = { keyId: toHex(randomBytes(8)), publicKey: keyPair().publicKey };
    const batch = await form('acct_12345678', account.publicKey, one(), load);
    const stored = batch._stored;
    expect(stored[5]).toBe(2);
    // formed with its bytes: the same as the stored text says
    expect(Buffer.from(batch._inner).equals(Buffer.from(revive(JSON.parse(JSON.stringify(stored)), 0)!._inner))).toBe(true);
    let persisted: StoredBatch | undefined;
    const a = await envelope(batch, k1, 'acct_12345678', load, undefined, (s) => (persisted = JSON.parse(JSON.stringify(s))));
    expect(Buffer.from(await envelope(batch, k1, 'acct_12345678', load)).equals(Buffer.from(a))).toBe(true);
    // a batch revived from storage (reload / restart) sends the stored bytes, never a new seal
    expect(persisted![6]).toBe(k1.keyId);
    const b = await envelope(revive(persisted!, 1)!, k1, 'acct_12345678', load);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    // both layers open at the collector side (node:crypto)
    // deflated (Node has CompressionStream): flag 0x01 stored with the batch and in the prefix
    expect(stored[7]).toBe(1);
    expect(a[3]).toBe(FLAG_DEFLATE);
    const outer = openEnvelope(a, { keys: () => collector, now: Date.now(), hpke: hpkeOpen, flags: FLAG_DEFLATE });
    expect(outer.ok && outer.value.version).toBe(2);
    const inner = outer.ok && openInner(outer.value.inner, { account, accountId: 'acct_12345678', batchId: stored[0], count: 1, now: Date.now(), version: 2, hpke: hpkeOpen, flags: outer.value.flags, inflate: inflateRaw });
    expect(inner && inner.ok && inner.value.points.length).toBe(1);
    // a v2 batch stored by a Library before the flag (no 8th field) is resent with flags 0, as it was sealed
    const old = JSON.parse(JSON.stringify(persisted!)).slice(0, 7);
    old[3] = toBase64(hpkeSeal(account.publicKey, INFO_INNER, innerAad('acct_12345678', stored[0]), encodeInner('acct_12345678', stored[0], one())));
    old[4] = '';
    old[6] = '';
    const o = await envelope(revive(old, 3)!, k1, 'acct_12345678', load);
    expect(o[3]).toBe(0);
    const oo = openEnvelope(o, { keys: () => collector, now: Date.now(), hpke: hpkeOpen, flags: FLAG_DEFLATE });
    expect(oo.ok && openInner(oo.value.inner, { account, accountId: 'acct_12345678', batchId: stored[0], count: 1, now: Date.now(), version: 2, hpke: hpkeOpen, flags: oo.value.flags, inflate: inflateRaw }).ok).toBe(true);
    // another collector key (rotation): a new seal around the same inner layer
    const c = await envelope(revive(persisted!, 2)!, k2, 'acct_12345678', load);
    expect(Buffer.from(a).equals(Buffer.from(c))).toBe(false);
    expect(Buffer.from(c.subarray(12)).includes(Buffer.from(a.subarray(44, 60)))).toBe(false);
  });

  it('v1 batches a previous page stored: deterministic per (batch, collector key, header), a new ephemeral key for another header', async () => {
    const account = keyPair();
    const collector = keyPair();
    const k = { keyId: toHex(randomBytes(8)), publicKey: collector.publicKey };
    const id = toHex(randomBytes(16));
    const stored: StoredBatch = [id, Date.now(), 1, toBase64(fallback.inner(encodeInner('acct_12345678', id, one()), account.publicKey)), toBase64(randomBytes(32))];
    // the same stored batch, retried by the page before and after a deploy of a new SDK version
    const before = await envelope(revive(stored, 0)!, k, 'acct_12345678', load, 'js/0.1.0');
    const after = await envelope(revive(JSON.parse(JSON.stringify(stored)), 1)!, k, 'acct_12345678', load, 'js/0.2.0');
    const ephemeral = (env: Uint8Array) => Buffer.from(env.subarray(12, 44)); // magic, version, flags (4) | key id (8) | E (32)
    expect(ephemeral(before).equals(ephemeral(after))).toBe(false);
    // both still open, each with its own header (the collector sees two valid envelopes of one batch)
    const opened = [before, after].map((e) => openEnvelope(e, { keys: () => collector, now: Date.now() }));
    expect(opened.map((o) => o.ok && o.value.header.sdk)).toEqual(['js/0.1.0', 'js/0.2.0']);
    // the same header retried: byte-identical (a retry stays a duplicate)
    expect(Buffer.from(await envelope(revive(stored, 2)!, k, 'acct_12345678', load, 'js/0.1.0')).equals(Buffer.from(before))).toBe(true);
  });

  it('revive rejects malformed stored batches', () => {
    expect(revive(['nope', 1, 1, 'AAAA', 'AAAA'], 0)).toBeUndefined();
    expect(revive([toHex(randomBytes(16)), 1, 1, '!!', 'AAAA'], 0)).toBeUndefined();
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AAAA', 'AAAA'], 0)).toBeUndefined(); // seed must be 32 bytes
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AAAA', '!!', 2, 'x'], 0)).toBeUndefined();
    // strict base64: what btoa writes and nothing else (no missing padding, no whitespace, no stray bits)
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AAAA', 'AA', 2, 'x'], 0)).toBeUndefined();
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AA AA===', 'AAAA', 2, 'x'], 0)).toBeUndefined();
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AB==', 'AAAA', 2, 'x'], 0)).toBeUndefined();
    expect(revive([toHex(randomBytes(16)), 1, 1, 'AA==', 'AAAA', 2, 'x'], 0)).toBeDefined();
    expect(revive(null as never, 0)).toBeUndefined();
  });
});
