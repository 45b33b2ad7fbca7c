/**
 * The group commit under load (ingest/writer.ts, CIPHERSTAT_INGEST_GROUP_MS): after an insert of
 * GROUP_LOAD_BATCHES or more, the next insert starts no sooner than `groupMs` after it started,
 * so the batches arriving meanwhile go together; after a smaller insert (a quiet collector) the
 * next one starts at once. CIPHERSTAT_INGEST_GROUP_BEHIND_MS: the same interval, only while processing
 * is behind. Every batch is still acknowledged only once inserted. Real chDB in a
 * temporary directory; the store is the real one, its inserts recorded.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { BatchWriter, GROUP_LOAD_BATCHES } from '../src/ingest/writer.js';
import { createMetrics, type Metrics } from '../src/metrics.js';
import { openStore } from '../src/storage/index.js';
import type { BatchRow, Store } from '../src/storage/types.js';
import { tempDirs } from './support/temp-dirs.js';

const tmp = tempDirs('cipherstat-group-commit-');
let store: Store;

beforeAll(async () => {
  store = await openStore({ dataDir: join(tmp(), 'data') });
  await store.migrate();
});
afterAll(async () => {
  await store?.close();
});

const row = (batchId: string): BatchRow => {
  const now = Date.now();
  return { accountId: 'acct-group', batchId, receivedAt: now, createdAt: now, pointCount: 1, sdk: 'test', sealed: new Uint8Array([1, 2, 3]), expiresAt: now + 86_400_000 };
};

/** A writer on the real store whose inserts' sizes are recorded. */
function writer(groupMs: number, behind?: { behind: () => boolean; behindGroupMs: number }) {
  const sizes: number[] = [];
  const recording = Object.create(store, {
    insertBatches: { value: (rows: BatchRow[]) => (sizes.push(rows.length), store.insertBatches(rows)) },
  }) as Store;
  const metrics = createMetrics();
  return { w: new BatchWriter(recording, metrics, { maxQueued: 10_000, checkStorage: false, groupMs, ...behind }), sizes, metrics };
}

/** cipherstat_ingest_group_wait_seconds_total by reason. */
async function waited(metrics: Metrics): Promise<Record<string, number>> {
  const { values } = await metrics.ingestGroupWaitSeconds.get();
  return Object.fromEntries(values.map((v) => [String(v.labels.reason), v.value]));
}

const turn = () => new Promise((r) => setImmediate(r));

describe('CIPHERSTAT_INGEST_GROUP_MS', () => {
  it('is off (0) unless set', () => {
    expect(loadConfig({}, {}).ingestGroupMs).toBe(0);
    expect(loadConfig({}, { CIPHERSTAT_INGEST_GROUP_MS: '100' }).ingestGroupMs).toBe(100);
  });

  it('after an insert under load, batches arriving within groupMs of its start go in one insert, each acknowledged once stored', async () => {
    const { w, sizes, metrics } = writer(5_000);
    const load = GROUP_LOAD_BATCHES + 3;
    // The first batch starts an insert alone; the rest queue behind it and go in the next (load).
    const first = Array.from({ length: load + 1 }, (_, i) => w.submit(row(`load-${i}`)));
    expect(await Promise.all(first)).toEqual(first.map(() => 'stored'));
    expect(sizes).toEqual([1, load]);
    // Three batches one after another: the next insert waits for the interval, so all three go together.
    const later: Promise<string>[] = [];
    for (let i = 0; i < 3; i++) {
      later.push(w.submit(row(`later-${i}`)));
      await turn();
    }
    expect(await Promise.all(later)).toEqual(['stored', 'stored', 'stored']);
    expect(sizes).toEqual([1, load, 3]);
    expect(Object.keys(await waited(metrics))).toEqual(['interval']);
    const [stored] = await store.existingBatches([row('load-0'), row('later-2')]).then((s) => [s.size]);
    expect(stored).toBe(2);
    await w.close();
  });

  it('a quiet collector never waits: after an insert under GROUP_LOAD_BATCHES the next starts at once', async () => {
    // An interval longer than the test's timeout: any wait would fail it.
    const { w, sizes, metrics } = writer(600_000);
    for (let i = 0; i < 5; i++) expect(await w.submit(row(`quiet-${i}`))).toBe('stored');
    expect(sizes).toEqual([1, 1, 1, 1, 1]);
    expect(await waited(metrics)).toEqual({});
    await w.close();
  });
});

describe('CIPHERSTAT_INGEST_GROUP_BEHIND_MS', () => {
  it('is 100 unless set, 0 turns it off', () => {
    expect(loadConfig({}, {}).ingestGroupBehindMs).toBe(100);
    expect(loadConfig({}, { CIPHERSTAT_INGEST_GROUP_BEHIND_MS: '0' }).ingestGroupBehindMs).toBe(0);
  });

  it('spaces inserts under load only while processing is behind; once it keeps up, the next insert starts at once', async () => {
    let behind = true;
    // An interval longer than the test's timeout once processing keeps up: any wait then would fail it.
    const { w, sizes, metrics } = writer(0, { behind: () => behind, behindGroupMs: 5_000 });
    const load = GROUP_LOAD_BATCHES + 3;
    const first = Array.from({ length: load + 1 }, (_, i) => w.submit(row(`behind-load-${i}`)));
    expect(await Promise.all(first)).toEqual(first.map(() => 'stored'));
    expect(sizes).toEqual([1, load]);
    // Behind: three batches one after another wait for the interval and go in one insert.
    const later: Promise<string>[] = [];
    for (let i = 0; i < 3; i++) {
      later.push(w.submit(row(`behind-later-${i}`)));
      await turn();
    }
    expect(await Promise.all(later)).toEqual(['stored', 'stored', 'stored']);
    expect(sizes).toEqual([1, load, 3]);
    const held = await waited(metrics);
    expect(Object.keys(held)).toEqual(['behind']);
    expect(held.behind).toBeGreaterThan(0);
    // Under load again, but processing keeps up: no wait.
    const again = Array.from({ length: load + 1 }, (_, i) => w.submit(row(`kept-up-load-${i}`)));
    expect(await Promise.all(again)).toEqual(again.map(() => 'stored'));
    behind = false;
    expect(await w.submit(row('kept-up-next'))).toBe('stored');
    expect(sizes.slice(3)).toEqual([1, load, 1]);
    expect(await waited(metrics)).toEqual(held);
    await w.close();
  });
});
