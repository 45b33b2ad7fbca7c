/** Configuration from the environment and CLI flags, validated once with zod. */
import { resolve } from 'node:path';
import { z } from 'zod';

export const ROLES = ['all', 'ingest', 'process', 'query'] as const;
export type Role = (typeof ROLES)[number];

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
  /** Batches per second per sender address (in memory only; burst = 2 s worth). */
  ipRateLimit: z.coerce.number().positive().default(2000),
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
  /**
   * Roles with processing: ingest answers 503 `overloaded` while the oldest batch waiting for
   * processing has waited longer than this (ms), so acknowledged data stays fresh and memory
   * bounded under overload; 0: never.
   */
  maxProcessLagMs: z.coerce.number().int().nonnegative().default(1000),
  trustProxy: z.coerce.boolean().default(false),
  /** Process role: this node's account partition `i/n` (poll and recovery see only its accounts). */
  processPartition: z
    .string()
    .regex(/^\d{1,6}\/\d{1,6}$/, 'expected i/n')
    .refine((s) => {
      const [i, n] = s.split('/').map(Number) as [number, number];
      return n >= 1 && i < n;
    }, 'expected i/n with 0 <= i < n')
    .default('0/1'),
  /** Process role: how long hand-offs may wait to coalesce into a bigger tick (0: none). */
  processCoalesceMs: z.coerce.number().int().min(0).max(5000).default(200),
  /** Process role: compute processing ticks in a worker thread (`1`) or on the main thread (`0`). */
  processWorker: z.enum(['0', '1']).default('1').transform((v) => v === '1'),
});

export type Config = z.infer<typeof schema>;

/** Builds the config from flags (already parsed) over environment variables. */
export function loadConfig(flags: Record<string, string | undefined> = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const pick = (flag: string, name: string) => flags[flag] ?? env[name];
  const parsed = schema.safeParse({
    role: pick('role', 'CIPHERSTAT_ROLE'),
    host: pick('host', 'HOST'),
    port: pick('port', 'PORT'),
    dataDir: pick('data-dir', 'CIPHERSTAT_DATA_DIR'),
    clickhouseUrl: pick('clickhouse-url', 'CLICKHOUSE_URL') || undefined,
    clickhouseDatabase: env.CLICKHOUSE_DATABASE,
    clickhouseUser: env.CLICKHOUSE_USER,
    clickhousePassword: env.CLICKHOUSE_PASSWORD,
    clickhouseCluster: env.CLICKHOUSE_CLUSTER || undefined,
    rateLimit: env.CIPHERSTAT_RATE_LIMIT,
    ipRateLimit: env.CIPHERSTAT_IP_RATE_LIMIT,
    retentionDays: env.CIPHERSTAT_RETENTION_DAYS,
    graceDays: pick('grace-days', 'CIPHERSTAT_GRACE_DAYS'),
    bodyTimeoutMs: env.CIPHERSTAT_BODY_TIMEOUT_MS,
    storageTimeoutMs: env.CIPHERSTAT_STORAGE_TIMEOUT_MS || undefined,
    queryTimeoutMs: env.CIPHERSTAT_QUERY_TIMEOUT_MS || undefined,
    readyTimeoutMs: env.CIPHERSTAT_READY_TIMEOUT_MS || undefined,
    maxQueuedBatches: env.CIPHERSTAT_MAX_QUEUED_BATCHES,
    maxProcessLagMs: env.CIPHERSTAT_MAX_PROCESS_LAG_MS,
    trustProxy: env.CIPHERSTAT_TRUST_PROXY,
    processPartition: pick('partition', 'CIPHERSTAT_PROCESS_PARTITION') || undefined,
    processCoalesceMs: env.CIPHERSTAT_PROCESS_COALESCE_MS || undefined,
    processWorker: env.CIPHERSTAT_PROCESS_WORKER || undefined,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(`invalid configuration: ${issue.path.join('.')}: ${issue.message}`);
  }
  return { ...parsed.data, dataDir: resolve(parsed.data.dataDir) };
}
