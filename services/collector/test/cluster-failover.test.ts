/**
 * More than one machine, under failure (README, "Running on a ClickHouse cluster"): 2 ingest
 * nodes on the transport keyring, process nodes for partitions 0/2 and 1/2 plus a second node
 * for 0/2, and a query node — each the built CLI in its own child process — on one ClickHouse
 * endpoint and one shared keyring directory (support/cluster.ts). Under steady load through both
 * ingest nodes:
 * - the 0/2 holder is stopped mid-tick after its rollup rows are written and before its
 *   processed markers (test hook CIPHERSTAT_TEST_PAUSE_AT, config.ts): while it hangs there it
 *   keeps its lease and the second 0/2 node waits, saying who holds the partition; after
 *   kill -9 the waiting node takes over, removes the dead tick's rows and processes the partition;
 * - the 1/2 holder is stopped after its markers are written (its batches are committed, but not
 *   yet done in its memory), killed and restarted: it takes its partition back and processes
 *   none of those batches again;
 * - kill -9 an ingest node and the query node, restarting each.
 * After the load drains, every acknowledged batch is counted exactly once (one processed marker,
 * one part), no rollup row is orphaned, the query node's sums and counts equal the ground truth
 * sent, and its answers to eleven aggregations equal a single node's fed the same ciphertexts.
 * Leases are short and explicit (CIPHERSTAT_LEASE_MS); every wait is a wait-for-condition with a
 * generous deadline; no timing is asserted (times are printed).
 */
import { until } from './lifecycle-support.js';
import { afterAll, describe, expect, it } from 'vitest';
import { expectCountedExactlyOnce, spreadPoint, startCluster, type Cluster, type ClusterNode, type Sender } from './support/cluster.js';
import { tracker } from './support/faults.js';
import type { TestAccount } from './support/collector.js';

/**
 * Short, but with room: the hanging holder must keep renewing (every LEASE_MS / 3, each renewal an
 * fsync under the keyring lock) on a machine at load 30-40, or it stops itself — correctly, but
 * then the test's "the standby still waits" would not hold.
 */
const LEASE_MS = 3000;
let cluster: Cluster | undefined;
afterAll(() => cluster?.close());

/** The part of the tick a node's test hook stopped at `point` (from its log line). */
const pausedPart = (node: ClusterNode, point: string) => new RegExp(`test hook: tick paused at ${point} \\(part ([0-9a-f]+)\\)`).exec(node.proc.output())?.[1];

describe('a cluster of separate roles under kill -9', () => {
  it('hands partitions over by lease when holders die mid-tick and counts every acknowledged batch exactly once, as a single node would', { timeout: 1_500_000 }, async () => {
    const c = (cluster = await startCluster({ ingest: 2, process: [], query: 1, leaseMs: LEASE_MS, env: { CIPHERSTAT_RATE_LIMIT: '100000' } }));

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
    const t0 = Date.now();
    const senders: Sender[] = accounts.flat().map((account) => ({ account, tracker: tracker(ingest, account, spreadPoint(t0)) }));
    const ids = (p: number) => accounts[p]!.map((a) => `'${a.accountId}'`).join(',');
    /** Markers written after `t` (epoch ms) for partition `p`'s accounts: only a live holder writes them. */
    const markedAfter = async (p: number, t: number) =>
      Number((await c.sql(`SELECT count() FROM processed WHERE account_id IN (${ids(p)}) AND processed_at > fromUnixTimestamp64Milli(${t})`))[0]![0]);
    const rowsOfPart = async (table: 'rollups' | 'processed', part: string) => Number((await c.sql(`SELECT count() FROM ${table} WHERE part = '${part}'`))[0]![0]);

    let loading = true;
    const load = (async () => {
      while (loading) await Promise.all(senders.map((s) => s.tracker.send()));
    })();
    const times: Record<string, number> = {};
    try {
      // Each holder's third tick stops at a chosen point of its commit; 0/2's holder first, then its standby.
      const holder0 = await c.start('process-0', 'process', '0/2', { CIPHERSTAT_TEST_PAUSE_AT: 'rollups-written@3' });
      await until(async () => c.holderOf('partition-0-of-2') === holder0, 240_000, 'process-0 holds partition 0/2');
      await c.start('process-1', 'process', '1/2', { CIPHERSTAT_TEST_PAUSE_AT: 'markers-written@3' });
      const standby = await c.start('process-2', 'process', '0/2');

      // The second node for 0/2 waits and says who holds it.
      const epoch0 = c.lease('partition-0-of-2')!.epoch;
      await until(async () => standby.proc.output().includes(`partition-0-of-2 is held by ${c.lease('partition-0-of-2')!.holder} (epoch ${epoch0}): waiting`), 240_000, 'the standby says who holds 0/2');

      // 0/2's holder hangs after its rollup rows, before its markers: the rows are there, unmarked.
      const part0 = await until(async () => pausedPart(holder0, 'rollups-written'), 240_000, 'process-0 paused at rollups-written');
      expect(await rowsOfPart('rollups', part0)).toBeGreaterThan(0);
      expect(await rowsOfPart('processed', part0)).toBe(0);
      // A node hanging mid-tick keeps renewing its lease: the standby still waits.
      const renewed = c.lease('partition-0-of-2')!.expiresAt;
      await until(async () => c.lease('partition-0-of-2')!.expiresAt > renewed, 240_000, 'the hanging holder renews its lease');
      expect(c.holderOf('partition-0-of-2')).toBe(holder0);
      expect(standby.proc.output()).not.toContain('lease partition-0-of-2 taken');

      // kill -9 there: the standby takes over after the expiry, removes the dead tick's rows, processes the partition.
      let killedAt = Date.now();
      await c.stop('process-0', 'SIGKILL');
      await until(async () => (await markedAfter(0, killedAt)) > 0, 240_000, 'partition 0/2 processed again after its holder died');
      times['0/2 killed after its rollups, standby takes over'] = Date.now() - killedAt;
      expect(c.holderOf('partition-0-of-2')).toBe(standby);
      expect(c.lease('partition-0-of-2')!.epoch).toBeGreaterThan(epoch0);
      expect(standby.proc.output()).toContain('lease partition-0-of-2 taken');
      await until(async () => (await rowsOfPart('rollups', part0)) === 0, 240_000, "the dead tick's rollup rows removed");
      await c.start('process-0', 'process', '0/2'); // back as the standby, without the hook

      // 1/2's holder hangs after its markers (committed, not yet done in memory): kill -9, restart.
      const holder1 = c.node('process-1');
      const part1 = await until(async () => pausedPart(holder1, 'markers-written'), 240_000, 'process-1 paused at markers-written');
      expect(await rowsOfPart('processed', part1)).toBeGreaterThan(0);
      expect(c.holderOf('partition-1-of-2')).toBe(holder1);
      const epoch1 = c.lease('partition-1-of-2')!.epoch;
      killedAt = Date.now();
      await c.stop('process-1', 'SIGKILL');
      const restarted = await c.start('process-1', 'process', '1/2');
      await until(async () => (await markedAfter(1, killedAt)) > 0, 240_000, 'partition 1/2 processed again after a restart');
      times['1/2 killed after its markers, restarted'] = Date.now() - killedAt;
      expect(c.lease('partition-1-of-2')!.epoch).toBeGreaterThan(epoch1);
      expect(c.holderOf('partition-1-of-2')).toBe(restarted);

      // kill -9 an ingest node (senders move to the other), then the query node; restart each.
      await c.stop('ingest-0', 'SIGKILL');
      const acked = () => senders.reduce((n, s) => n + s.tracker.acked.size, 0);
      const before = acked();
      await until(async () => acked() > before + 20, 240_000, 'batches acknowledged by the other ingest node');
      await c.start('ingest-0', 'ingest');
      await c.stop('query-0', 'SIGKILL');
      await c.start('query-0', 'query');
    } finally {
      loading = false;
      await load;
    }

    const { acknowledged, compared, ms } = await expectCountedExactlyOnce(c, senders, t0);
    console.log(`failover (kill -9 → partition processed again; lease ${LEASE_MS} ms + 5000 ms clock allowance): ${JSON.stringify(times)}; acknowledged ${acknowledged} batches; ${compared} answers equal a single node's; after the load (ms): ${JSON.stringify(ms)}`);
  });
});
