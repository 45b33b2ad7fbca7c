/**
 * Prometheus's HTTP query API under /prometheus (so Grafana's Prometheus data source works
 * with the URL https://collector/prometheus and the read token as bearer):
 *   GET|POST /prometheus/api/v1/query_range, /query, /labels, /label/<name>/values, /series,
 *   /metadata, /status/buildinfo
 * with Prometheus's request forms (query string or form-encoded body) and answers
 * (`{ status: "success", data }` or `{ status: "error", errorType, error }`).
 *
 * Every expression becomes queries of the POST /v1/query path (evaluate.ts): the same token
 * auth, tenant, concurrency and rows budget, cache, and decryption in this process.
 */
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { z } from 'zod';
import { fromUtf8 } from '@cipherstat/protocol';
import { CollectorError } from '../../errors.js';
import type { AccountRow } from '../../storage/types.js';
import type { MetricsListing } from '../catalog.js';
import type { QueryResult } from '../engine.js';
import type { QueryBody } from '../request.js';
import { evaluateInstant, evaluateRange, filterOf, legacyName, resolveMetric, type PromDeps } from './evaluate.js';
import { matcherRegex, parseDuration, parsePromQL, unquote, type Selector } from './promql.js';

export interface PrometheusRoutesDeps {
  authenticate(c: Context, opts: { basic: true }): Promise<AccountRow>;
  run(account: AccountRow, body: QueryBody): Promise<QueryResult>;
  listing(account: AccountRow): Promise<MetricsListing>;
  readBody(c: Context): Promise<Uint8Array>;
  now(): number;
  secure: MiddlewareHandler;
}

/** The Prometheus API version whose forms these routes follow (Grafana reads it from buildinfo). */
export const PROMETHEUS_API_VERSION = '3.0.0';
/** /series: at most this many metrics matched by match[] are expanded into their tag combinations. */
const MAX_SERIES_METRICS = 20;

const badData = (message: string) => new CollectorError(400, 'bad_data', message);

const time = z.string().describe('unix seconds (fractions allowed) or RFC 3339');
const expr = z.string().min(1).describe('PromQL (the subset in the README, section Grafana)');
const match = z.union([z.string(), z.array(z.string())]).describe('series selectors');
/** Parameters of each route (query string or form-encoded body); they validate requests and describe them in /openapi.json. */
export const PROMETHEUS_PARAMS = {
  query_range: z.object({ query: expr, start: time, end: time, step: z.string().describe('a duration (1m, 5m, 1h) or seconds'), timeout: z.string().optional() }),
  query: z.object({ query: expr, time: time.optional(), timeout: z.string().optional() }),
  labels: z.object({ 'match[]': match.optional(), start: time.optional(), end: time.optional() }),
  'label/{name}/values': z.object({ 'match[]': match.optional(), start: time.optional(), end: time.optional() }),
  series: z.object({ 'match[]': match, start: time.optional(), end: time.optional() }),
  metadata: z.object({ metric: z.string().optional(), limit: z.string().optional() }),
  'status/buildinfo': z.object({}),
} as const;

// ---- responses: `{ status: "success", data }` with each route's data (described in /openapi.json)
const labels = z.record(z.string(), z.string());
const sample = z.tuple([z.number(), z.string()]).describe('[unix seconds, value as text]');
const matrix = z.object({ resultType: z.literal('matrix'), result: z.array(z.object({ metric: labels, values: z.array(sample) })) });
const vector = z.object({ resultType: z.literal('vector'), result: z.array(z.object({ metric: labels, value: sample })) });
const scalar = z.object({ resultType: z.literal('scalar'), result: sample });
const success = (data: z.ZodType) => z.object({ status: z.literal('success'), data });
export const PROMETHEUS_RESPONSES: Record<keyof typeof PROMETHEUS_PARAMS, z.ZodType> = {
  query_range: success(matrix),
  query: success(z.union([vector, scalar])),
  labels: success(z.array(z.string())),
  'label/{name}/values': success(z.array(z.string())),
  series: success(z.array(labels)),
  metadata: success(z.record(z.string(), z.array(z.object({ type: z.string(), help: z.string(), unit: z.string() })))),
  'status/buildinfo': success(z.object({ version: z.string(), revision: z.string(), branch: z.string(), buildUser: z.string(), buildDate: z.string(), goVersion: z.string() })),
};

/** The parameters checked against the route's schema: a missing one is bad_data naming it. */
function checked(path: keyof typeof PROMETHEUS_PARAMS, p: URLSearchParams): void {
  const r = PROMETHEUS_PARAMS[path].safeParse(Object.fromEntries([...new Set(p.keys())].map((k) => [k, p.getAll(k).length > 1 ? p.getAll(k) : p.get(k)!])));
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw badData(`invalid parameter ${JSON.stringify(String(i.path[0] ?? ''))}: ${i.path.length && i.code === 'invalid_type' && i.input === undefined ? 'missing' : i.message}`);
  }
}

/** Prometheus's errorType for a refusal: its own names where one fits, else the stable code. */
function errorType(e: CollectorError): string {
  if (e.status === 400 || e.status === 413) return 'bad_data';
  if (e.status === 429 || e.status === 503) return 'unavailable';
  if (e.status >= 500) return 'internal';
  return e.code;
}

/** A refusal in Prometheus's envelope: by these routes, and by app.onError for a failure under /prometheus (storage). */
export function prometheusError(c: Context, e: CollectorError): Response {
  if (e.retryAfter !== undefined) c.header('Retry-After', String(e.retryAfter));
  const message = e.code === 'bad_data' ? e.message : `${e.code}: ${e.message}`;
  return c.json({ status: 'error', errorType: errorType(e), error: message }, e.status as 400);
}

/** Parameters of a Prometheus API call: the query string plus, for a form POST, the body. */
async function params(c: Context, d: PrometheusRoutesDeps): Promise<URLSearchParams> {
  const p = new URL(c.req.url).searchParams;
  if (c.req.method === 'POST') {
    const type = c.req.header('content-type') ?? '';
    const body = await d.readBody(c);
    if (body.length > 0) {
      if (!type.toLowerCase().startsWith('application/x-www-form-urlencoded')) throw badData('a POST body must be application/x-www-form-urlencoded');
      for (const [k, v] of new URLSearchParams(fromUtf8(body))) p.append(k, v);
    }
  }
  return p;
}

/** A Prometheus time: unix seconds (fractions allowed) or RFC 3339; in ms. */
export function parsePromTime(v: string | null, name: string, fallback?: number): number {
  if (v === null || v === '') {
    if (fallback !== undefined) return fallback;
    throw badData(`invalid parameter "${name}": missing`);
  }
  const ms = /^-?\d+(\.\d+)?$/.test(v) ? Math.round(Number(v) * 1000) : /^\d{4}-\d\d-\d\dT/.test(v) ? Date.parse(v) : NaN;
  if (!Number.isSafeInteger(ms)) throw badData(`invalid parameter "${name}": cannot parse ${JSON.stringify(v)} to a valid timestamp`);
  return ms;
}

/** The selectors of match[] (each must name a metric, by name or __name__ matcher). */
function matches(p: URLSearchParams): { name: (n: string) => boolean; selector?: Selector }[] {
  return p.getAll('match[]').map((m) => {
    // {__name__=~"…"} and other name matchers select among names; parsePromQL wants one name.
    const named = /^\{\s*__name__\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*\}$/.exec(m);
    if (named) {
      const value = unquote(named[2]!);
      const re = named[1]!.includes('~') ? matcherRegex(value, 'match[]') : undefined;
      const test = (n: string) => (re ? re.test(n) : n === value);
      return { name: named[1]![0] === '!' ? (n: string) => !test(n) : test };
    }
    const e = parsePromQL(m);
    if (e.kind !== 'selector') throw badData(`match[]: a series selector, not ${JSON.stringify(m)}`);
    return { name: (n: string) => n === e.name, selector: e };
  });
}

/** The recorded metrics match[] selects (all without match[]), with their Prometheus names. */
function selected(listing: MetricsListing, p: URLSearchParams): { metric: MetricsListing['metrics'][number]; promName: string; selector?: Selector }[] {
  const ms = matches(p);
  const out: { metric: MetricsListing['metrics'][number]; promName: string; selector?: Selector }[] = [];
  for (const metric of listing.metrics) {
    const promName = promNameOf(listing, metric.name);
    if (ms.length === 0) out.push({ metric, promName });
    else {
      const hit = ms.find((m) => m.name(promName) || m.name(metric.name));
      if (hit && (!hit.selector || filterOf(metric, hit.selector.matchers) !== null)) out.push({ metric, promName, ...(hit.selector ? { selector: hit.selector } : {}) });
    }
  }
  return out;
}

/** A recorded name as Prometheus shows it: its legacy form when that names only it, else itself (quoted in PromQL). */
function promNameOf(listing: MetricsListing, name: string): string {
  const legacy = legacyName(name);
  if (legacy === name) return name;
  try {
    return resolveMetric(listing, legacy)?.name === name ? legacy : name;
  } catch {
    return name; // ambiguous legacy form
  }
}

const KIND_TYPE: Record<string, string> = { counter: 'counter', gauge: 'gauge', histogram: 'summary' };

export function registerPrometheusRoutes(app: Hono, d: PrometheusRoutesDeps): void {
  app.use('/prometheus/*', d.secure);
  const handle =
    (fn: (c: Context, account: AccountRow, p: URLSearchParams) => Promise<unknown>) =>
    async (c: Context) => {
      try {
        const account = await d.authenticate(c, { basic: true });
        const data = await fn(c, account, await params(c, d));
        c.header('Cache-Control', 'no-store');
        return c.json({ status: 'success', data });
      } catch (e) {
        if (!(e instanceof CollectorError)) throw e; // storage and others: app.onError, which answers with prometheusError
        return prometheusError(c, e);
      }
    };
  const route = (path: keyof typeof PROMETHEUS_PARAMS, fn: Parameters<typeof handle>[0]) => {
    const h = handle(async (c, account, p) => {
      checked(path, p);
      return fn(c, account, p);
    });
    app.get(`/prometheus/api/v1/${path.replace('{name}', ':name')}`, h);
    app.post(`/prometheus/api/v1/${path.replace('{name}', ':name')}`, h);
  };
  const promDeps = (account: AccountRow): PromDeps => ({ run: (body) => d.run(account, body), listing: () => d.listing(account) });
  const query = (p: URLSearchParams) => {
    const q = p.get('query');
    if (!q) throw badData('invalid parameter "query": missing');
    return parsePromQL(q);
  };

  route('query_range', async (_c, account, p) => {
    const e = query(p);
    const start = parsePromTime(p.get('start'), 'start');
    const end = parsePromTime(p.get('end'), 'end');
    if (end < start) throw badData('invalid parameter "end": end timestamp must not be before start time');
    const stepText = p.get('step');
    const step = stepText ? parseDuration(stepText) : undefined;
    if (!step || step <= 0) throw badData(`invalid parameter "step": ${stepText ? `cannot parse ${JSON.stringify(stepText)} to a valid duration` : 'missing'}`);
    if ((end - start) / step > 11_000) throw badData('exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)');
    return evaluateRange(promDeps(account), e, start, end, step);
  });

  route('query', async (_c, account, p) => {
    const e = query(p);
    return evaluateInstant(promDeps(account), e, parsePromTime(p.get('time'), 'time', d.now()));
  });

  route('labels', async (_c, account, p) => {
    const keys = new Set<string>();
    for (const { metric } of selected(await d.listing(account), p)) for (const t of metric.tags) keys.add(t.key);
    return ['__name__', ...[...keys].sort()];
  });

  route('label/{name}/values', async (c, account, p) => {
    const name = c.req.param('name')!;
    const listing = await d.listing(account);
    const values = new Set<string>();
    for (const { metric, promName } of selected(listing, p)) {
      if (name === '__name__') values.add(promName);
      else for (const v of metric.tags.find((t) => t.key === name)?.values ?? []) values.add(v);
    }
    return [...values].sort();
  });

  route('series', async (_c, account, p) => {
    if (p.getAll('match[]').length === 0) throw badData('no match[] parameter provided');
    const end = parsePromTime(p.get('end'), 'end', d.now());
    const start = parsePromTime(p.get('start'), 'start', end - 86_400_000);
    if (end <= start) throw badData('invalid parameter "end": end timestamp must be after start time');
    const hits = selected(await d.listing(account), p);
    if (hits.length > MAX_SERIES_METRICS) throw badData(`match[] selects ${hits.length} metrics; at most ${MAX_SERIES_METRICS}`);
    const out: Record<string, string>[] = [];
    for (const { metric, promName, selector } of hits) {
      const keys = metric.tags.map((t) => t.key);
      if (keys.length > 4) throw badData(`${promName} has ${keys.length} tag keys; /series lists the tag combinations of metrics with at most 4`);
      const filter = filterOf(metric, selector?.matchers ?? []);
      if (filter === null) continue;
      const r = await d.run(account, {
        metric: metric.name, aggregation: 'count', interval: 'day', from: start, to: end, timezone: 'UTC', groupBy: keys,
        ...(Object.keys(filter).length ? { filter } : {}),
      });
      for (const s of r.series) if (s.points.some(([, v]) => (v ?? 0) > 0)) out.push({ __name__: promName, ...s.tags });
    }
    return out;
  });

  route('metadata', async (_c, account, p) => {
    const listing = await d.listing(account);
    const only = p.get('metric');
    const out: Record<string, { type: string; help: string; unit: string }[]> = {};
    for (const m of listing.metrics) {
      const promName = promNameOf(listing, m.name);
      if (only && only !== promName && only !== m.name) continue;
      out[promName] = [{ type: KIND_TYPE[m.kind] ?? 'unknown', help: `Cipherstat ${m.kind} ${JSON.stringify(m.name)}`, unit: '' }];
    }
    return out;
  });

  route('status/buildinfo', async () => ({
    version: PROMETHEUS_API_VERSION,
    revision: 'cipherstat',
    branch: 'cipherstat',
    buildUser: 'cipherstat',
    buildDate: '',
    goVersion: 'none (the Cipherstat collector answers the Prometheus query API)',
  }));

  app.all('/prometheus/*', (c) => c.json({ status: 'error', errorType: 'not_found', error: `no Prometheus API route for ${c.req.method} ${c.req.path}` }, 404));
}
