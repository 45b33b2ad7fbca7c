// Cluster benchmark (`npm run bench cluster`): separate roles as child processes on one
// ClickHouse HTTP endpoint (test/support/cluster.ts: the test-only endpoint over chDB, or a real
// server with CLICKHOUSE_TEST_URL) — 2 ingest nodes on the transport keyring, 1, 2 or 3 process
// nodes (partitions i/n, each owning its partition by lease), 1 query node.
//
//   throughput: the same backlog of sealed batches sent through both ingest nodes as fast as they
//               acknowledge, timed from the first send until every batch is processed, per
//               number of process nodes; beside it the process nodes' CPU per point (all
//               threads, /proc), which the machine's load does not inflate the way it does
//               wall time. The baseline is the 1-node run of the same script run. On a 2-core
//               machine more process nodes cannot be faster: this shows the coordination
//               overhead (partition polls, leases), not a speed-up.
//   failover:   with 2 partitions and a standby for 0/2 under a trickle of load, kill -9 the
//               0/2 holder and time until a batch of partition 0 is processed again (the
//               standby takes over after the lease's expiry plus the 5 s clock allowance); then
//               kill -9 the only 1/2 node, restart it and time the same for partition 1.
//
//   node --import tsx services/collector/bench/cluster.ts [--batches 1200] [--points 20] [--lease-ms 3000] [--nodes 1,2,3]
//
// Results: bench/results/cluster.json. Compaction is off (CIPHERSTAT_COMPACTION_INTERVAL_MS=0)
// so that every run does the same work.
import { parseArgs } from 'node:util';
import { fmt, processCpuSeconds, table, watchdog, writeResult } from '../../../bench/lib.mjs';
import { startCluster, type Cluster } from '../test/support/cluster.js';
import { envelope, points, post, type TestAccount } from '../test/support/collector.js';

const { values } = parseArgs({
  options: {
    batches: { type: 'string', default: '1200' },
    points: { type: 'string', default: '20' },
    'lease-ms': { type: 'string', default: '3000' },
    nodes: { type: 'string', default: '1,2,3' },
    concurrency: { type: 'string', default: '16' },
  },
});
const BATCHES = Number(values.batches);
const POINTS = Number(values.points);
const LEASE_MS = Number(values['lease-ms']);
const CONCURRENCY = Number(values.concurrency);
const NODES = values.nodes.split(',').map(Number);
const ACCOUNTS = 6;
const SKEW_MS = 5000;

const progress = (m: string) => console.error(`[cluster] ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, f: () => Promise<boolean>, ms = 300_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await sleep(100);
  }
}

const stopWatchdog = watchdog('cluster', 900);
const partitions = (n: number) => Array.from({ length: n }, (_, i) => `${i}/${n}`);
const processPids = (c: Cluster) => [...c.nodes.values()].filter((x) => x.role === 'process').map((x) => x.proc.child.pid!);
const cpu = (pids: number[]) => pids.reduce((s, p) => s + processCpuSeconds(p), 0);
const idList = (accounts: TestAccount[]) => accounts.map((a) => `'${a.accountId}'`).join(',');
const processedCount = async (c: Cluster, accounts: TestAccount[]) => Number((await c.sql(`SELECT count() FROM processed FINAL WHERE account_id IN (${idList(accounts)})`))[0]![0]);

/** Sends every body until acknowledged, `CONCURRENCY` at a time, round robin over the ingest nodes. */
async function sendAll(c: Cluster, bodies: Uint8Array[]): Promise<{ retries: number }> {
  let next = 0;
  let retries = 0;
  const worker = async () => {
    for (let i = next++; i < bodies.length; i = next++) {
      for (;;) {
        const urls = c.ingestUrls();
        const status = await post(urls[i % urls.length]!, bodies[i]!).then((r) => (r.body?.cancel(), r.status), () => 0);
        if (status === 202) break;
        retries++;
        await sleep(50);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { retries };
}

async function holders(c: Cluster, n: number): Promise<boolean> {
  return partitions(n).every((p) => c.holderOf(`partition-${p.replace('/', '-of-')}`) !== undefined);
}

interface Run { nodes: number; seconds: number; pointsPerSec: number; cpuUsPerPoint: number; retries: number }
interface Failover { case: string; ms: number }

async function throughput(n: number, failovers: Failover[]): Promise<Run> {
  progress(`${n} process node(s): starting the cluster`);
  const c = await startCluster({ ingest: 2, process: partitions(n), query: 1, leaseMs: LEASE_MS, env: { CIPHERSTAT_RATE_LIMIT: '1000000', CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
  try {
    const accounts: TestAccount[] = [];
    for (let i = 0; i < ACCOUNTS; i++) accounts.push(await c.createAccount());
    await until('every partition leased', () => holders(c, n));
    const bodies = Array.from({ length: BATCHES }, (_, i) => envelope(accounts[i % ACCOUNTS]!, points(POINTS, (j) => ({ value: j, name: ['orders', 'revenue'][j % 2]!, tags: { country: ['DE', 'FR', 'US'][j % 3]! } }))).bytes);
    progress(`${n} process node(s): sending ${fmt(BATCHES)} batches of ${POINTS} points`);
    const pids = processPids(c);
    const cpu0 = cpu(pids);
    const t0 = performance.now();
    const { retries } = await sendAll(c, bodies);
    await until('the backlog processed', async () => (await processedCount(c, accounts)) >= BATCHES);
    const seconds = (performance.now() - t0) / 1000;
    const run = { nodes: n, seconds, pointsPerSec: (BATCHES * POINTS) / seconds, cpuUsPerPoint: ((cpu(pids) - cpu0) * 1e6) / (BATCHES * POINTS), retries };
    progress(`${n} process node(s): ${fmt(run.pointsPerSec)} points/s, ${fmt(run.cpuUsPerPoint, 1)} µs CPU per point`);
    if (n === 2) failovers.push(...(await failover(c, accounts)));
    return run;
  } finally {
    await c.close();
  }
}

async function failover(c: Cluster, all: TestAccount[]): Promise<Failover[]> {
  const byPartition: TestAccount[][] = [[], []];
  for (const a of all) byPartition[await c.partitionOf(a.accountId, 2)]!.push(a);
  while (byPartition[0]!.length === 0 || byPartition[1]!.length === 0) {
    const a = await c.createAccount();
    byPartition[await c.partitionOf(a.accountId, 2)]!.push(a);
  }
  const standby = await c.start('process-standby', 'process', '0/2');
  await until('the standby waits', async () => standby.proc.output().includes('partition-0-of-2 is held by'));
  let trickling = true;
  const trickle = (async () => {
    for (let i = 0; trickling; i++) {
      const a = [byPartition[0]![0]!, byPartition[1]![0]!][i % 2]!;
      const urls = c.ingestUrls();
      await post(urls[i % urls.length]!, envelope(a, points(POINTS)).bytes).then((r) => r.body?.cancel(), () => undefined);
      await sleep(50);
    }
  })();
  const markedAfter = async (accounts: TestAccount[], t: number) =>
    Number((await c.sql(`SELECT count() FROM processed WHERE account_id IN (${idList(accounts)}) AND processed_at > fromUnixTimestamp64Milli(${t})`))[0]![0]) > 0;
  const out: Failover[] = [];
  try {
    await until('partition 0 processing', () => markedAfter(byPartition[0]!, Date.now() - 1000));
    const holder = c.holderOf('partition-0-of-2')!;
    let killedAt = Date.now();
    await c.stop(holder.name, 'SIGKILL');
    await until('partition 0/2 taken over', () => markedAfter(byPartition[0]!, killedAt));
    out.push({ case: 'kill -9 of the 0/2 holder, a standby waiting', ms: Date.now() - killedAt });
    const holder1 = c.holderOf('partition-1-of-2')!;
    killedAt = Date.now();
    await c.stop(holder1.name, 'SIGKILL');
    await c.start(holder1.name, 'process', '1/2');
    await until('partition 1/2 taken back', () => markedAfter(byPartition[1]!, killedAt));
    out.push({ case: 'kill -9 of the only 1/2 node, restarted at once', ms: Date.now() - killedAt });
  } finally {
    trickling = false;
    await trickle;
  }
  return out;
}

const runs: Run[] = [];
const failovers: Failover[] = [];
for (const n of NODES) runs.push(await throughput(n, failovers));
stopWatchdog();

const base = runs.find((r) => r.nodes === 1) ?? runs[0]!;
console.log(`\ncluster: 2 ingest + N process + 1 query nodes on one ClickHouse endpoint; ${fmt(BATCHES)} batches x ${POINTS} points; lease ${LEASE_MS} ms; this machine: load ${(await import('node:os')).loadavg()[0]!.toFixed(1)}`);
console.log('On 2 cores more process nodes share the same CPUs: the ratio shows coordination overhead, not speed-up.\n');
table(
  runs.map((r) => ({
    'process nodes': r.nodes,
    'points/s (send → processed)': fmt(r.pointsPerSec),
    'ratio to 1 node': fmt(r.pointsPerSec / base.pointsPerSec, 2),
    'process CPU µs/point': fmt(r.cpuUsPerPoint, 1),
    'CPU ratio to 1 node': fmt(r.cpuUsPerPoint / base.cpuUsPerPoint, 2),
    retries: r.retries,
    'target (throughput ≥ 0.5x of 1 node)': r.pointsPerSec >= 0.5 * base.pointsPerSec ? 'PASS' : 'FAIL',
  })),
);
console.log('');
const failoverTarget = LEASE_MS + SKEW_MS + 10_000;
table(failovers.map((f) => ({ failover: f.case, 'kill -9 → processed again (ms)': fmt(f.ms), [`target ≤ ${fmt(failoverTarget)} ms (lease + 5 s + 10 s)`]: f.ms <= failoverTarget ? 'PASS' : 'FAIL' })));
writeResult('cluster', { batches: BATCHES, pointsPerBatch: POINTS, leaseMs: LEASE_MS, runs, failovers, failoverTargetMs: failoverTarget });
process.exit(0);
