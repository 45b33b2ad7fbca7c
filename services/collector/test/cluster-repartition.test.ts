/**
 * Changing the partition count from 2 to 3 without stopping ingest (README, "Running on a
 * ClickHouse cluster"): under steady load through both ingest nodes of a cluster (process nodes
 * 0/2 and 1/2, a query node; support/cluster.ts), the nodes 0/3, 1/3 and 2/3 are started — each
 * waits and says that another partition count runs — then the i/2 nodes get SIGTERM: they give
 * their leases up, the i/3 nodes take theirs and process every partition of 3. After the load
 * drains, every acknowledged batch is counted exactly once (one marker, one part), no rollup row
 * is orphaned, the query node's counts and sums equal the ground truth sent, and its answers
 * equal a single node's fed the same ciphertexts. One account in each of the six (i/2, j/3)
 * combinations, so every old and every new partition has traffic. No timing is asserted.
 */
import { until } from './lifecycle-support.js';
import { afterAll, describe, expect, it } from 'vitest';
import { expectCountedExactlyOnce, spreadPoint, startCluster, type Cluster, type Sender } from './support/cluster.js';
import { tracker } from './support/faults.js';
import type { TestAccount } from './support/collector.js';

const LEASE_MS = 1500;
let cluster: Cluster | undefined;
afterAll(() => cluster?.close());

describe('a cluster changing its partition count under load', () => {
  it('goes from 2 to 3 process partitions without stopping ingest and counts every acknowledged batch exactly once, as a single node would', { timeout: 1_500_000 }, async () => {
    const c = (cluster = await startCluster({ ingest: 2, process: ['0/2', '1/2'], query: 1, leaseMs: LEASE_MS, env: { CIPHERSTAT_RATE_LIMIT: '100000' } }));

    // One account per (partition of 2, partition of 3), by the engine's cityHash64.
    const byCell = new Map<string, TestAccount>();
    const of2 = new Map<string, number>();
    const of3 = new Map<string, number>();
    while (byCell.size < 6) {
      const a = await c.createAccount();
      const [p2, p3] = [await c.partitionOf(a.accountId, 2), await c.partitionOf(a.accountId, 3)];
      if (byCell.has(`${p2}/${p3}`)) continue;
      byCell.set(`${p2}/${p3}`, a);
      of2.set(a.accountId, p2);
      of3.set(a.accountId, p3);
    }
    const accounts = [...byCell.values()];
    const ids = (n: number, p: number) => accounts.filter((a) => (n === 2 ? of2 : of3).get(a.accountId) === p).map((a) => `'${a.accountId}'`).join(',');
    /** Markers written after `t` (epoch ms) for the accounts of partition p of n. */
    const markedAfter = async (n: number, p: number, t: number) =>
      Number((await c.sql(`SELECT count() FROM processed WHERE account_id IN (${ids(n, p)}) AND processed_at > fromUnixTimestamp64Milli(${t})`))[0]![0]);

    let rr = 0;
    const ingest = () => {
      const urls = c.ingestUrls();
      return urls[rr++ % urls.length]!;
    };
    const t0 = Date.now();
    const senders: Sender[] = accounts.map((account) => ({ account, tracker: tracker(ingest, account, spreadPoint(t0)) }));
    const acked = () => senders.reduce((n, s) => n + s.tracker.acked.size, 0);
    let loading = true;
    const load = (async () => {
      while (loading) await Promise.all(senders.map((s) => s.tracker.send()));
    })();
    let switched = 0;
    let switchMs = 0;
    try {
      await until(async () => (await markedAfter(2, 0, 0)) > 0 && (await markedAfter(2, 1, 0)) > 0, 240_000, 'both partitions of 2 processing');
      const old = ['process-0', 'process-1'].map((n) => c.node(n));
      expect(c.holderOf('partition-0-of-2')).toBe(old[0]);
      expect(c.holderOf('partition-1-of-2')).toBe(old[1]);

      // The nodes of 3 start and wait while the count of 2 runs, saying so.
      const next = await Promise.all([0, 1, 2].map((i) => c.start(`process-${i + 2}`, 'process', `${i}/3`)));
      for (const [i, n] of next.entries()) {
        await until(async () => n.proc.output().includes(`partition-${i}-of-3: another partition count runs (partition-`), 240_000, `the ${i}/3 node says why it waits`);
      }
      const before = acked();
      await until(async () => acked() > before + 20, 240_000, 'ingest goes on while the nodes of 3 wait');
      for (const i of [0, 1, 2]) expect(c.holderOf(`partition-${i}-of-3`)).toBeUndefined();
      expect(next.every((n) => !n.proc.output().includes('taken (epoch'))).toBe(true);

      // SIGTERM the nodes of 2: they give their leases up, the nodes of 3 take over.
      switched = Date.now();
      await Promise.all(old.map((n) => c.stop(n.name, 'SIGTERM')));
      for (const i of [0, 1]) expect(c.lease(`partition-${i}-of-2`)?.holder, `partition ${i}/2 released at SIGTERM`).toBe('');
      for (const [i, n] of next.entries()) {
        await until(async () => c.holderOf(`partition-${i}-of-3`) === n, 240_000, `the ${i}/3 node holds its partition`);
        await until(async () => (await markedAfter(3, i, switched)) > 0, 240_000, `partition ${i}/3 processed`);
        expect(n.proc.output()).toContain(`lease partition-${i}-of-3 taken`);
      }
      switchMs = Date.now() - switched;
      const afterSwitch = acked();
      await until(async () => acked() > afterSwitch + 20, 240_000, 'ingest goes on after the switch');
    } finally {
      loading = false;
      await load;
    }

    const { acknowledged, compared, ms } = await expectCountedExactlyOnce(c, senders, t0);
    console.log(`2 → 3 partitions under load: acknowledged ${acknowledged} batches; ${compared} answers equal a single node's; SIGTERM of the nodes of 2 → every partition of 3 processed: ${switchMs} ms; after the load (ms): ${JSON.stringify(ms)}`);
  });
});
