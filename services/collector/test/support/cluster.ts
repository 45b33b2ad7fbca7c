/**
 * A multi-node collector on one machine: every node the built CLI (`cipherstat serve`) in a
 * child process with its own address, all on one ClickHouse HTTP endpoint (the test-only one
 * over chDB, or a real server with CLICKHOUSE_TEST_URL). Process and query nodes share one data
 * directory (the shared keyring directory, where the leases live too) and one master key;
 * ingest nodes run on the transport keyring `cipherstat keyring export-transport` wrote.
 * Used by cluster tests and by `npm run bench cluster`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { startClickHouseHttp, type ClickHouseHttp } from './clickhouse-http.js';
import { ADMIN_TOKEN, type TestAccount } from './collector.js';
import type { LeaseRecord } from '../../src/keyring/leases.js';
import { CLI, startCollectorProcess, stopProcess, type CollectorProcess } from './faults.js';

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
}

export interface Cluster {
  /** The ClickHouse HTTP endpoint every node uses. */
  clickhouseUrl: string;
  nodes: Map<string, ClusterNode>;
  ingestUrls(): string[];
  node(name: string): ClusterNode;
  /** Starts a node (a name already used is restarted on the same directory). */
  start(name: string, role: NodeRole, partition?: string): Promise<ClusterNode>;
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
  const ch: ClickHouseHttp | undefined = external ? undefined : await startClickHouseHttp({ dataDir: tmp('clickhouse') });
  const clickhouseUrl = external ?? ch!.url;
  const shared = tmp('shared');
  const ingestDir = join(tmp('ingest'), 'data');
  const masterKey = toBase64(randomBytes(32));
  const nodes = new Map<string, ClusterNode>();
  const base = { CLICKHOUSE_URL: clickhouseUrl, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_IP_RATE_LIMIT: '1000000', CIPHERSTAT_IP_BYTE_RATE: String(1 << 30), ...o.env };

  const start = async (name: string, role: NodeRole, partition?: string): Promise<ClusterNode> => {
    const env: Record<string, string> =
      role === 'ingest'
        ? { ...base, CIPHERSTAT_ROLE: 'ingest' } // its own master key, in its data directory
        : {
            ...base,
            CIPHERSTAT_ROLE: role,
            CIPHERSTAT_MASTER_KEY: masterKey,
            ...(partition ? { CIPHERSTAT_PROCESS_PARTITION: partition } : {}),
            ...(o.leaseMs ? { CIPHERSTAT_LEASE_MS: String(o.leaseMs) } : {}),
          };
    const proc = await startCollectorProcess(role === 'ingest' ? ingestDir : shared, env);
    const node = { name, role, partition, proc, url: proc.url };
    nodes.set(name, node);
    return node;
  };

  const cluster: Cluster = {
    clickhouseUrl,
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
      const res = await fetch(`${clickhouseUrl}/?database=cipherstat&query=${encodeURIComponent(query)}`);
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
    async close() {
      await Promise.all([...nodes.values()].map((n) => stopProcess(n.proc)));
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
