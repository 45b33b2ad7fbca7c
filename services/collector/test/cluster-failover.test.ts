/**
 * More than one machine, under failure (README, "Running on a ClickHouse cluster"): 2 ingest
 * nodes on the transport keyring, process nodes for partitions 0/2 and 1/2 plus a second node
 * for 0/2, and a query node — each the built CLI in its own child process — on one ClickHouse
 * endpoint and one shared keyring directory (support/cluster.ts). Under steady load through both
 * ingest nodes: the second 0/2 node waits and says why; kill -9 the 0/2 holder (the waiting node
 * takes over once the lease expired), restart it; kill -9 the 1/2 holder and restart it (it takes
 * its own partition back after the expiry); kill -9 an ingest node and the query node, restarting
 * each. After the load drains, every acknowledged batch is counted exactly once (one processed
 * marker, one part), no rollup row is orphaned, and the query node's sums and counts equal the
 * ground truth sent. Leases are short and explicit (CIPHERSTAT_LEASE_MS); every wait is a
 * wait-for-condition with a generous deadline; no timing is asserted (times are printed).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until } from './lifecycle-support.js';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../src/storage/index.js';
import { startCluster, type Cluster } from './support/cluster.js';
import { expectExactlyOnce, POINTS_PER_BATCH, tracker, type Tracker } from './support/faults.js';
import type { TestAccount } from './support/collector.js';

const LEASE_MS = 1500;
let cluster: Cluster | undefined;
let store: Store | undefined;
const dirs: string[] = [];
afterAll(async () => {
  await store?.close();
  await cluster?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});


describe('a cluster of separate roles under kill -9', () => {
  it('hands partitions over by lease and counts every acknowledged batch exactly once', { timeout: 1_200_000 }, async () => {
    const c = (cluster = await startCluster({ ingest: 2, process: ['0/2', '1/2', '0/2'], query: 1, leaseMs: LEASE_MS, env: { CIPHERSTAT_RATE_LIMIT: '100000' } }));
    const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-cluster-store-'));
    dirs.push(dataDir);
    store = await openStore({ url: c.clickhouseUrl, dataDir, database: 'cipherstat' });

    // Two accounts in each partition (chosen by asking the engine's cityHash64, not by chance).
    const accounts: TestAccount[][] = [[], []];
    while (accounts[0]!.length < 2 || accounts[1]!.length < 2) {
      const a = await c.createAccount();
      const p = await c.partitionOf(a.accountId, 2);
      if (accounts[p]!.length < 2) accounts[p]!.push(a);
    }
    let rr = 0;
    const ingest = () => {
      const urls = c.ingestUrls();
      return urls[rr++ % urls.length]!;
    };
    const trackers: Tracker[][] = accounts.map((list) => list.map((a) => tracker(ingest, a)));
    const all = trackers.flat();
    const ids = (p: number) => accounts[p]!.map((a) => `'${a.accountId}'`).join(',');
    /** Markers written after `t` (epoch ms) for partition `p`'s accounts: only a live holder writes them. */
    const markedAfter = async (p: number, t: number) =>
      Number((await c.sql(`SELECT count() FROM processed WHERE account_id IN (${ids(p)}) AND processed_at > fromUnixTimestamp64Milli(${t})`))[0]![0]);

    let loading = true;
    const load = (async () => {
      while (loading) await Promise.all(all.map((t) => t.send()));
    })();
    const times: Record<string, number> = {};
    try {
      await until(async () => (await markedAfter(0, 0)) > 0 && (await markedAfter(1, 0)) > 0, 240_000, 'both partitions processing');

      // The second node for 0/2 waits and says why.
      const holder0 = c.holderOf('partition-0-of-2')!;
      expect(holder0, 'someone holds partition 0/2').toBeDefined();
      const standby = [c.node('process-0'), c.node('process-2')].find((n) => n !== holder0)!;
      await until(async () => standby.proc.output().includes(`partition-0-of-2 is held by ${c.lease('partition-0-of-2')!.holder}`), 240_000, 'the standby says why it waits');
      const epoch0 = c.lease('partition-0-of-2')!.epoch;

      // kill -9 the 0/2 holder: the standby takes over after the expiry.
      let killedAt = Date.now();
      await c.stop(holder0.name, 'SIGKILL');
      await until(async () => (await markedAfter(0, killedAt)) > 0, 240_000, 'partition 0/2 processed again after its holder died');
      times['partition 0/2 (standby takes over)'] = Date.now() - killedAt;
      expect(c.holderOf('partition-0-of-2')?.name).toBe(standby.name);
      expect(c.lease('partition-0-of-2')!.epoch).toBeGreaterThan(epoch0);
      expect(standby.proc.output()).toContain('lease partition-0-of-2 taken');
      await c.start(holder0.name, 'process', '0/2'); // back as the standby

      // kill -9 the only 1/2 node, restart it: it takes its partition back once the old lease expired.
      const holder1 = c.holderOf('partition-1-of-2')!;
      expect(holder1.name).toBe('process-1');
      const epoch1 = c.lease('partition-1-of-2')!.epoch;
      killedAt = Date.now();
      await c.stop('process-1', 'SIGKILL');
      const restarted = await c.start('process-1', 'process', '1/2');
      await until(async () => (await markedAfter(1, killedAt)) > 0, 240_000, 'partition 1/2 processed again after a restart');
      times['partition 1/2 (restarted node)'] = Date.now() - killedAt;
      expect(c.lease('partition-1-of-2')!.epoch).toBeGreaterThan(epoch1);
      expect(c.holderOf('partition-1-of-2')?.proc.child.pid).toBe(restarted.proc.child.pid);

      // kill -9 an ingest node (senders move to the other), then the query node; restart each.
      await c.stop('ingest-0', 'SIGKILL');
      const acked = all.reduce((n, t) => n + t.acked.size, 0);
      await until(async () => all.reduce((n, t) => n + t.acked.size, 0) > acked + 20, 240_000, 'batches acknowledged by the other ingest node');
      await c.start('ingest-0', 'ingest');
      await c.stop('query-0', 'SIGKILL');
      await c.start('query-0', 'query');
    } finally {
      loading = false;
      await load;
    }

    // Drain: every batch sent is retried until acknowledged, then processed.
    for (const t of all) await t.retryAll();
    for (const [p, list] of trackers.entries()) {
      for (const [i, t] of list.entries()) {
        const id = accounts[p]![i]!.accountId;
        await until(async () => Number((await c.sql(`SELECT count() FROM processed FINAL WHERE account_id = '${id}'`))[0]![0]) >= t.acked.size, 240_000, `${id} processed`);
      }
    }

    // Exactly once: one marker per acknowledged batch, all points, nothing unsent; one part per batch (no second processing).
    for (const [p, list] of trackers.entries()) for (const [i, t] of list.entries()) await expectExactlyOnce(store, accounts[p]![i]!.accountId, t);
    const every = `${ids(0)},${ids(1)}`;
    expect(await c.sql(`SELECT batch_id FROM processed WHERE account_id IN (${every}) GROUP BY account_id, batch_id HAVING uniqExact(part) > 1`)).toEqual([]);
    // No orphaned rollup row: every row's part has its markers (or compaction wrote it); a dead holder's are removed at takeover.
    await until(async () =>
      Number((await c.sql(`SELECT count() FROM rollups WHERE account_id IN (${every}) AND NOT startsWith(part, 'c:') AND (account_id, part) NOT IN (SELECT account_id, part FROM processed)`))[0]![0]) === 0, 240_000, 'no orphaned rollup rows');

    // The query node answers the ground truth: each batch is 5 points of values 1..5 named `orders`.
    const q = c.node('query-0');
    for (const [p, list] of accounts.entries()) {
      for (const [i, a] of list.entries()) {
        const sent = trackers[p]![i]!.acked.size;
        for (const [aggregation, want] of [['count', sent * POINTS_PER_BATCH], ['sum', sent * 15]] as const) {
          const res = await fetch(`${q.url}/v1/query`, {
            method: 'POST',
            headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
            body: JSON.stringify({ metric: 'orders', aggregation, interval: 'month', from: Date.now() - 40 * 86_400_000, to: Date.now() + 86_400_000 }),
          });
          expect(res.status).toBe(200);
          const body = (await res.json()) as { series: { points: [number, number][] }[] };
          expect(body.series[0]!.points.reduce((s, [, v]) => s + v, 0), `${a.accountId} ${aggregation}`).toBe(want);
        }
      }
    }
    console.log(`failover (kill -9 → partition processed again; lease ${LEASE_MS} ms + 5000 ms clock allowance): ${JSON.stringify(times)}; acknowledged ${all.reduce((n, t) => n + t.acked.size, 0)} batches`);
  });
});
