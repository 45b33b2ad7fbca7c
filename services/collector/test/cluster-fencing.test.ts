/**
 * A stale lease holder's late commit is fenced (ARCHITECTURE.md, "Fencing a stale lease holder in
 * storage"; README, "Ownership by lease"). Two process nodes for the same partition, an ingest
 * and a query node, each the built CLI in its own child process on one ClickHouse endpoint
 * (support/cluster.ts), stopped at chosen points with CIPHERSTAT_TEST_STOP_AT (the node logs and
 * SIGSTOPs itself there; the test resumes it with SIGCONT):
 *
 * 1. node A holds the partition and stops right before its first tick's commit — its lease check
 *    passed, its rollup rows are written, its processed markers are not;
 * 2. its lease runs out; node B takes the partition over (next epoch), fences it, removes A's
 *    rows, and stops before processing;
 * 3. A resumes: its markers are committed now — after the fence — and A notices it lost the lease;
 * 4. B resumes and processes: the batches A's late markers name are still pending for B (the
 *    stale markers do not count), B's recovery deletes the stale markers.
 *
 * Then every acknowledged batch is counted exactly once (one marker, all points, the query node's
 * count and sum equal what was sent), no rollup row is orphaned, and A processes nothing more.
 * Without the fence B would take A's late markers for processed batches whose rows were removed:
 * those batches would never be counted. Leases are explicit (CIPHERSTAT_LEASE_MS, long enough that
 * B's lease outlasts the steps while it is stopped); every wait is for a condition with a generous
 * deadline; nothing is timed.
 */
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { until } from './lifecycle-support.js';
import { startCluster, type Cluster, type ClusterNode } from './support/cluster.js';
import { expectExactlyOnce, POINTS_PER_BATCH, tracker } from './support/faults.js';

/** B's lease must outlast A's resumption (steps 3-4) while B is stopped: generous on a loaded machine. */
const LEASE_MS = 20_000;
const BATCHES = 40;
const LEASE = 'partition-0-of-1';
let cluster: Cluster | undefined;
afterAll(async () => {
  for (const n of cluster?.nodes.values() ?? []) if (n.proc.child.exitCode === null) n.proc.child.kill('SIGCONT');
  await cluster?.close();
});

/** Whether the node's process is stopped (state T in /proc/PID/stat). */
const stopped = (n: ClusterNode): boolean => {
  try {
    const stat = readFileSync(`/proc/${n.proc.child.pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
  } catch {
    return false;
  }
};

/** `until`, failing with the process nodes' last log lines (what they were doing). */
const waitFor = async <T>(fn: () => Promise<T | undefined | false>, what: string): Promise<T> => {
  try {
    return await until(fn, Number(process.env.FENCING_WAIT_MS ?? 300_000), what);
  } catch (e) {
    const state = (n: ClusterNode) => {
      try {
        return readFileSync(`/proc/${n.proc.child.pid}/status`, 'utf8').split('\n').filter((l) => /^(State|Threads)/.test(l)).join(' ');
      } catch {
        return `exit ${n.proc.child.exitCode} ${n.proc.child.signalCode}`;
      }
    };
    const logs = [...(cluster?.nodes.values() ?? [])].filter((n) => n.role === 'process').map((n) => `--- ${n.name} (${state(n)})\n${n.proc.output().slice(-6000)}`);
    throw new Error(`${(e as Error).message}\n${logs.join('\n')}`);
  }
};

describe('fencing a stale partition holder (SIGSTOP before its commit)', () => {
  it("ignores and removes the stale holder's late markers; every acknowledged batch counts exactly once", { timeout: 900_000 }, async () => {
    const c = (cluster = await startCluster({
      ingest: 1,
      process: [],
      query: 1,
      leaseMs: LEASE_MS,
      // A's connection must survive its pause, so that its late insert reaches the server (a real
      // server's keep_alive_timeout may close it first: then the late insert fails instead).
      clickhouseKeepAliveMs: 600_000,
      // Recovery rounds often (the stale markers go in B's next one); no scheduled compaction (rows stay per tick).
      env: { CIPHERSTAT_RATE_LIMIT: '100000', CIPHERSTAT_PROCESS_RECOVERY_INTERVAL_MS: '500', CIPHERSTAT_COMPACTION_INTERVAL_MS: '0', CIPHERSTAT_LOG_LEVEL: process.env.FENCING_LOG_LEVEL ?? 'info' },
    }));
    const store = c.store;
    const account = await c.createAccount();
    const id = account.accountId;
    const sql = async (q: string) => Number((await c.sql(q))[0]![0]);
    const markers = (where: string) => sql(`SELECT count() FROM processed WHERE account_id = '${id}' AND ${where}`);

    // Acknowledged before any process node runs: they wait in storage.
    const t = tracker(() => c.ingestUrls()[0]!, account);
    for (let i = 0; i < BATCHES; i++) await t.send();
    await t.retryAll();
    expect(t.acked.size).toBe(BATCHES);

    // 1. A takes the partition and stops right before its first commit.
    const a = await c.start('process-a', 'process', '0/1', { CIPHERSTAT_TEST_STOP_AT: 'commit' });
    // (only CIPHERSTAT_TEST_STOP_AT stops a node; its log line may reach the pipe only once it runs again)
    await waitFor(async () => stopped(a), 'A stopped before its commit');
    const epochA = c.lease(LEASE)!.epoch;
    expect(c.lease(LEASE)!.holder).toContain(`/${a.proc.child.pid}/`);
    const rowsOfA = await sql(`SELECT count() FROM rollups WHERE account_id = '${id}'`);
    expect(rowsOfA).toBeGreaterThan(0); // written, not committed
    expect(await markers('1')).toBe(0);

    // 2. A's lease runs out; B takes over, fences, removes A's rows, and stops before processing.
    const b = await c.start('process-b', 'process', '0/1', { CIPHERSTAT_TEST_STOP_AT: 'takeover' });
    await waitFor(async () => stopped(b), 'B took over and stopped');
    const lease = c.lease(LEASE)!;
    expect(lease.holder).toContain(`/${b.proc.child.pid}/`);
    const epochB = lease.epoch;
    expect(epochB).toBeGreaterThan(epochA);
    expect(await sql(`SELECT count() FROM fences WHERE partition_index = 0 AND partition_count = 1 AND epoch = ${epochB}`)).toBe(1);
    expect(await sql(`SELECT count() FROM rollups WHERE account_id = '${id}'`)).toBe(0); // A's uncommitted rows are gone

    // 3. A resumes: its markers land after the fence, and it finds its lease lost.
    a.proc.child.kill('SIGCONT');
    await waitFor(async () => (await markers(`epoch = ${epochA}`)) > 0, "A's late markers committed");
    await waitFor(async () => a.proc.output().includes(`lease ${LEASE} lost to`), 'A says it lost the lease');
    const stale = await markers(`epoch = ${epochA}`);
    // Its tick is abandoned at the second lease check (it does not count its markers), not retried.
    await waitFor(async () => a.proc.output().includes('lease_lost') || a.proc.output().includes('not valid long enough to commit'), "A's tick abandoned");
    expect(c.lease(LEASE)!.holder).toContain(`/${b.proc.child.pid}/`); // B still holds it (stopped, within its lease)
    // The batches A's late markers name are still pending: they do not count.
    const pendingNow = (await store.pendingBatches(Date.now() - 86_400_000, 10_000)).filter((r) => r.accountId === id).length;
    expect(pendingNow).toBe(BATCHES);
    // Keep A out of the way while B works (it could take the lease back only once B's ran out).
    a.proc.child.kill('SIGSTOP');
    await waitFor(async () => stopped(a), 'A stopped again');

    // 4. B resumes and processes every batch (those A marked late too); its recovery deletes A's stale markers.
    b.proc.child.kill('SIGCONT');
    await waitFor(async () => (await markers(`epoch = ${epochB}`)) >= BATCHES, 'B processed every batch');
    await waitFor(async () => (await markers(`epoch = ${epochA}`)) === 0, "A's stale markers removed");
    expect(await markers(`epoch NOT IN (${epochA}, ${epochB})`)).toBe(0);

    // Exactly once: one marker per acknowledged batch with all its points, one part each, nothing orphaned.
    await expectExactlyOnce(store, id, t);
    expect(await c.sql(`SELECT batch_id FROM processed WHERE account_id = '${id}' GROUP BY batch_id HAVING uniqExact(part) > 1`)).toEqual([]);
    await waitFor(async () => (await sql(`SELECT count() FROM rollups WHERE account_id = '${id}' AND (account_id, part) NOT IN (SELECT account_id, part FROM processed)`)) === 0, 'no orphaned rollup rows');
    // The query node answers the ground truth: each batch is 5 points of values 1..5 named `orders`.
    for (const [aggregation, want] of [['count', BATCHES * POINTS_PER_BATCH], ['sum', BATCHES * 15]] as const) {
      const res = await fetch(`${c.node('query-0').url}/v1/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metric: 'orders', aggregation, interval: 'month', from: Date.now() - 40 * 86_400_000, to: Date.now() + 86_400_000 }),
      });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { series: { points: [number, number][] }[] };
      expect(body.series[0]!.points.reduce((s, [, v]) => s + v, 0), aggregation).toBe(want);
    }

    // A, resumed again, stays stopped: B holds the partition, A waits and writes nothing.
    a.proc.child.kill('SIGCONT');
    await waitFor(async () => a.proc.output().includes(`${LEASE} is held by ${lease.holder} (epoch ${epochB}): waiting`), 'A waits for B');
    await t.send(); // one more batch: processed by B
    await t.retryAll();
    await waitFor(async () => (await markers(`epoch = ${epochB}`)) >= BATCHES + 1, 'the new batch processed');
    expect(await markers(`epoch != ${epochB}`)).toBe(0);
    console.log(`fencing: A (epoch ${epochA}) committed ${stale} markers late, after B's fence (epoch ${epochB}); none counted, all removed; ${BATCHES + 1} batches counted once`);
  });
});
