/**
 * The query role's HTTP surface: GET /v1/metrics and POST /v1/query (bearer read token),
 * and the dashboard at / and /assets/*.
 *
 * Auth: a missing, malformed or unknown token is 401 `unauthorized`; a deactivated account
 * (grace period, restorable) is 403 `account_deactivated`; a shredded one 410 `account_deleted`.
 * A token only ever selects its own account: the account id never comes from the request.
 */
import type { Context, Hono } from 'hono';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { z } from 'zod';
import { fromUtf8 } from '@cipherstat/protocol';
import { readBody } from '../ingest/body.js';
import { clientAddressOf } from '../ingest/admission.js';
import { CollectorError } from '../errors.js';
import { tokenKind } from '../keyring/index.js';
import type { AccountRow } from '../storage/types.js';
import type { Services } from '../services.js';
import type { QueryCache } from './cache.js';
import { listMetrics, type MetricsListing } from './catalog.js';
import { DashboardFiles, securityHeaders, serveDashboard } from './dashboard.js';
import { QUERY_PHASES, QueryTiming, queryResultColumnsJson, queryResultJson, runQuery, WATERMARK_TTL_MS, type QueryResult, type QueryStats } from './engine.js';
import { registerPrometheusRoutes } from './prometheus/routes.js';
import { refusalAdvice } from '../ingest/refusals.js';
import { QueryLimits } from './limits.js';
import { answerFormat } from './request.js';
import { defaultMergers, type Mergers } from './mergers.js';

// ---- responses (described in /openapi.json; services/collector/test/openapi.test.ts validates recorded answers)
/** POST /v1/query's `meta`, the same in both answer forms. */
const queryMeta = z.object({
  metric: z.string(),
  aggregation: z.string(),
  interval: z.string(),
  timezone: z.string(),
  from: z.number(),
  to: z.number(),
  level: z.enum(['minute', 'quarter', 'hour', 'hour+minute']),
  rows: z.number(),
  failedRows: z.number(),
  tamperedRows: z.number(),
  cached: z.boolean(),
});
export const QUERY_RESPONSES = {
  /** GET /v1/metrics */
  metrics: z.object({
    accountId: z.string(),
    metrics: z.array(
      z.object({
        name: z.string(),
        kind: z.string(),
        tags: z.array(z.object({ key: z.string(), values: z.array(z.string()).nullable(), distinctValues: z.number() })),
        points24h: z.number(),
      }),
    ),
    rejects: z.record(z.string(), z.number()),
    failedRows: z.number(),
    tamperedRows: z.number(),
    volumeSince: z.number(),
    advice: z.record(z.string(), z.string()),
    envelopes: z.record(z.string(), z.number()).describe('processed batches by envelope version'),
  }),
  /** POST /v1/query: the points form (default), or `"format": "columns"` */
  query: z.union([
    z.object({
      series: z.array(z.object({ tags: z.record(z.string(), z.string()), points: z.array(z.tuple([z.number(), z.number().nullable()])) })),
      meta: queryMeta,
    }),
    z.object({
      buckets: z.array(z.number()).describe('every bucket start (epoch ms), once, ascending'),
      series: z.array(z.object({ tags: z.record(z.string(), z.string()), values: z.array(z.number().nullable()).describe('one per bucket, in the order of `buckets`') })),
      meta: queryMeta,
    }).describe('"format": "columns"'),
  ]),
};

export interface QueryRoutesOptions {
  /** Where the built dashboard is (default services/collector/dist/dashboard). */
  dashboardDir?: string;
  /** Where queries are merged (default: query worker threads when running from dist, else inline). */
  mergers?: Mergers;
}

const MAX_QUERY_BODY = 16 * 1024;

type QueryServices = Pick<Services, 'store' | 'keyring' | 'accounts' | 'log' | 'metrics' | 'now' | 'authFailures' | 'refusals'> & {
  config: Pick<Services['config'], 'trustProxy' | 'bodyTimeoutMs' | 'queryTimeoutMs' | 'queryConcurrency' | 'queryRowsPerMinute' | 'queryWorkers' | 'queryWorkerNice'>;
};

export function registerQueryRoutes(app: Hono, s: QueryServices, cache: QueryCache, opts: QueryRoutesOptions = {}): void {
  const m = queryMetrics(s.metrics.registry);
  // Every statement of a query ends within queryTimeoutMs (then 503 storage_unavailable).
  const deps = {
    store: s.store.withDeadline(s.config.queryTimeoutMs), keyring: { accountKeys: (id: string) => s.accounts.keys(id) }, log: s.log, cache, now: s.now,
    watermarkTtlMs: WATERMARK_TTL_MS,
    onFailedRows: (n: number) => m.failedRows.inc(n),
    onTamperedRows: (n: number) => m.tamperedRows.inc(n),
    onMerge: (d: 1 | -1) => m.merging.inc(d),
    mergers: opts.mergers ?? defaultMergers(s.log, s.config.queryWorkers, s.config.queryWorkerNice),
  };
  const proxy = s.config.trustProxy;
  const secure = securityHeaders('cidrs' in proxy || proxy.hops > 0);
  const limits = new QueryLimits({ concurrency: s.config.queryConcurrency, rowsPerMinute: s.config.queryRowsPerMinute, now: s.now });
  /** Per read token (its account): a concurrency slot and the rows budget, or the 429, counted for the account. */
  const begin = (accountId: string) => {
    try {
      return limits.begin(accountId);
    } catch (e) {
      if (e instanceof CollectorError) s.refusals.record(accountId, e.code, e.message);
      throw e;
    }
  };

  for (const path of ['/', '/index.html', '/assets/*', '/v1/metrics', '/v1/query']) app.use(path, secure);

  const clientAddress = clientAddressOf(proxy);
  /** `basic`: also HTTP Basic auth with the read token as password (for Prometheus clients that only send that). */
  const authenticate = async (c: Context, opts: { basic?: boolean } = {}): Promise<AccountRow> => {
    const h = c.req.header('authorization') ?? '';
    let token = /^Bearer\s+(\S+)$/i.exec(h)?.[1];
    const basic = opts.basic ? /^Basic\s+([A-Za-z0-9+/]+=*)$/i.exec(h)?.[1] : undefined;
    if (basic) token = /^[^:]*:(\S+)$/.exec(Buffer.from(basic, 'base64').toString('utf8'))?.[1];
    if (!token) throw new CollectorError(401, 'unauthorized', opts.basic ? 'missing read token (bearer, or basic auth with the token as password)' : 'missing bearer read token');
    // An address that failed too often is refused before its token is looked up.
    const ip = clientAddress(c);
    s.authFailures.check(ip);
    // Only read tokens: an admin token is not a key to anyone's data.
    const row = tokenKind(token) === 'read' ? await s.accounts.byReadToken(token) : undefined;
    if (!row) {
      s.authFailures.failed(ip);
      throw new CollectorError(401, 'unauthorized', 'invalid read token');
    }
    if (row.state !== 'active') {
      cache.dropAccount(row.accountId);
      if (row.state === 'deactivated') throw new CollectorError(403, 'account_deactivated', 'this account is deactivated; restore it to query');
      throw new CollectorError(410, 'account_deleted', 'this account was deleted');
    }
    return row;
  };

  /** Storage reads other than queries (their rows are not counted), under the token's concurrency slot and budget. */
  const inSlot = async <T>(accountId: string, read: () => Promise<T>): Promise<T> => {
    const release = begin(accountId);
    try {
      return await read();
    } finally {
      release(0);
    }
  };

  /** The account's metrics listing (cached until the processor writes new data for it). */
  const listing = async (accountId: string): Promise<MetricsListing> => {
    const gen = cache.generation(accountId);
    let listed = cache.get<MetricsListing>(accountId, 'metrics');
    if (!listed) {
      listed = await inSlot(accountId, () => listMetrics(deps, accountId));
      cache.set(accountId, 'metrics', listed, gen);
    }
    return listed;
  };

  /** One query of the engine for `account`, under its token's concurrency slot and rows budget. */
  const answer = async (account: AccountRow, value: unknown, stats: QueryStats = { storageMs: 0, mergeMs: 0, rows: 0 }): Promise<QueryResult> => {
    const done = begin(account.accountId);
    let result: QueryResult;
    try {
      result = await runQuery(deps, account, value, stats);
    } finally {
      done(stats.rows);
    }
    m.cache.inc({ result: result.meta.cached ? 'hit' : stats.shared ? 'shared' : 'miss' });
    return result;
  };

  app.get('/v1/metrics', async (c) => {
    const end = m.seconds.startTimer({ route: 'metrics' });
    const account = await authenticate(c);
    const listed = await listing(account.accountId);
    // Read fresh on every request (not cached with the listing), under the token's concurrency
    // slot and the query deadline like any query: reject counts (plus refusals not yet flushed),
    // and the processed batches by envelope version (senders still on the deprecated v1 show here).
    const { rejects, envelopes } = await inSlot(account.accountId, async () => ({
      rejects: await s.refusals.counted(account.accountId, () => deps.store.rejects(account.accountId)),
      envelopes: await deps.store.envelopeVersions(account.accountId),
    }));
    const origins = s.refusals.refusedOrigins(account.accountId);
    const advice = Object.fromEntries(Object.keys(rejects).flatMap((code) => {
      const text = refusalAdvice(code, account, origins);
      return text ? [[code, text]] : [];
    }));
    end();
    c.header('Cache-Control', 'no-store');
    return c.json({ accountId: account.accountId, ...listed, rejects, advice, envelopes });
  });

  app.post('/v1/query', async (c) => {
    const end = m.seconds.startTimer({ route: 'query' });
    const timing = new QueryTiming();
    const account = await authenticate(c);
    timing.mark('auth');
    const body = await readBody(c.req.raw, MAX_QUERY_BODY, s.config.bodyTimeoutMs);
    let value: unknown;
    try {
      value = JSON.parse(fromUtf8(body));
    } catch {
      throw new CollectorError(400, 'invalid_json', 'the request body is not JSON');
    }
    // the answer's form (400 unknown_format): only how it is written, so a cached answer serves either
    const format = answerFormat(value);
    timing.mark('body');
    const stats: QueryStats = { storageMs: 0, mergeMs: 0, rows: 0, timing };
    const result = await answer(account, value, stats);
    // No row at all: say so when the account never recorded the metric (the closest names help).
    if (result.meta.rows === 0) {
      // the cached listing, else one made under the token's slot and cached (as GET /v1/metrics)
      const names = (await listing(account.accountId)).metrics.map((x) => x.name);
      const metric = result.meta.metric;
      if (!names.includes(metric)) {
        const closest = closestNames(metric, names);
        throw new CollectorError(404, 'unknown_metric', `no metric ${JSON.stringify(metric)} was ever recorded${closest.length ? `; did you mean ${closest.map((n) => JSON.stringify(n)).join(', ')}?` : ' (GET /v1/metrics lists them)'}`);
      }
    }
    // c.json's text, written faster (the answer is most of a dashboard query's main-thread work)
    const json = format === 'columns' ? queryResultColumnsJson(result) : queryResultJson(result);
    timing.mark('json');
    end();
    for (const p of QUERY_PHASES) if (timing.ms[p] !== undefined) m.phases.inc({ phase: p }, timing.ms[p] / 1000);
    if (timing.openMs > 0) m.open.inc(timing.openMs / 1000);
    c.header('Cache-Control', 'no-store');
    // where this query's time went (engine.ts QUERY_PHASES), whether answered from the cache or not
    c.header('Server-Timing', timing.header());
    c.header('Content-Type', 'application/json');
    return c.body(json);
  });

  // Prometheus's HTTP query API (Grafana's Prometheus data source) over the same engine path.
  registerPrometheusRoutes(app, {
    authenticate,
    run: (account, body) => answer(account, body),
    listing: (account) => listing(account.accountId),
    readBody: (c) => readBody(c.req.raw, MAX_QUERY_BODY, s.config.bodyTimeoutMs),
    now: s.now,
    secure,
  });

  const files = new DashboardFiles(opts.dashboardDir);
  const serve = serveDashboard(files);
  app.get('/', serve);
  app.get('/index.html', serve);
  app.get('/assets/:name', serve);
}

/** Up to 3 known names nearest to `name` (edit distance within half its length, or sharing a prefix). */
export function closestNames(name: string, names: string[]): string[] {
  const distance = (a: string, b: string) => {
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
    return prev[b.length]!;
  };
  const most = Math.max(2, name.length / 2);
  return names
    // the distance is at least the difference in length: names too long or short are not compared
    .map((n) => ({ n, d: n.startsWith(name) || name.startsWith(n) ? 0.5 : Math.abs(n.length - name.length) > most ? Infinity : distance(name, n) }))
    .filter(({ d }) => d <= most)
    .sort((a, b) => a.d - b.d || (a.n < b.n ? -1 : 1))
    .slice(0, 3)
    .map(({ n }) => n);
}

/** Query-role Prometheus metrics, registered once per registry. No label carries tenant data. */
function queryMetrics(registry: Registry) {
  const once = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    seconds: once(
      'cipherstat_query_seconds',
      () => new Histogram({ name: 'cipherstat_query_seconds', help: 'Latency of /v1/query and /v1/metrics', labelNames: ['route'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry] }),
    ),
    failedRows: once(
      'cipherstat_query_failed_rows_total',
      () => new Counter({ name: 'cipherstat_query_failed_rows_total', help: 'Stored rows that failed to open during queries (left out of answers)', registers: [registry] }),
    ),
    tamperedRows: once(
      'cipherstat_query_tampered_rows_total',
      () =>
        new Counter({
          name: 'cipherstat_query_tampered_rows_total',
          help: 'Stored rows found tampered with during queries and left out (copies, rows back after compaction, forged supersedes lists)',
          registers: [registry],
        }),
    ),
    merging: once(
      'cipherstat_queries_merging',
      () => new Gauge({ name: 'cipherstat_queries_merging', help: 'Queries opening and merging their rows now (in slices between which the event loop serves other requests)', registers: [registry] }),
    ),
    phases: once(
      'cipherstat_query_phase_seconds_total',
      () =>
        new Counter({
          name: 'cipherstat_query_phase_seconds_total',
          help: 'Wall seconds POST /v1/query answers spent in each phase (query/engine.ts QUERY_PHASES; the Server-Timing header of each answer)',
          labelNames: ['phase'],
          registers: [registry],
        }),
    ),
    open: once(
      'cipherstat_query_open_seconds_total',
      () => new Counter({ name: 'cipherstat_query_open_seconds_total', help: 'Seconds POST /v1/query answers spent opening and merging rows, summed over the threads doing it (query workers, or the main thread for small reads)', registers: [registry] }),
    ),
    cache: once(
      'cipherstat_query_cache_total',
      () => new Counter({ name: 'cipherstat_query_cache_total', help: 'Query answers by cache result (hit; shared: the answer of an identical query still waiting for storage; miss)', labelNames: ['result'], registers: [registry] }),
    ),
  };
}
