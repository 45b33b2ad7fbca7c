/**
 * Insert latency of the embedded store, with and without the batches table's fsyncs.
 *   npx tsx services/collector/test/support/storage-bench.ts [dataDir]
 * (dataDir defaults to a fresh directory under os.tmpdir(); put it on the disk you care about.)
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type BatchRow, type Store } from '../../src/storage/index.js';
import { connectionOf } from '../../src/storage/index.js';

const ROUNDS = 100;
const dataDir = process.argv[2] ?? (await mkdtemp(join(tmpdir(), 'cipherstat-storage-bench-')));

let seq = 0;
const rows = (n: number): BatchRow[] =>
  Array.from({ length: n }, () => {
    const now = Date.now();
    return { accountId: 'bench', batchId: `b${seq++}`, receivedAt: now, createdAt: now, pointCount: 100, sdk: 'bench', sealed: randomBytes(4096), expiresAt: now + 86_400_000 };
  });

function stats(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!.toFixed(2);
  return `p50 ${at(0.5)} ms  p95 ${at(0.95)} ms  mean ${(ms.reduce((a, b) => a + b, 0) / ms.length).toFixed(2)} ms`;
}

/** Rounds alternate between the stores, so load drift on the machine hits both alike. */
async function time(on: Store, off: Store, n: number): Promise<[string, string]> {
  for (let i = 0; i < 5; i++) for (const s of [on, off]) await s.insertBatches(rows(n));
  const ms: [number[], number[]] = [[], []];
  for (let i = 0; i < ROUNDS; i++) {
    for (const [k, s] of [on, off].entries()) {
      const r = rows(n);
      const t = performance.now();
      await s.insertBatches(r);
      ms[k]!.push(performance.now() - t);
    }
  }
  return [stats(ms[0]), stats(ms[1])];
}

const stores: Store[] = [];
for (const database of ['bench_fsync', 'bench_nofsync']) {
  const store = await openStore({ dataDir, database });
  await store.migrate();
  stores.push(store);
}
await connectionOf(stores[1]!).exec('ALTER TABLE bench_nofsync.batches MODIFY SETTING fsync_after_insert = 0, fsync_part_directory = 0');
for (const n of [1, 100]) {
  const [on, off] = await time(stores[0]!, stores[1]!, n);
  console.log(`insertBatches ${String(n).padStart(3)} x 4 KB, fsync on : ${on}`);
  console.log(`insertBatches ${String(n).padStart(3)} x 4 KB, fsync off: ${off}`);
}

const store = stores[0]!;
const keys = rows(100).map((r) => ({ accountId: r.accountId, batchId: r.batchId }));
const ms: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const t = performance.now();
  await store.existingBatches(keys);
  ms.push(performance.now() - t);
}
console.log(`existingBatches 100 keys: ${stats(ms)}`);
const t = performance.now();
await Promise.all(Array.from({ length: 200 }, () => store.existingBatches(keys.slice(0, 1))));
console.log(`existingBatches 1 key, 200 concurrent: ${((performance.now() - t) / 200).toFixed(2)} ms each on average`);
const p = performance.now();
const pending = await store.pendingBatches(0, 1000);
console.log(`pendingBatches ${pending.length} x 4 KB: ${(performance.now() - p).toFixed(1)} ms`);

for (const s of stores) await s.close();
if (!process.argv[2]) await rm(dataDir, { recursive: true, force: true });
