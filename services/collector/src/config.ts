/** Configuration from the environment and CLI flags, validated once with zod. */
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { z } from 'zod';
import { LIMITS } from '@cipherstat/protocol';

export const ROLES = ['all', 'ingest', 'process', 'query'] as const;
export type Role = (typeof ROLES)[number];

const TRUE = ['true', '1', 'yes', 'on'];
const FALSE = ['false', '0', 'no', 'off'];

/** A boolean spelled `true/false/1/0/yes/no/on/off` (any case); anything else is an error. */
const bool = (fallback: boolean) =>
  z
    .string()
    .optional()
    .transform((v, ctx) => {
      const s = v?.trim().toLowerCase();
      if (s === undefined || s === '') return fallback;
      if (TRUE.includes(s)) return true;
      if (FALSE.includes(s)) return false;
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected one of ${[...TRUE, ...FALSE].join('/')}, got ${JSON.stringify(v)}` });
      return z.NEVER;
    });

/**
 * Which proxies in front of the collector are trusted to append to `X-Forwarded-For`:
 * a number of hops (the client is the address that many entries in from the right, counting
 * the socket peer as the first) or a list of proxy addresses/CIDR ranges (the client is the
 * rightmost address not in the list). `hops: 0`: the socket peer is the client.
 */
export type ProxyTrust = { hops: number } | { cidrs: string[] };

const cidr = (s: string): boolean => {
  const [addr, bits, ...rest] = s.split('/');
  const family = isIP(addr ?? '');
  if (!family || rest.length) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
};

const proxyTrust = z
  .string()
  .optional()
  .transform((v, ctx): ProxyTrust => {
    const s = v?.trim().toLowerCase();
    if (s === undefined || s === '' || FALSE.includes(s)) return { hops: 0 };
    if (TRUE.includes(s)) return { hops: 1 };
    if (/^\d{1,2}$/.test(s)) return { hops: Number(s) };
    const list = s.split(',').map((x) => x.trim()).filter(Boolean);
    if (list.length && list.every(cidr)) return { cidrs: list };
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected false, true, a hop count or a list of proxy addresses/CIDRs, got ${JSON.stringify(v)}` });
    return z.NEVER;
  });

const schema = z.object({
  role: z.enum(ROLES).default('all'),
  host: z.string().min(1).default('127.0.0.1'),
  port: z.coerce.number().int().min(0).max(65535).default(8787),
  dataDir: z.string().min(1).default('./data'),
  clickhouseUrl: z.string().url().optional(),
  clickhouseDatabase: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default('cipherstat'),
  clickhouseUser: z.string().optional(),
  clickhousePassword: z.string().optional(),
  clickhouseCluster: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
  /** Batches per second per account (token bucket, burst = 2 s worth). */
  rateLimit: z.coerce.number().positive().default(5000),
  /** Ingest requests per second per sender address, charged before the body is read, refused or not (in memory only; burst = 2 s worth). */
  ipRateLimit: z.coerce.number().positive().default(2000),
  /** Ingest body bytes per second per sender address, charged before reading (declared length) or as bytes arrive (burst = 2 s worth, at least one largest body). */
  ipByteRate: z.coerce.number().int().positive().default(4 * 1024 * 1024),
  /** Largest envelope ingest reads (binary; the text form may be 4/3 of it). The protocol's limit is the ceiling. */
  maxBodyBytes: z.coerce.number().int().min(1024).max(LIMITS.maxEnvelopeBytes).default(64 * 1024),
  /** Body bytes being read, decoded or opened at once across all ingest requests before new ones get 503 `ingest_busy`. */
  maxInflightBytes: z.coerce.number().int().positive().default(32 * 1024 * 1024),
  /** Failed read/admin token attempts per minute per sender address before 429 `too_many_auth_failures` (burst: one minute's worth). */
  authFailureLimit: z.coerce.number().positive().default(30),
  /** How often per-account refusal counts are written to storage (ms): one insert per interval, whatever the flood. */
  refusalFlushMs: z.coerce.number().int().positive().default(5000),
  /** How often (ms) a running node re-reads storage's schema version (schema-gate.ts); 0: before every guarded call. */
  schemaCheckMs: z.coerce.number().int().nonnegative().default(30_000),
  /** HTTP server: the whole request head must arrive within this (ms). */
  headersTimeoutMs: z.coerce.number().int().positive().default(10_000),
  /** HTTP server: the whole request (head and body) must arrive within this (ms). */
  requestTimeoutMs: z.coerce.number().int().positive().default(30_000),
  /** HTTP server: idle keep-alive connections are closed after this (ms). */
  keepAliveTimeoutMs: z.coerce.number().int().positive().default(5_000),
  /** HTTP server: open connections at once; more are closed on accept. */
  maxConnections: z.coerce.number().int().positive().default(10_000),
  /** Days of data kept when an account does not say. */
  retentionDays: z.coerce.number().int().min(1).max(3650).default(400),
  /** Grace period between deactivation and shred. */
  graceDays: z.coerce.number().min(0).default(7),
  /** Longest time a request body may take to arrive. */
  bodyTimeoutMs: z.coerce.number().int().positive().default(10_000),
  /**
   * Deadline (ms) of each storage call made while answering a request (ingest's duplicate check
   * and insert, account reads, admin writes); past it the request ends in 503 storage_unavailable.
   */
  storageTimeoutMs: z.coerce.number().int().positive().default(5000),
  /** Deadline (ms) of each statement of a query (`/v1/query`, `/v1/metrics`); past it 503 storage_unavailable. */
  queryTimeoutMs: z.coerce.number().int().positive().default(10_000),
  /** Deadline (ms) of /readyz's storage ping; past it /readyz answers 503 (at most 1000: readiness answers within 1 s). */
  readyTimeoutMs: z.coerce.number().int().positive().max(1000).default(800),
  /** Most batches waiting for a durable insert before ingest answers 503. */
  maxQueuedBatches: z.coerce.number().int().positive().default(20_000),
  /** Most bytes (sealed) the batches waiting for a durable insert, and the insert in flight, hold before ingest answers 503. */
  maxQueuedBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
  /**
   * Group commit under load (the previous insert carried GROUP_LOAD_BATCHES or more): the least
   * time (ms) between the starts of two batch inserts, so each carries more batches (0: the next
   * insert starts as soon as the previous one ended). A 202 waits up to this long more. Default
   * 0: with clients that wait for their 202 (the Library, the benches), it caps ingest at about
   * (clients in flight) / groupMs (ARCHITECTURE.md, group commit).
   */
  ingestGroupMs: z.coerce.number().int().min(0).max(1000).default(0),
  /**
   * Roles with processing: the same least time (ms) between two batch inserts under load, but only
   * while processing is behind (what waits for it needs PROCESSING_BEHIND_SECONDS or more at its
   * recent rate): those batches wait for processing anyway, or are refused `overloaded`, and the
   * insert CPU saved goes to processing. A collector whose processing keeps up never waits (0: off).
   */
  ingestGroupBehindMs: z.coerce.number().int().min(0).max(1000).default(100),
  /**
   * Roles with processing: ingest answers 503 `overloaded` while the oldest batch waiting for
   * processing has waited longer than this (ms), so acknowledged data stays fresh and memory
   * bounded under overload; 0: never.
   */
  maxProcessLagMs: z.coerce.number().int().nonnegative().default(1000),
  /** Roles with processing: batches waiting for processing (all accounts) above which ingest answers 503 `overloaded` to everyone. */
  maxProcessBacklog: z.coerce.number().int().positive().default(50_000),
  /** Roles with processing: bytes the waiting batches hold (sealed), all accounts, above which ingest answers 503 `overloaded` to everyone. */
  maxProcessBacklogBytes: z.coerce.number().int().positive().default(256 * 1024 * 1024),
  /** Envelope bytes per second per account (token bucket, burst = 2 s worth). */
  accountBytesPerSecond: z.coerce.number().positive().default(16 * 1024 * 1024),
  /** Points per second per account, as the envelope header counts them (burst = 2 s worth). */
  accountPointsPerSecond: z.coerce.number().positive().default(200_000),
  /** Distinct series (tag sets) per metric and account; points of further series are rejected `series_limit`. */
  maxSeriesPerMetric: z.coerce.number().int().positive().default(10_000),
  /** New names, tag keys and tag values per account per hour; points bringing more are rejected `new_values_limit`. */
  maxNewValuesPerHour: z.coerce.number().int().positive().default(100_000),
  /** Queries one read token may run at once; more: 429 `too_many_queries`. */
  queryConcurrency: z.coerce.number().int().positive().default(2),
  /** Threads that open and merge heavy queries' rows (default: one per core, at most 2). */
  queryWorkers: z.coerce.number().int().min(1).max(64).optional(),
  /** Nice value of the query worker threads (Linux, per thread): heavy queries take the CPU the rest leaves (0: same as the process). */
  queryWorkerNice: z.coerce.number().int().min(0).max(19).default(10),
  /** Stored rows one read token's queries may open per minute (token bucket); beyond: 429 `query_budget_exceeded`. */
  queryRowsPerMinute: z.coerce.number().int().positive().default(2_000_000),
  trustProxy: proxyTrust,
  /** Process role: this node's account partition `i/n` (poll and recovery see only its accounts). */
  processPartition: z
    .string()
    .regex(/^\d{1,6}\/\d{1,6}$/, 'expected i/n')
    .refine((s) => {
      const [i, n] = s.split('/').map(Number) as [number, number];
      return n >= 1 && i < n;
    }, 'expected i/n with 0 <= i < n')
    .default('0/1'),
  /**
   * Process role, tick cadence under load: a processing tick starts at least this many ms after the
   * previous one started, unless processTickMinBatches are queued (0: at once). Fewer, bigger
   * ticks write fewer rollup rows and inserts per point; a batch waits up to this long more.
   */
  processCoalesceMs: z.coerce.number().int().min(0).max(5000).default(500),
  /** Process role: batches queued that start a tick before its cadence (at most 1000, the most per tick). */
  processTickMinBatches: z.coerce.number().int().min(1).max(1000).default(1000),
  /** Process role: most points of one account in one processing tick (its backlog is spread over ticks interleaved with other accounts'). */
  processTickAccountPoints: z.coerce.number().int().positive().default(10_000),
  /** Process role: most estimated CPU (ms) of one account's batches in one processing tick (the estimate is measured per account). */
  processTickAccountMs: z.coerce.number().positive().default(250),
  /** Process role: how often the poll loop removes rollup rows of interrupted ticks older than 6 minutes (processor.ts RECOVER_MIN_AGE_MS; 0: only at start). */
  processRecoveryIntervalMs: z.coerce.number().int().min(0).default(60_000),
  /** Process role: compute processing ticks in a worker thread (`1`) or on the main thread (`0`). */
  processWorker: bool(true),
  /**
   * Roles `all` and `process`: `false` stores batches and runs no processing, compaction or
   * scheduled lifecycle work (maintenance, tests). Role `ingest` never processes.
   */
  processing: bool(true),
  /**
   * Role `process`: how long a partition's or the compactor's lease lasts without renewal (ms);
   * renewed every third of it. Another node takes over this long (plus 5 s of clock allowance)
   * after a holder stops renewing.
   */
  leaseMs: z.coerce.number().int().min(300).max(600_000).default(15_000),
  /**
   * Tests only: the process node stops itself (SIGSTOP, after logging `test stop at …`) once, at
   * this point — `commit`: a tick past its lease check, right before its processed markers are
   * written; `takeover`: right after taking a partition over (fence written, orphans removed),
   * before processing. The fencing test resumes it with SIGCONT.
   */
  testStopAt: z.enum(['commit', 'takeover']).optional(),
  /** Compaction scheduler period (ms); unset: the compactor's default; 0: no scheduled compaction (runs only when called). */
  compactionIntervalMs: z.coerce.number().nonnegative().optional(),
  /** Longest a scheduled compaction pass waits while batches arrive at load rate (ms; 0: never waits; compaction/compactor.ts). */
  compactionYieldMaxMs: z.coerce.number().int().min(0).max(600_000).default(10_000),
  /** Period of the lifecycle sweep (ms; unset: 60 s; lifecycle/sweep.ts). */
  lifecycleIntervalMs: z.coerce.number().min(10).optional(),
  /** Days between scheduled master key rotations (unset: 30). */
  masterRotationDays: z.coerce.number().min(0.001).optional(),
  /** Log level (pino). */
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** CLI: the running collector account commands talk to (unset: http://host:port). */
  collectorUrl: z.string().url().optional(),
});

export type Config = z.infer<typeof schema>;

/** Each field's environment variable (and flag), named in configuration errors. */
const FIELDS: [field: keyof z.input<typeof schema>, env: string, flag?: string][] = [
  ['role', 'CIPHERSTAT_ROLE', 'role'],
  ['host', 'HOST', 'host'],
  ['port', 'PORT', 'port'],
  ['dataDir', 'CIPHERSTAT_DATA_DIR', 'data-dir'],
  ['clickhouseUrl', 'CLICKHOUSE_URL', 'clickhouse-url'],
  ['clickhouseDatabase', 'CLICKHOUSE_DATABASE'],
  ['clickhouseUser', 'CLICKHOUSE_USER'],
  ['clickhousePassword', 'CLICKHOUSE_PASSWORD'],
  ['clickhouseCluster', 'CLICKHOUSE_CLUSTER'],
  ['rateLimit', 'CIPHERSTAT_RATE_LIMIT'],
  ['ipRateLimit', 'CIPHERSTAT_IP_RATE_LIMIT'],
  ['ipByteRate', 'CIPHERSTAT_IP_BYTE_RATE'],
  ['maxBodyBytes', 'CIPHERSTAT_MAX_BODY_BYTES'],
  ['maxInflightBytes', 'CIPHERSTAT_MAX_INFLIGHT_BYTES'],
  ['authFailureLimit', 'CIPHERSTAT_AUTH_FAILURE_LIMIT'],
  ['refusalFlushMs', 'CIPHERSTAT_REFUSAL_FLUSH_MS'],
  ['schemaCheckMs', 'CIPHERSTAT_SCHEMA_CHECK_MS'],
  ['headersTimeoutMs', 'CIPHERSTAT_HEADERS_TIMEOUT_MS'],
  ['requestTimeoutMs', 'CIPHERSTAT_REQUEST_TIMEOUT_MS'],
  ['keepAliveTimeoutMs', 'CIPHERSTAT_KEEP_ALIVE_TIMEOUT_MS'],
  ['maxConnections', 'CIPHERSTAT_MAX_CONNECTIONS'],
  ['retentionDays', 'CIPHERSTAT_RETENTION_DAYS'],
  ['graceDays', 'CIPHERSTAT_GRACE_DAYS', 'grace-days'],
  ['bodyTimeoutMs', 'CIPHERSTAT_BODY_TIMEOUT_MS'],
  ['storageTimeoutMs', 'CIPHERSTAT_STORAGE_TIMEOUT_MS'],
  ['queryTimeoutMs', 'CIPHERSTAT_QUERY_TIMEOUT_MS'],
  ['readyTimeoutMs', 'CIPHERSTAT_READY_TIMEOUT_MS'],
  ['maxQueuedBatches', 'CIPHERSTAT_MAX_QUEUED_BATCHES'],
  ['maxQueuedBytes', 'CIPHERSTAT_MAX_QUEUED_BYTES'],
  ['ingestGroupMs', 'CIPHERSTAT_INGEST_GROUP_MS'],
  ['ingestGroupBehindMs', 'CIPHERSTAT_INGEST_GROUP_BEHIND_MS'],
  ['maxProcessLagMs', 'CIPHERSTAT_MAX_PROCESS_LAG_MS'],
  ['maxProcessBacklog', 'CIPHERSTAT_MAX_PROCESS_BACKLOG'],
  ['maxProcessBacklogBytes', 'CIPHERSTAT_MAX_PROCESS_BACKLOG_BYTES'],
  ['accountBytesPerSecond', 'CIPHERSTAT_ACCOUNT_BYTES_PER_SECOND'],
  ['accountPointsPerSecond', 'CIPHERSTAT_ACCOUNT_POINTS_PER_SECOND'],
  ['maxSeriesPerMetric', 'CIPHERSTAT_MAX_SERIES_PER_METRIC'],
  ['maxNewValuesPerHour', 'CIPHERSTAT_MAX_NEW_VALUES_PER_HOUR'],
  ['queryConcurrency', 'CIPHERSTAT_QUERY_CONCURRENCY'],
  ['queryWorkers', 'CIPHERSTAT_QUERY_WORKERS'],
  ['queryWorkerNice', 'CIPHERSTAT_QUERY_WORKER_NICE'],
  ['queryRowsPerMinute', 'CIPHERSTAT_QUERY_ROWS_PER_MINUTE'],
  ['trustProxy', 'CIPHERSTAT_TRUST_PROXY'],
  ['processPartition', 'CIPHERSTAT_PROCESS_PARTITION', 'partition'],
  ['processCoalesceMs', 'CIPHERSTAT_PROCESS_COALESCE_MS'],
  ['processTickMinBatches', 'CIPHERSTAT_PROCESS_TICK_MIN_BATCHES'],
  ['processRecoveryIntervalMs', 'CIPHERSTAT_PROCESS_RECOVERY_INTERVAL_MS'],
  ['processTickAccountPoints', 'CIPHERSTAT_PROCESS_TICK_ACCOUNT_POINTS'],
  ['processTickAccountMs', 'CIPHERSTAT_PROCESS_TICK_ACCOUNT_MS'],
  ['processWorker', 'CIPHERSTAT_PROCESS_WORKER'],
  ['processing', 'CIPHERSTAT_PROCESSING'],
  ['leaseMs', 'CIPHERSTAT_LEASE_MS'],
  ['testStopAt', 'CIPHERSTAT_TEST_STOP_AT'],
  ['compactionIntervalMs', 'CIPHERSTAT_COMPACTION_INTERVAL_MS'],
  ['compactionYieldMaxMs', 'CIPHERSTAT_COMPACTION_YIELD_MAX_MS'],
  ['lifecycleIntervalMs', 'CIPHERSTAT_LIFECYCLE_INTERVAL_MS'],
  ['masterRotationDays', 'CIPHERSTAT_MASTER_ROTATION_DAYS'],
  ['logLevel', 'CIPHERSTAT_LOG_LEVEL'],
  ['collectorUrl', 'CIPHERSTAT_URL', 'url'],
];

/** Every setting's environment variable and flag, with its field (the README's Configuration table lists each). */
export const CONFIG_VARIABLES: readonly { field: keyof Config; env: string; flag?: string }[] = FIELDS.map(([field, env, flag]) => ({ field: field as keyof Config, env, ...(flag ? { flag } : {}) }));

/** Builds the config from flags (already parsed) over environment variables; an empty value is unset. */
export function loadConfig(flags: Record<string, string | undefined> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string | undefined> = {};
  const source: Record<string, string> = {};
  for (const [field, name, flag] of FIELDS) {
    const fromFlag = flag === undefined ? undefined : flags[flag];
    input[field] = (fromFlag ?? env[name]) || undefined;
    source[field] = fromFlag !== undefined ? `--${flag}` : name;
  }
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = String(issue.path[0] ?? '');
    throw new Error(`invalid configuration: ${source[field] ?? issue.path.join('.')}: ${issue.message}`);
  }
  return { ...parsed.data, dataDir: resolve(parsed.data.dataDir) };
}

/**
 * Secrets from the environment: kept out of `Config` so that a configuration can be logged,
 * shown or passed around without carrying a key or token. Empty values are unset.
 */
export interface Secrets {
  /** CIPHERSTAT_MASTER_KEY: the master key(s), base64 (`v1:…,v2:…` for several versions). */
  masterKey?: string;
  /** CIPHERSTAT_MASTER_KEY_FILE: a file holding the master key(s). */
  masterKeyFile?: string;
  /** CIPHERSTAT_ADMIN_TOKEN: the admin token (else `${dataDir}/admin.token`). */
  adminToken?: string;
}

export function loadSecrets(env: NodeJS.ProcessEnv = process.env): Secrets {
  const get = (name: string) => env[name]?.trim() || undefined;
  return { masterKey: get('CIPHERSTAT_MASTER_KEY'), masterKeyFile: get('CIPHERSTAT_MASTER_KEY_FILE'), adminToken: get('CIPHERSTAT_ADMIN_TOKEN') };
}

/** Points of a processing tick's commit where a test can stop a node (tests only). */
export const COMMIT_POINTS = ['rollups-written', 'markers-written'] as const;
export type CommitPoint = (typeof COMMIT_POINTS)[number];

/**
 * TEST ONLY, not a setting (no operator sets it; the README's Configuration table leaves it
 * out): `CIPHERSTAT_TEST_PAUSE_AT=<point>@<n>` makes the n-th processing tick (counted from 1
 * per process) that reaches `<point>` of its commit log a line and wait forever there, so a
 * cluster test can `kill -9` the node at a chosen point mid-tick (test/cluster-*.test.ts).
 * `rollups-written`: its rollup rows are stored, its processed markers not yet;
 * `markers-written`: its markers are stored too, its batches not yet marked done in memory.
 */
export function loadTestPause(env: NodeJS.ProcessEnv = process.env): { point: CommitPoint; tick: number } | undefined {
  const v = env.CIPHERSTAT_TEST_PAUSE_AT?.trim();
  if (!v) return undefined;
  const m = /^([a-z-]+)@(\d{1,6})$/.exec(v);
  const point = COMMIT_POINTS.find((p) => p === m?.[1]);
  if (!m || !point || Number(m[2]) < 1) throw new Error(`invalid configuration: CIPHERSTAT_TEST_PAUSE_AT: expected <${COMMIT_POINTS.join('|')}>@<n ≥ 1>, got ${JSON.stringify(v)}`);
  return { point, tick: Number(m[2]) };
}
