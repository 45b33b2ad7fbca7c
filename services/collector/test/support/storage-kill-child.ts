/**
 * Child of storage-durability.test.ts: inserts batches of 10 rows into the embedded store
 * forever, printing "acked <i>" after each insert resolves, until it is killed.
 */
import { randomBytes } from 'node:crypto';
import { openStore } from '../../src/storage/index.js';

const dataDir = process.argv[2];
if (!dataDir) throw new Error('usage: storage-kill-child.ts <dataDir>');
const store = await openStore({ dataDir });
await store.migrate();
for (let i = 0; ; i++) {
  const now = Date.now();
  await store.insertBatches(
    Array.from({ length: 10 }, (_, j) => ({
      accountId: 'acct-kill', batchId: `k${i}-${j}`, receivedAt: now, createdAt: now, pointCount: 1, sdk: 'kill', sealed: randomBytes(1024), expiresAt: now + 86_400_000,
    })),
  );
  process.stdout.write(`acked ${i}\n`);
}
