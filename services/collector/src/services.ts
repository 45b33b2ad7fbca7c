/**
 * Wires one collector process: storage, keyring, accounts, the ingest writer, the processor
 * and the rest of what the roles of this process need (no HTTP server: server.ts).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadSecrets, loadTestPause, type Config, type Secrets } from './config.js';
import { createLogger, everyFewSeconds, type Logger } from './logger.js';
import { createMetrics, type Metrics } from './metrics.js';
import { openStore, type Store } from './storage/index.js';
import { Keyring, loadAdminToken, loadMasterKeys, readRotationRecord, type ManagedMasterKeys } from './keyring/index.js';
import { Accounts } from './accounts/accounts.js';
import { BatchWriter, PROCESSING_BEHIND_SECONDS } from './ingest/writer.js';
import { Processor } from './process/processor.js';
import { parsePartition } from './storage/types.js';
import { Compactor } from './compaction/compactor.js';
import { Lease } from './keyring/leases.js';
import { Ownership } from './process/ownership.js';
import { CollectorError } from './errors.js';
import { SchemaGate } from './schema-gate.js';
import { SCHEMA_VERSION } from './storage/schema.js';
import { RateLimiter } from './ingest/rate-limit.js';
import { Admission, AuthFailures, textFormBytes } from './ingest/admission.js';
import { Fairness, retryAfterSeconds } from './ingest/fairness.js';
import { QueryCache } from './query/cache.js';
import { Lifecycle } from './lifecycle/index.js';
import { Refusals } from './ingest/refusals.js';
import { Visitors } from './ingest/visitors.js';
import { keepBuilds, loadScript, type ScriptBuild } from './script.js';

export interface Services {
  config: Config;
  log: Logger;
  metrics: Metrics;
  store: Store;
  keyring: Keyring;
  master: ManagedMasterKeys;
  accounts: Accounts;
  /** Deactivate, shred, purge, wipe, retention, master key rotation (its sweep runs with the process role). */
  lifecycle: Lifecycle;
  queryCache: QueryCache;
  writer: BatchWriter;
  processor: Processor | undefined;
  /** Merges partial rollup rows (process role; its scheduler starts after recovery). */
  compactor: Compactor | undefined;
  /** Role process: the partition's and the compactor's leases, which start and stop the processor and compactor. */
  ownership: Ownership[];
  rateLimiter: RateLimiter;
  /** Ingest admission per sender address and the in-flight body cap (before any body is read). */
  admission: Admission;
  /** Failed read/admin token attempts per sender address. */
  authFailures: AuthFailures;
  /** Late batches for shredded accounts, counted in memory and written once per interval. */
  /** Batch-level refusals per account and code: counted, flushed to storage, logged once an hour. */
  refusals: Refusals;
  /** The Library's <script> build this collector serves (undefined when not built). */
  script: ScriptBuild | undefined;
  /** Per-account budgets and processing backpressure at ingest (fairness.ts). */
  fairness: Fairness;
  /** Today's visitor secret (memory only) and the sealed visitor hash of browser batches (ingest/visitors.ts). */
  visitors: Visitors;
  adminTokenHash: string;
  roles: { ingest: boolean; process: boolean; query: boolean };
  now: () => number;
  /** Refuses work once storage is migrated past this collector's schema (schema-gate.ts). */
  schemaGate: SchemaGate;
  ready: () => Promise<{ ready: boolean; storage: boolean; schemaVersion: number }>;
  /**
   * Failed storage calls are logged through this (one line per message every few seconds, with a
   * count of the others), by the batch writer and by the app's error handler alike; any
   * successful write or readiness probe clears it, so a new outage right after one always logs.
   */
  storageFailureLog: ReturnType<typeof everyFewSeconds>;
}

export interface OpenOptions {
  log?: Logger;
  now?: () => number;
  /** The clock that decides the daily visitor secret's UTC day (default: `now`); tests move it to the next day. */
  visitorClock?: () => number;
  /** Master key and admin token (default: `loadSecrets()` from the environment). */
  secrets?: Secrets;
}

/** Where storage is, from the configuration. */
export const storeOptions = (config: Config) => ({
  dataDir: config.dataDir,
  url: config.clickhouseUrl,
  database: config.clickhouseDatabase,
  user: config.clickhouseUser,
  password: config.clickhousePassword,
  cluster: config.clickhouseCluster,
});

/** Opens storage and keyring and builds the services (no HTTP server). */
export async function openServices(config: Config, opts: OpenOptions = {}): Promise<Services> {
  const log = opts.log ?? createLogger({ level: config.logLevel });
  const secrets = opts.secrets ?? loadSecrets();
  const now = opts.now ?? Date.now;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const keyringDir = join(config.dataDir, 'keyring');
  const metrics = createMetrics({ rotationIncomplete: () => readRotationRecord(keyringDir)?.pending !== undefined });
  // Keys first: a start that lacks what opens the keyring refuses before touching anything else.
  const master = loadMasterKeys({ dataDir: config.dataDir, masterKey: secrets.masterKey, masterKeyFile: secrets.masterKeyFile, log });
  // An ingest-only node holds transport keys only: it refuses account entries it could read
  // (keyring_has_accounts) and never loads one (README, "The transport keyring").
  const transportOnly = config.role === 'ingest';
  const keyring = await Keyring.open({ dir: keyringDir, master, now, transportOnly });
  const store = await openStore(storeOptions(config));
  const schema = await store.migrate();
  // A node never runs by rules older than storage's (schema-gate.ts): refuses to start here.
  const schemaGate = new SchemaGate(store, SCHEMA_VERSION, schema.from, config.schemaCheckMs, now);
  log.info({ storage: store.kind, schemaFrom: schema.from, schemaVersion: schema.to }, 'storage ready');
  const admin = loadAdminToken({ dataDir: config.dataDir, adminToken: secrets.adminToken, log });
  // Calls made while answering a request end within storageTimeoutMs (503 storage_unavailable);
  // background work (processing, compaction, lifecycle) keeps the store without a deadline of its own.
  // Urgent: a request waits for them, so they go before processing's, compaction's and queries'
  // waiting calls where the engine runs one call at a time (storage/lane.ts).
  const requestStore = store.withDeadline(config.storageTimeoutMs).urgent();
  metrics.storageCalls.source = () => store.callStats();
  // The background refresh of account state is an ordinary call (it must not go ahead of
  // queries and processing), with the request deadline so a hung storage cannot hold a stop.
  // The first poll also reads up to 20,000 accounts' state (one query): a restarted collector
  // serving many shops does not read each one on its first batch.
  const accounts = new Accounts(requestStore, keyring, { defaultRetentionDays: config.retentionDays, now, log, metrics, refreshStore: store.withDeadline(config.storageTimeoutMs), warmAccounts: 20_000 });
  metrics.cacheSources.set('account_state', () => accounts.stats);
  metrics.cacheSources.set('account_keys', () => keyring.stats);
  // Every entry unwrapped before the first request: each one that cannot be read is logged
  // (file and reason) and its account answers 503 account_key_unavailable; the others serve.
  if (transportOnly) log.info({ keyring: keyringDir, transportKeys: keyring.acceptedTransportKeys().length }, 'transport-only keyring');
  else {
    const check = keyring.check();
    for (const p of check.problems) {
      if (p.accountId) {
        try {
          accounts.keys(p.accountId);
        } catch {
          // logged and counted by accounts.keys
        }
      }
    }
    log.info({ entries: check.entries, unreadable: check.problems.length }, 'keyring checked');
  }
  const roles = {
    ingest: config.role === 'all' || config.role === 'ingest',
    // CIPHERSTAT_PROCESSING=false: batches are stored, nothing is processed here.
    process: (config.role === 'all' || config.role === 'process') && config.processing,
    query: config.role === 'all' || config.role === 'query',
  };
  const queryCache = new QueryCache({ now, ttlMs: roles.process ? 30_000 : 1_000 });
  // Role process: its partition and the compactor are owned by lease (ownership.ts), never by convention.
  const partition = parsePartition(config.processPartition);
  const leased = roles.process && config.role === 'process';
  const partitionLease = leased ? new Lease(keyringDir, `partition-${partition?.index ?? 0}-of-${partition?.count ?? 1}`, config.leaseMs, now) : undefined;
  const pause = loadTestPause();
  let ticksAtPause = 0;
  const compactorLease = leased ? new Lease(keyringDir, 'compactor', config.leaseMs, now) : undefined;
  // Throws unless this node holds `lease` with a third of it left: checked before every commit
  // of a tick or write of a compaction pass, so both stop before another node may take over.
  const leaseFence = (lease: Lease, work: string) => () => {
    schemaGate.assertCurrent();
    if (!lease.validFor(Math.floor(config.leaseMs / 3))) {
      throw new CollectorError(503, 'lease_lost', `${lease.name}: this node's lease (epoch ${lease.epoch ?? 'none'}) is not valid long enough to commit; ${work} abandoned`);
    }
  };
  const processor = roles.process
    ? new Processor({
        store,
        keyring,
        accounts,
        metrics,
        log,
        now,
        pollMs: config.role === 'all' ? 5000 : 250,
        pollMinAgeMs: config.role === 'all' ? 10_000 : 0,
        coalesceMs: config.processCoalesceMs,
        tickMinBatches: config.processTickMinBatches,
        recoverEveryMs: config.processRecoveryIntervalMs,
        worker: config.processWorker,
        partition: config.processPartition === '0/1' ? undefined : parsePartition(config.processPartition),
        onProcessed: (ids) => queryCache.invalidate(ids),
        limits: { seriesPerMetric: config.maxSeriesPerMetric, newValuesPerHour: config.maxNewValuesPerHour },
        tickBudget: { points: config.processTickAccountPoints, ms: config.processTickAccountMs },
        onCardinalityLimited: (ids) => fairness.penalize(ids),
        fence: partitionLease ? leaseFence(partitionLease, 'tick') : () => schemaGate.assertCurrent(),
        beforeCommit: () => testStop('commit'),
        // Tests only: the n-th tick to reach the named commit point stops there for good (kill -9 follows).
        atCommitPoint: pause
          ? async (point, part) => {
              if (point !== pause.point || ++ticksAtPause !== pause.tick) return;
              log.warn({ point, part, tick: ticksAtPause }, `test hook: tick paused at ${point} (part ${part})`);
              await new Promise<never>(() => {});
            }
          : undefined,
      })
    : undefined;
  const fairness = new Fairness({ config, processing: processor, now });
  // One compactor for all accounts (its passes assume no other compactor runs): in role
  // process, whichever node holds the compactor lease; in role all (one node), that node.
  const compactor = roles.process && (leased || (partition?.index ?? 0) === 0)
    ? new Compactor({
        store,
        keyring,
        log,
        now,
        registry: metrics.registry,
        intervalMs: config.compactionIntervalMs,
        // Scheduled passes wait (bounded) while batches arrive at load rate: compactor.ts.
        busy: processor ? () => processor.underLoad() : undefined,
        yieldMaxMs: config.compactionYieldMaxMs,
        onCompacted: (ids) => queryCache.invalidate(ids),
        fence: compactorLease ? leaseFence(compactorLease, 'compaction pass') : () => schemaGate.assertCurrent(),
      })
    : undefined;
  const storageFailureLog = everyFewSeconds();
  const writer = new BatchWriter(requestStore, metrics, {
    maxQueued: config.maxQueuedBatches,
    maxQueuedBytes: config.maxQueuedBytes,
    groupMs: config.ingestGroupMs,
    behind: processor ? () => processor.drainSeconds() >= PROCESSING_BEHIND_SECONDS : undefined,
    behindGroupMs: config.ingestGroupBehindMs,
    onDurable: processor ? (rows) => processor.enqueue(rows) : undefined,
    // Every batch stored here is handed to this node's processor, which skips twins of processed
    // batches: the 202's duplicate check needs no storage read (writer.ts).
    checkStorage: !processor,
    // Come back when the processing backlog should be gone (1 to 60 s, spread: fairness.ts).
    retryAfter: processor ? () => retryAfterSeconds(processor.drainSeconds()) : undefined,
    log,
    logLimiter: storageFailureLog,
    diskPath: store.kind === 'chdb' ? join(config.dataDir, 'clickhouse') : undefined,
  });
  const lifecycle = new Lifecycle({
    store, keyring, accounts, metrics, log, writer, processor, master, now,
    graceDays: config.graceDays,
    masterRotationDays: config.masterRotationDays,
    intervalMs: config.lifecycleIntervalMs,
  });
  // Deleting or wiping an account drops its cached query results everywhere in this process.
  lifecycle.onShred.push((id) => queryCache.dropAccount(id));
  lifecycle.onWipe.push((id) => queryCache.dropAccount(id));
  /** CIPHERSTAT_TEST_STOP_AT: this process stops itself once at that point (the fencing test resumes it). */
  let testStopped = false;
  function testStop(point: NonNullable<typeof config.testStopAt>): void {
    if (config.testStopAt !== point || testStopped) return;
    testStopped = true;
    log.warn({ point, pid: process.pid }, `test stop at ${point}: SIGSTOP`);
    process.kill(process.pid, 'SIGSTOP');
  }
  const ownership: Ownership[] = [];
  if (partitionLease && processor) {
    ownership.push(
      new Ownership({
        lease: partitionLease,
        log,
        // The fence, then the orphans of the previous holder's interrupted tick (it stopped before
        // this lease was free; what it commits from now on does not count: storage/fences.ts).
        start: async (epoch) => {
          await processor.takeOver(epoch, partitionLease.holder);
          testStop('takeover');
          processor.start();
        },
        stop: () => processor.suspend(),
      }),
    );
  }
  if (compactorLease && compactor) {
    ownership.push(new Ownership({ lease: compactorLease, log, start: async () => compactor.start(), stop: () => compactor.stop() }));
  }
  return {
    config,
    log,
    metrics,
    store,
    keyring,
    master,
    accounts,
    lifecycle,
    queryCache,
    writer,
    processor,
    compactor,
    ownership,
    rateLimiter: new RateLimiter(config.rateLimit, undefined, now),
    admission: new Admission({
      requestsPerSecond: config.ipRateLimit,
      bytesPerSecond: config.ipByteRate,
      maxBodyBytes: textFormBytes(config.maxBodyBytes),
      maxInflightBytes: config.maxInflightBytes,
      now,
    }),
    authFailures: new AuthFailures(config.authFailureLimit, now),
    refusals: new Refusals({ store, log, now, flushMs: config.refusalFlushMs }),
    script: keepBuilds(loadScript(), join(config.dataDir, 'scripts'), (message) => log.warn(message)),
    fairness,
    visitors: new Visitors(opts.visitorClock ?? now),
    adminTokenHash: admin.hash,
    roles,
    now,
    schemaGate,
    storageFailureLog,
    ready: async () => {
      try {
        await store.withDeadline(config.readyTimeoutMs).ping();
        await schemaGate.refresh();
        storageFailureLog.reset();
      } catch {
        return { ready: false, storage: false, schemaVersion: schemaGate.version };
      }
      // Storage migrated by a newer collector: this node no longer answers queries (schema_newer).
      return { ready: schemaGate.current, storage: true, schemaVersion: schemaGate.version };
    },
  };
}
