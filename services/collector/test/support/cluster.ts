/**
 * A multi-node collector on one machine: every node the built CLI (`cipherstat serve`) in a
 * child process with its own address, all on one ClickHouse HTTP endpoint (the test-only one
 * over chDB, or a real server with CLICKHOUSE_TEST_URL). Process and query nodes share one data
 * directory (the shared keyring directory, where the leases live too) and one master key;
 * ingest nodes run on the transport keyring `cipherstat keyring export-transport` wrote.
 * Used by cluster tests and by `npm run bench cluster`.
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { startClickHouseHttp, type ClickHouseHttp } from './clickhouse-http.js';
import { expect } from 'vitest';
import { ADMIN_TOKEN, post, type TestAccount } from './collector.js';
import type { LeaseRecord } from '../../src/keyring/leases.js';
import { openStore, type Store } from '../../src/storage/index.js';
import { CLI, expectExactlyOnce, POINTS_PER_BATCH, startCollectorProcess, stopProcess, type CollectorProcess, type Tracker } from './faults.js';
import { until } from '../lifecycle-support.js';

const exec = promisify(execFile);

export type NodeRole = 'ingest' | 'process' | 'query';

export interface ClusterNode {
  name: string;
  role: NodeRole;
  /** Process nodes: `i/n`. */
  partition?: string;
  proc: CollectorProcess;
  url: string;
}

export interface ClusterOptions {
  ingest?: number;
  /** One process node per entry, by partition (`['0/2', '1/2']`); a partition may appear twice (a standby). */
  process?: string[];
  query?: number;
  /** CIPHERSTAT_LEASE_MS of the process nodes (short in tests: explicit, never the default). */
  leaseMs?: number;
  /** Environment of every node (CIPHERSTAT_*). */
  env?: Record<string, string>;
  /** The test endpoint's keep-alive timeout (a test that pauses a node longer keeps its connections open). */
  clickhouseKeepAliveMs?: number;
}

export interface Cluster {
  /** The ClickHouse HTTP endpoint every node uses. */
  clickhouseUrl: string;
  /** A store on that endpoint (database `cipherstat`) for the tests' checks. */
  store: Store;
  nodes: Map<string, ClusterNode>;
  ingestUrls(): string[];
  node(name: string): ClusterNode;
  /** Starts a node (a name already used is restarted on the same directory); `env` adds to this node's environment only. */
  start(name: string, role: NodeRole, partition?: string, env?: Record<string, string>): Promise<ClusterNode>;
  /** Stops a node: SIGTERM (graceful) or SIGKILL (a crash). */
  stop(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Creates an account through a query node's admin API. */
  createAccount(): Promise<TestAccount>;
  /** One statement on the ClickHouse endpoint (database `cipherstat`); TSV rows. */
  sql(query: string): Promise<string[][]>;
  /** The lease file `name` in the shared keyring (`partition-0-of-2`, `compactor`), or undefined. */
  lease(name: string): LeaseRecord | undefined;
  /** The running node whose process holds lease `name` now (by the PID its holder names). */
  holderOf(name: string): ClusterNode | undefined;
  /** `cityHash64(accountId) % n`: the partition an account belongs to. */
  partitionOf(accountId: string, n: number): Promise<number>;
  /**
   * A single-node collector (role `all`) beside the cluster: database `cipherstat_single` on the
   * same endpoint, a copy of the shared keyring (same master key, no leases) and the rows of
   * `accountIds` copied, so it opens the very batches the cluster's ingest nodes acknowledged
   * and answers the same read tokens. Stopped by close().
   */
  startSingleNode(accountIds: string[]): Promise<CollectorProcess>;
  /** Every node stopped, the endpoint closed, the directories removed. */
  close(): Promise<void>;
}

export async function startCluster(o: ClusterOptions = {}): Promise<Cluster> {
  const dirs: string[] = [];
  const tmp = (name: string) => {
    const d = mkdtempSync(join(tmpdir(), `cipherstat-cluster-${name}-`));
    dirs.push(d);
    return d;
  };
  const external = process.env.CLICKHOUSE_TEST_URL;
  const ch: ClickHouseHttp | undefined = external ? undefined : await startClickHouseHttp({ dataDir: tmp('clickhouse'), keepAliveTimeoutMs: o.clickhouseKeepAliveMs });
  const clickhouseUrl = external ?? ch!.url;
  const shared = tmp('shared');
  const ingestDir = join(tmp('ingest'), 'data');
  const masterKey = toBase64(randomBytes(32));
  const nodes = new Map<string, ClusterNode>();
  const store = await openStore({ url: clickhouseUrl, dataDir: tmp('store'), database: 'cipherstat' });
  const base = { CLICKHOUSE_URL: clickhouseUrl, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_IP_RATE_LIMIT: '1000000', CIPHERSTAT_IP_BYTE_RATE: String(1 << 30), ...o.env };

  const singles: CollectorProcess[] = [];
  const start = async (name: string, role: NodeRole, partition?: string, nodeEnv: Record<string, string> = {}): Promise<ClusterNode> => {
    const env: Record<string, string> =
      role === 'ingest'
        ? { ...base, CIPHERSTAT_ROLE: 'ingest' } // its own master key, in its data directory
        : {
            ...base,
            CIPHERSTAT_ROLE: role,
            CIPHERSTAT_MASTER_KEY: masterKey,
            ...(partition ? { CIPHERSTAT_PROCESS_PARTITION: partition } : {}),
            ...(o.leaseMs ? { CIPHERSTAT_LEASE_MS: String(o.leaseMs) } : {}),
            ...nodeEnv,
          };
    const proc = await startCollectorProcess(role === 'ingest' ? ingestDir : shared, env);
    const node = { name, role, partition, proc, url: proc.url };
    nodes.set(name, node);
    return node;
  };

  const cluster: Cluster = {
    clickhouseUrl,
    store,
    nodes,
    ingestUrls: () => [...nodes.values()].filter((n) => n.role === 'ingest' && n.proc.child.exitCode === null && n.proc.child.signalCode === null).map((n) => n.url),
    node: (name) => {
      const n = nodes.get(name);
      if (!n) throw new Error(`no node ${name}`);
      return n;
    },
    start,
    stop: async (name, signal = 'SIGTERM') => stopProcess(cluster.node(name).proc, signal),
    async createAccount() {
      const q = [...nodes.values()].find((n) => n.role === 'query');
      if (!q) throw new Error('no query node');
      const res = await fetch(`${q.url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
      if (res.status !== 201) throw new Error(`create account: ${res.status} ${await res.text()}`);
      return (await res.json()) as TestAccount;
    },
    async sql(query) {
      const res = await fetch(`${clickhouseUrl}/?database=cipherstat`, { method: 'POST', body: query });
      const text = await res.text();
      if (!res.ok) throw new Error(`clickhouse: ${res.status} ${text}`);
      return text.split('\n').filter(Boolean).map((l) => l.split('\t'));
    },
    lease: (name) => {
      try {
        return JSON.parse(readFileSync(join(shared, 'keyring', 'leases', `${name}.json`), 'utf8')) as LeaseRecord;
      } catch {
        return undefined;
      }
    },
    holderOf: (name) => {
      const l = cluster.lease(name);
      const pid = l?.holder ? Number(l.holder.split('/')[1]) : NaN;
      return [...nodes.values()].find((n) => n.proc.child.pid === pid && n.proc.child.exitCode === null && n.proc.child.signalCode === null);
    },
    async partitionOf(accountId, n) {
      if (!/^[A-Za-z0-9_-]+$/.test(accountId) || !Number.isInteger(n)) throw new Error('bad input');
      return Number((await cluster.sql(`SELECT cityHash64('${accountId}') % ${n}`))[0]![0]);
    },
    async startSingleNode(accountIds) {
      const dir = tmp('single');
      cpSync(join(shared, 'keyring'), join(dir, 'keyring'), { recursive: true, filter: (src) => !/[/\\](leases|\.lock)$/.test(src) });
      const single = await startCollectorProcess(dir, {
        ...base,
        CLICKHOUSE_DATABASE: 'cipherstat_single',
        CIPHERSTAT_ROLE: 'all',
        CIPHERSTAT_MASTER_KEY: masterKey,
        CIPHERSTAT_MAX_PROCESS_LAG_MS: '0',
      });
      singles.push(single);
      if (!accountIds.every((id) => /^[A-Za-z0-9_-]+$/.test(id))) throw new Error('bad account id');
      await cluster.sql(`INSERT INTO cipherstat_single.accounts SELECT * FROM cipherstat.accounts WHERE account_id IN (${accountIds.map((id) => `'${id}'`).join(',')})`);
      return single;
    },
    async close() {
      await Promise.all([...nodes.values()].map((n) => n.proc).concat(singles).map((p) => stopProcess(p, 'SIGKILL')));
      await store.close();
      await ch?.close();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };

  try {
    // The query node first: it creates the schema and the keyring (with the transport key).
    for (let i = 0; i < (o.query ?? 1); i++) await start(`query-${i}`, 'query');
    await exec(process.execPath, [CLI, 'keyring', 'export-transport', '--out', ingestDir], { env: { ...process.env, CIPHERSTAT_DATA_DIR: shared, CIPHERSTAT_MASTER_KEY: masterKey } });
    await Promise.all([
      ...Array.from({ length: o.ingest ?? 2 }, (_, i) => start(`ingest-${i}`, 'ingest')),
      ...(o.process ?? ['0/2', '1/2']).map((p, i) => start(`process-${i}`, 'process', p)),
    ]);
  } catch (e) {
    await cluster.close();
    throw e;
  }
  return cluster;
}

/** One sender of the load: an account and what it sent and had acknowledged. */
export interface Sender {
  account: TestAccount;
  tracker: Tracker;
}

/**
 * Point `i` of a sender's `n`-th batch, spread so that aggregations over time and tags differ
 * from one bucket to the next: times over the last 46 hours (whole and half-hour zones cut
 * them differently), integer values 1..97 (sums exact in floating point, whatever the order of
 * addition), tag `k` of 3 values.
 */
export const spreadPoint = (t0: number) => (i: number, n: number) => ({
  time: t0 - ((((n * POINTS_PER_BATCH + i) * 7919) % (46 * 3600)) * 1000 + ((n * 7 + i) % 1000)),
  value: ((n * 31 + i * 17) % 97) + 1,
  tags: { k: String((n + i) % 3) },
});

/** What a query node answers (`series` only), every series sorted by its tags. */
export async function answer(url: string, readToken: string, body: object): Promise<unknown> {
  const res = await fetch(`${url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${readToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`query ${JSON.stringify(body)}: ${res.status} ${text}`);
  const { series } = JSON.parse(text) as { series: { tags: Record<string, string> }[] };
  return series.sort((a, b) => JSON.stringify(a.tags).localeCompare(JSON.stringify(b.tags)));
}

/** The aggregations compared between the cluster's query node and a single node (`t0`: when the load began). */
export const comparedQueries = (t0: number) => {
  const range = { metric: 'orders', from: t0 - 3 * 86_400_000, to: t0 + 3_600_000 };
  return [
    { ...range, aggregation: 'count', interval: 'hour' },
    { ...range, aggregation: 'sum', interval: 'hour', groupBy: ['k'] },
    { ...range, aggregation: 'p95', interval: 'hour', groupBy: ['k'] },
    { ...range, aggregation: 'p50', interval: 'day' },
    { ...range, aggregation: 'min', interval: 'hour', filter: { k: '1' } },
    { ...range, aggregation: 'max', interval: 'day', groupBy: ['k'] },
    { ...range, aggregation: 'avg', interval: 'hour' },
    { ...range, aggregation: 'sum', interval: 'hour', timezone: 'Asia/Kolkata' },
    { ...range, aggregation: 'p95', interval: 'hour', timezone: 'Asia/Kolkata', groupBy: ['k'] },
    { ...range, aggregation: 'count', interval: 'hour', timezone: 'Asia/Kathmandu' },
    { ...range, aggregation: 'count', interval: 'minute', from: t0 - 2 * 3_600_000, to: t0 },
  ];
};

/**
 * After the load: every batch sent is retried until acknowledged and processed; then every
 * acknowledged batch is counted exactly once (one marker with all its points, one part, nothing
 * unsent), no rollup row is orphaned, the query node's count and sum equal the ground truth sent,
 * and its answers to `comparedQueries` equal those of a single node fed the same acknowledged
 * ciphertexts.
 */
export async function expectCountedExactlyOnce(c: Cluster, senders: Sender[], t0: number): Promise<{ acknowledged: number; compared: number; ms: Record<string, number> }> {
  const started = Date.now();
  for (const { tracker: t } of senders) await t.retryAll();
  const countIn = async (db: string, id: string) => Number((await c.sql(`SELECT count() FROM ${db}.processed FINAL WHERE account_id = '${id}'`))[0]![0]);
  for (const { account, tracker: t } of senders) await until(async () => (await countIn('cipherstat', account.accountId)) >= t.acked.size, 300_000, `${account.accountId} processed`);

  for (const { account, tracker: t } of senders) await expectExactlyOnce(c.store, account.accountId, t);
  const every = senders.map((s) => `'${s.account.accountId}'`).join(',');
  expect(await c.sql(`SELECT account_id, batch_id FROM processed WHERE account_id IN (${every}) GROUP BY account_id, batch_id HAVING uniqExact(part) > 1`), 'a batch processed by two ticks').toEqual([]);
  // Every rollup row's part has its markers (or compaction wrote it): a dead holder's rows are removed at takeover.
  const orphans = `SELECT count() FROM rollups WHERE account_id IN (${every}) AND NOT startsWith(part, 'c:') AND (account_id, part) NOT IN (SELECT account_id, part FROM processed)`;
  await until(async () => Number((await c.sql(orphans))[0]![0]) === 0, 300_000, 'no orphaned rollup rows');

  // The ground truth sent: count and sum of every acknowledged point.
  const q = [...c.nodes.values()].find((n) => n.role === 'query')!;
  const month = { metric: 'orders', interval: 'month', from: t0 - 40 * 86_400_000, to: t0 + 86_400_000 };
  for (const { account, tracker: t } of senders) {
    const acked = [...t.acked].flatMap((id) => t.points.get(id)!);
    for (const [aggregation, want] of [['count', acked.length], ['sum', acked.reduce((s, p) => s + p.value, 0)]] as const) {
      const [series] = (await answer(q.url, account.readToken, { ...month, aggregation })) as { points: [number, number | null][] }[];
      expect(series!.points.reduce((s, [, v]) => s + (v ?? 0), 0), `${account.accountId} ${aggregation}`).toBe(want);
    }
  }

  // A single node fed the same acknowledged ciphertexts answers exactly the same.
  const singleAt = Date.now();
  const single = await c.startSingleNode(senders.map((s) => s.account.accountId));
  const queue = senders.flatMap(({ tracker: t }) => [...t.acked].map((id) => t.sent.get(id)!));
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let bytes = queue.pop(); bytes; bytes = queue.pop()) {
      const b = bytes;
      await until(async () => {
        const res = await post(single.url, b);
        await res.arrayBuffer();
        return res.status === 202;
      }, 120_000, 'the single node acknowledges a batch');
    }
  }));
  for (const { account, tracker: t } of senders) await until(async () => (await countIn('cipherstat_single', account.accountId)) >= t.acked.size, 300_000, `${account.accountId} processed by the single node`);
  let compared = 0;
  // Accounts side by side, each one's two answers at once (one query per read token and node at a time).
  await Promise.all(senders.map(async ({ account, tracker: t }) => {
    for (const [i, body] of comparedQueries(t0).entries()) {
      const [cluster, alone] = await Promise.all([answer(q.url, account.readToken, body), answer(single.url, account.readToken, body)]);
      expect(cluster, `${account.accountId} ${JSON.stringify(body)}: the query node answers as a single node`).toEqual(alone);
      if (i === 0) {
        // Not two empty answers: the hourly counts hold every point sent, over many hours.
        const counts = (alone as { points: [number, number | null][] }[])[0]!.points.map(([, v]) => v ?? 0);
        expect(counts.reduce((s, v) => s + v, 0)).toBe(t.acked.size * POINTS_PER_BATCH);
        expect(counts.filter((v) => v > 0).length).toBeGreaterThan(Math.min(20, t.acked.size));
      }
      compared++;
    }
  }));
  const ms = { drainAndCheck: singleAt - started, singleNode: Date.now() - singleAt };
  return { acknowledged: senders.reduce((n, s) => n + s.tracker.acked.size, 0), compared, ms };
}
