/** Persistence: bounds, several writers, the Node file store, resend after restart. */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryStore, outbox, type StoredBatch } from '../src/persist.js';
import { fileStore } from '../src/platform/node.js';
import { deflateRaw } from '@cipherstat/protocol/node';
import { startCollector, type Collector } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

const batch = (id: string, chars = 4): StoredBatch => [id, 1, 1, 'A'.repeat(chars), 'B'];

describe('outbox bounds', () => {
  it('drops the oldest first when over maxPersistedBatches, and says which', () => {
    const o = outbox(memoryStore(), 3, 1e6);
    expect(['a', 'b', 'c'].flatMap((id) => o.add(batch(id)))).toEqual([]);
    expect(o.add(batch('d')).map((b) => b[0])).toEqual(['a']);
    expect(o.add(batch('e')).map((b) => b[0])).toEqual(['b']);
    expect(o.load().q.map((b) => b[0])).toEqual(['c', 'd', 'e']);
  });

  it('drops the oldest first when over maxPersistedBytes, never the newest', () => {
    const o = outbox(memoryStore(), 100, 1000);
    o.add(batch('a', 400));
    o.add(batch('b', 400));
    expect(o.add(batch('c', 400)).map((b) => b[0])).toEqual(['a']);
    expect(o.add(batch('huge', 5000)).map((b) => b[0])).toEqual(['b', 'c']);
    expect(o.load().q.map((b) => b[0])).toEqual(['huge']);
  });

  it('writers sharing one store (browser tabs) keep each other’s batches', () => {
    const shared = memoryStore();
    const tabA = outbox(shared, 10, 1e6);
    const tabB = outbox(shared, 10, 1e6);
    tabA.add(batch('a1'));
    tabB.add(batch('b1'));
    tabA.remove('a1');
    tabA.add(batch('a2'));
    expect(tabB.load().q.map((b) => b[0])).toEqual(['b1', 'a2']);
  });

  it('a corrupt store reads as empty', () => {
    const o = outbox({ read: () => JSON.parse('{nope'), write: () => {} }, 10, 1e6);
    expect(o.load()).toEqual({ q: [] });
  });
});

describe('persisting unsent batches', () => {
  let col: Collector;
  let dir: string;
  beforeEach(async () => {
    col = await startCollector();
    dir = mkdtempSync(join(tmpdir(), 'cipherstat-'));
  });
  afterEach(() => col.close());

  const base = (o: Record<string, unknown> = {}) => ({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, flushInterval: 10, ...o });

  it('over maxPersistedBatches: the oldest batches are dropped and counted', async () => {
    col.script.push(...Array(20).fill({ status: 503 }));
    const h = harness(base({ maxBatchSize: 1, maxPersistedBatches: 2, maxRetries: 0, retryBaseDelay: 10 }));
    for (let i = 0; i < 5; i++) {
      h.lib.count('a', i);
      await h.lib.flush();
    }
    expect(h.dropped('persist_overflow')).toBe(3);
    expect(h.store.read()!.q).toHaveLength(2);
    col.script.length = 0;
    h.online(); // parked batches go again
    await h.lib.flush();
    expect(col.points().map((p) => p.value).sort()).toEqual([3, 4]);
  });

  it('Node: unsent batches survive a restart in persistPath and are resent byte-identically', async () => {
    const persistPath = join(dir, 'queue.json');
    col.script.push({ status: 503 });
    const first = harness(base({ maxRetries: 0 }), { storage: fileStore(persistPath) });
    first.lib.count('orders', 3, { country: 'DE' });
    await first.lib.flush();
    await first.lib.shutdown();
    const onDisk = JSON.parse(readFileSync(persistPath, 'utf8'));
    expect(onDisk.q).toHaveLength(1);
    expect(onDisk.k).toEqual(col.collectorKey); // the fetched key is cached too
    expect(JSON.stringify(onDisk)).not.toContain('orders'); // only sealed data on disk
    expect(col.batches.size).toBe(0);
    const firstBody = col.posts()[0]!.body;

    // "restart": a new Library on the same file
    const second = harness(base(), { storage: fileStore(persistPath) });
    await second.lib.flush();
    await second.lib.shutdown();
    expect(col.points().map((p) => [p.name, p.value, p.tags])).toEqual([['orders', 3, { country: 'DE' }]]);
    expect(col.keyFetches()).toBe(1); // the second run used the stored key
    expect(Buffer.from(col.posts()[1]!.body).equals(Buffer.from(firstBody))).toBe(true);
    expect(JSON.parse(readFileSync(persistPath, 'utf8')).q).toEqual([]);
    expect(readdirSync(dir)).toEqual(['queue.json']); // no temp files left behind
  });

  it('Node: a corrupt file is reported and replaced', async () => {
    const persistPath = join(dir, 'queue.json');
    writeFileSync(persistPath, '{"q": [oops');
    const errors: string[] = [];
    const h = harness(base({ onError: (e: Error & { code: string }) => errors.push(e.code) }), { storage: fileStore(persistPath, (e) => errors.push(e.code)) });
    h.lib.count('a');
    await h.lib.flush();
    await h.lib.shutdown();
    expect(errors).toEqual(['persist_failed']);
    expect(col.batches.size).toBe(1);
    expect(JSON.parse(readFileSync(persistPath, 'utf8'))).toMatchObject({ q: [] });
  });

  it('Node: a write that failed half-way (its temp file left behind) does not block the next writes', async () => {
    const persistPath = join(dir, 'queue.json');
    mkdirSync(join(persistPath, 'in-the-way'), { recursive: true }); // a non-empty directory where the file goes: the rename fails
    const errors: string[] = [];
    const store = fileStore(persistPath, (e) => errors.push(e.message.replace(/^.*: (\w+): .*$/, '$1')));
    store.write({ q: [batch('first')] });
    await store.settle!();
    expect(errors).toEqual(['EISDIR', 'EISDIR']); // the read at start, the rename
    rmSync(persistPath, { recursive: true });
    store.write({ q: [batch('second')] });
    await store.settle!();
    expect(errors).toHaveLength(2); // was a third, EEXIST: the temp file's exclusive open failed from then on
    expect(JSON.parse(readFileSync(persistPath, 'utf8')).q.map((b: StoredBatch) => b[0])).toEqual(['second']);
    expect(readdirSync(dir)).toEqual(['queue.json']);
  });

  it('Node without persistPath (memory only): shutdown() reports what it could not deliver as stopped, parked batches included', async () => {
    col.script.push(...Array(50).fill({ status: 503 }));
    const h = harness(base({ shutdownTimeout: 200, retryBaseDelay: 1, retryMaxDelay: 1, maxRetries: 1 }), { storage: null });
    h.lib.count('parked');
    await h.lib.flush(); // resolves once the batch is parked (retries spent: send_failed)
    expect(h.errors.map((e) => e.code)).toEqual(['send_failed']);
    h.lib.count('queued');
    await h.lib.shutdown();
    expect(col.batches.size).toBe(0);
    expect(h.dropped('stopped')).toBe(2); // both batches: nothing outlives this process
  });

  it("tabs sharing one outbox: a batch of another tab evicted by this tab's is reported (persist_overflow), not lost silently", async () => {
    const shared = memoryStore();
    const offline = { offline: () => true }; // nothing leaves: every batch stays in the outbox
    // Both tabs open first: tab A never loaded tab B's batch (it is not in A's memory).
    const tabA = harness(base({ maxPersistedBatches: 2 }), { storage: shared, ...offline });
    const tabB = harness(base({ maxPersistedBatches: 2 }), { storage: shared, ...offline });
    tabB.lib.count('b');
    await tabB.lib.flush();
    const [bId] = shared.read()!.q.map((b) => b[0]);
    tabA.lib.count('a1');
    await tabA.lib.flush();
    expect(tabA.drops).toEqual([]);
    tabA.lib.count('a2');
    await tabA.lib.flush(); // the third batch in the entry: tab B's, the oldest, goes
    expect(tabA.drops).toEqual([['persist_overflow', { count: 1, batchId: bId }]]);
    expect(shared.read()!.q.map((b) => b[0])).not.toContain(bId);
  });

  it('a stored outbox with an entry that is not a batch (null) is cleaned up; the Library starts and delivers', async () => {
    const storage = memoryStore();
    storage.write({ q: [null as unknown as StoredBatch, batch('garbled')] });
    const h = harness(base(), { storage });
    h.lib.count('after.corrupt');
    await h.lib.flush();
    expect(col.points().map((p) => p.name)).toEqual(['after.corrupt']);
    expect(storage.read()!.q).toEqual([]);
    await h.lib.shutdown();
  });

  it('memory only: a batch still being sealed when shutdown() gives up (shutdownTimeout 0) is reported as stopped too', async () => {
    // sealing waits for a deflate that takes longer than shutdownTimeout (the real one, later)
    const slow = async (plain: Uint8Array) => (await new Promise((r) => setTimeout(r, 100)), deflateRaw(plain));
    const h = harness(base({ persist: false, shutdownTimeout: 0 }), { deflate: slow });
    h.lib.count('sealing');
    await h.lib.shutdown();
    await new Promise((r) => setTimeout(r, 300)); // (the seal that ends after shutdown changes nothing)
    expect(h.dropped('stopped')).toBe(1);
  });

  it('persist: false keeps nothing after shutdown and says so', async () => {
    col.script.push(...Array(50).fill({ status: 503 }));
    const h = harness(base({ persist: false, shutdownTimeout: 200, retryBaseDelay: 50 }));
    h.lib.count('a');
    await h.lib.shutdown(); // resolves after shutdownTimeout, not after 50 retries

    expect(h.dropped('stopped')).toBe(1);
  });
});
