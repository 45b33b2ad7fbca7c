/**
 * PromQL (the subset of promql.ts) answered by translating each expression into queries of
 * the existing engine — the very `POST /v1/query` path (tenant, limits, budgets, cache,
 * decryption in the service) — and shaping the answer as Prometheus's vectors and matrices.
 *
 * Time: a step (range queries) or a range (instant queries) is a whole number of engine
 * buckets: the largest of day, hour and minute (UTC) that divides it (5m: 5 minutes, 2h: 2
 * hours). The window [t − step, t) is the sample at t, like Prometheus's (t − range, t]. A range
 * selector must equal the step. Windows of several buckets are combined here from the
 * buckets' values (sum, count, min, max, last; avg as sum ∕ count); a percentile is not
 * combinable, so quantile_over_time needs a window of exactly one bucket.
 */
import { CollectorError } from '../../errors.js';
import type { MetricsListing } from '../catalog.js';
import type { QueryResult } from '../engine.js';
import type { QueryBody } from '../request.js';
import { matcherRegex, type Aggregate, type Call, type Expr, type Matcher, type RangeFunction, type Selector } from './promql.js';

const badData = (message: string) => new CollectorError(400, 'bad_data', message);

export interface PromDeps {
  /** Runs one engine query exactly as POST /v1/query does (limits, budget, cache). */
  run(body: QueryBody): Promise<QueryResult>;
  /** What the account recorded (GET /v1/metrics's listing, cached). */
  listing(): Promise<MetricsListing>;
}

export const BUCKETS: Record<number, 'minute' | 'hour' | 'day'> = { 60_000: 'minute', 3_600_000: 'hour', 86_400_000: 'day' };

/** The engine bucket a window is made of: the largest of day, hour, minute dividing it; undefined if none does. */
export function bucketOf(windowMs: number): number | undefined {
  return [86_400_000, 3_600_000, 60_000].find((b) => windowMs >= b && windowMs % b === 0);
}
const MAX_GROUP_BY = 4;

/** The Prometheus name of a recorded name: every character outside [A-Za-z0-9_:] becomes `_`. */
export const legacyName = (name: string): string => name.replace(/[^A-Za-z0-9_:]/g, '_');

/**
 * The recorded metric a PromQL name means: the name itself when recorded (quoted in
 * Prometheus 3 style, `{"page.load_ms"}`, or plain), else the one recorded name whose
 * legacyName it is. Several → bad_data naming them; none → undefined (an empty answer).
 */
export function resolveMetric(listing: MetricsListing, name: string): MetricsListing['metrics'][number] | undefined {
  const exact = listing.metrics.find((m) => m.name === name);
  if (exact) return exact;
  const mapped = listing.metrics.filter((m) => legacyName(m.name) === name);
  if (mapped.length > 1) {
    throw badData(`metric name ${name} is ambiguous: it stands for ${mapped.map((m) => JSON.stringify(m.name)).join(' and ')}; quote the one you mean, like {${JSON.stringify(mapped[0]!.name)}}`);
  }
  return mapped[0];
}

/** A matcher as a test on a tag value ('' for a point without the tag). */
export function matcherTest(m: Matcher): (v: string) => boolean {
  if (m.op === '=') return (v) => v === m.value;
  if (m.op === '!=') return (v) => v !== m.value;
  const re = matcherRegex(m.value, `${m.label}${m.op}${JSON.stringify(m.value)}`);
  return m.op === '=~' ? (v) => re.test(v) : (v) => !re.test(v);
}

type Metric = MetricsListing['metrics'][number];

/**
 * The engine filter for the matchers: `=` as given; `!=`, `=~`, `!~` as the tag's recorded
 * values (of the last 30 days, GET /v1/metrics) that match. A matcher that matches the empty
 * string also selects the points without the tag (`null` in the filter), as Prometheus reads a
 * missing label as ""; one that matches every recorded value and "" is left out (it selects
 * everything). Returns null when nothing can match.
 */
export function filterOf(metric: Metric, matchers: Matcher[]): Record<string, (string | null)[]> | null {
  const filter: Record<string, (string | null)[]> = {};
  for (const m of matchers) {
    const test = matcherTest(m);
    const tag = metric.tags.find((t) => t.key === m.label);
    let accepted: (string | null)[];
    if (!tag) {
      // No point carries the tag: it reads as '' for all of them.
      if (test('')) continue;
      return null;
    }
    // A point without the tag reads as '' (as in Prometheus): null in the filter selects it.
    const missing = test('') ? [null] : [];
    if (m.op === '=') accepted = [m.value, ...missing];
    else {
      if (tag.values === null) throw badData(`tag ${m.label} has more than 100 recorded values: only ${m.label}="value" can select among them, not ${m.label}${m.op}${JSON.stringify(m.value)}`);
      const values = tag.values.filter(test);
      if (missing.length && values.length === tag.values.length) continue; // selects everything
      accepted = [...values, ...missing];
    }
    const prev = filter[m.label];
    const next = prev ? accepted.filter((v) => prev.includes(v)) : accepted;
    if (next.length === 0) return null;
    filter[m.label] = next;
  }
  return filter;
}

const FN_AGGREGATION: Record<Exclude<RangeFunction, 'quantile_over_time'>, QueryBody['aggregation']> = {
  increase: 'sum',
  rate: 'sum',
  sum_over_time: 'sum',
  count_over_time: 'count',
  avg_over_time: 'avg',
  min_over_time: 'min',
  max_over_time: 'max',
  last_over_time: 'last',
};
const QUANTILES: Record<string, QueryBody['aggregation']> = { '0.5': 'p50', '0.9': 'p90', '0.95': 'p95', '0.99': 'p99' };

/** Outer aggregations the engine answers in one query by merging all points of a group. */
const MERGES: Partial<Record<Aggregate['op'], RangeFunction[]>> = {
  sum: ['sum_over_time', 'count_over_time', 'increase', 'rate'],
  min: ['min_over_time'],
  max: ['max_over_time'],
};

export interface OutSeries {
  labels: Record<string, string>;
  /** [bucket start ms, value] */
  points: [number, number | null][];
}

/**
 * Series of `e` (not a scalar) over whole buckets of `bucketMs` from `from` to `to` (bucket
 * starts, UTC). Each engine query goes through deps.run.
 */
export async function evaluateSeries(deps: PromDeps, e: Selector | Call | Aggregate, windowMs: number, from: number, to: number): Promise<OutSeries[]> {
  const bucketMs = bucketOf(windowMs);
  if (!bucketMs) throw badData(`unsupported step ${fmtDuration(windowMs)}: use a whole number of minutes (1m, 5m, 1h, 1d, …); set the panel's min interval to 1m or more`);
  const interval = BUCKETS[bucketMs]!;
  const k = windowMs / bucketMs;
  const inner = e.kind === 'aggregate' ? e.inner : e;
  const sel = inner.kind === 'call' ? inner.selector : inner;
  if (inner.kind === 'call' && inner.rangeMs !== windowMs) {
    throw badData(`range [${fmtDuration(inner.rangeMs)}] must equal the step (${fmtDuration(windowMs)}): each sample covers one step`);
  }
  const metric = resolveMetric(await deps.listing(), sel.name);
  if (!metric) return [];
  const filter = filterOf(metric, sel.matchers);
  if (filter === null) return [];
  const keys = metric.tags.map((t) => t.key);
  let aggregation: QueryBody['aggregation'];
  if (inner.kind === 'selector') aggregation = 'last';
  else if (inner.fn === 'quantile_over_time') {
    const a = QUANTILES[String(inner.phi)];
    if (!a) throw badData(`quantile_over_time: φ must be one of ${Object.keys(QUANTILES).join(', ')} (the percentiles the sketches answer), not ${inner.phi}`);
    if (k !== 1) throw badData(`quantile_over_time over [${fmtDuration(windowMs)}]: a percentile cannot be combined from ${k} ${interval} buckets; use a step and range of 1m, 1h or 1d`);
    aggregation = a;
  } else aggregation = FN_AGGREGATION[inner.fn];
  const scale = inner.kind === 'call' && inner.fn === 'rate' ? 1000 / inner.rangeMs : 1;
  const body = (groupBy: string[], agg = aggregation): QueryBody => {
    if (groupBy.length > MAX_GROUP_BY) {
      throw badData(`${sel.name} would need ${groupBy.length} tag keys as series labels (${groupBy.join(', ')}); at most ${MAX_GROUP_BY}: aggregate with sum by (…) or without (…)`);
    }
    return { metric: metric.name, aggregation: agg, interval, from, to, timezone: 'UTC', groupBy, ...(Object.keys(filter).length ? { filter } : {}) };
  };
  /** Engine series, each window of k buckets folded into one point (named by its first bucket), scaled for rate. */
  const query = async (groupBy: string[], agg = aggregation): Promise<OutSeries[]> => {
    if (agg === 'avg' && k > 1) {
      const [sums, counts] = [await query(groupBy, 'sum'), await query(groupBy, 'count')];
      const countsOf = new Map(counts.map((c) => [JSON.stringify(c.labels), c.points]));
      return sums.map((s) => {
        const n = countsOf.get(JSON.stringify(s.labels));
        return { labels: s.labels, points: s.points.map(([t, v], j): [number, number | null] => [t, v === null || !n?.[j]?.[1] ? null : v / n[j]![1]!]) };
      });
    }
    const r = await deps.run(body(groupBy, agg));
    return r.series.map((s) => ({ labels: { ...s.tags }, points: fold(s.points, k, agg).map(([t, v]) => [t, v === null || scale === 1 ? v : v * scale]) }));
  };

  if (e.kind !== 'aggregate') {
    const out = await query(keys);
    if (inner.kind === 'selector') for (const s of out) s.labels = { __name__: sel.name, ...s.labels };
    return out;
  }
  const groupKeys = (e.grouping?.mode === 'by' ? e.grouping.labels : e.grouping ? keys.filter((k) => !e.grouping!.labels.includes(k)) : []).filter((k) => k !== '__name__');
  const fn = inner.kind === 'call' ? inner.fn : undefined;
  if (fn === 'quantile_over_time') {
    // A grouped quantile is the percentile of the group's merged points (not, as in
    // Prometheus, the avg/min/max of per-series percentiles).
    if (e.op === 'sum' || e.op === 'count') throw badData(`${e.op} of quantile_over_time is not supported: use avg, min or max (each answers the merged percentile of the group)`);
    return query(groupKeys);
  }
  if (fn && MERGES[e.op]?.includes(fn)) return query(groupKeys);
  // Per series, then combined here.
  const perSeries = await query(keys, e.op === 'count' ? 'count' : aggregation);
  const groups = new Map<string, { labels: Record<string, string>; members: OutSeries[] }>();
  for (const s of perSeries) {
    const labels = Object.fromEntries(groupKeys.flatMap((k) => (s.labels[k] !== undefined ? [[k, s.labels[k]!]] : [])));
    const key = JSON.stringify(groupKeys.map((k) => labels[k] ?? null));
    const g = groups.get(key);
    if (g) g.members.push(s);
    else groups.set(key, { labels, members: [s] });
  }
  const out: OutSeries[] = [];
  for (const { labels, members } of groups.values()) {
    const points = members[0]!.points.map(([t], i): [number, number | null] => {
      const vs = members.map((m) => m.points[i]![1]).filter((v): v is number => v !== null);
      if (e.op === 'count') return [t, vs.filter((v) => v > 0).length || null];
      if (vs.length === 0) return [t, null];
      if (e.op === 'sum') return [t, vs.reduce((a, b) => a + b, 0)];
      if (e.op === 'avg') return [t, vs.reduce((a, b) => a + b, 0) / vs.length];
      return [t, e.op === 'min' ? Math.min(...vs) : Math.max(...vs)];
    });
    out.push({ labels, points });
  }
  return out;
}

/** Folds every k consecutive points into one: sum for sum and count, min, max, the newest value for last. */
function fold(points: [number, number | null][], k: number, agg: QueryBody['aggregation']): [number, number | null][] {
  if (k === 1) return points;
  const out: [number, number | null][] = [];
  for (let i = 0; i + k <= points.length; i += k) {
    const vs = points.slice(i, i + k).map(([, v]) => v).filter((v): v is number => v !== null);
    let v: number | null = null;
    if (vs.length) {
      if (agg === 'sum' || agg === 'count') v = vs.reduce((a, b) => a + b, 0);
      else if (agg === 'min') v = Math.min(...vs);
      else if (agg === 'max') v = Math.max(...vs);
      else if (agg === 'last') v = vs[vs.length - 1]!;
      else throw badData(`${agg} cannot be combined from several buckets`);
    }
    out.push([points[i]![0], v]);
  }
  return out;
}

export const fmtDuration = (ms: number): string =>
  ms % 86_400_000 === 0 ? `${ms / 86_400_000}d` : ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;

/** Prometheus's text for a sample value. */
export const fmtValue = (v: number): string => (Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v));

export type RangeResult = { resultType: 'matrix'; result: { metric: Record<string, string>; values: [number, string][] }[] };
export type InstantResult =
  | { resultType: 'vector'; result: { metric: Record<string, string>; value: [number, string] }[] }
  | { resultType: 'scalar'; result: [number, string] };

/**
 * A range query: samples at the multiples of `step` in [start, end] (a sample at t is the
 * bucket [t − step, t)); empty buckets of count/sum-like answers are 0, others are left out.
 */
export async function evaluateRange(deps: PromDeps, e: Expr, start: number, end: number, step: number): Promise<RangeResult> {
  const first = Math.ceil(start / step) * step;
  const last = Math.floor(end / step) * step;
  if (e.kind === 'scalar') {
    const values: [number, string][] = [];
    for (let t = first; t <= last && values.length <= 11_000; t += step) values.push([t / 1000, fmtValue(e.value)]);
    return { resultType: 'matrix', result: [{ metric: {}, values }] };
  }
  if (!bucketOf(step)) throw badData(`unsupported step ${fmtDuration(step)}: use a whole number of minutes (1m, 5m, 1h, 1d, …); set the panel's min interval to 1m or more`);
  if (last < first) return { resultType: 'matrix', result: [] };
  const series = await evaluateSeries(deps, e, step, first - step, last);
  return {
    resultType: 'matrix',
    result: series
      .map((s) => ({ metric: s.labels, values: s.points.filter((p): p is [number, number] => p[1] !== null).map(([t, v]): [number, string] => [(t + step) / 1000, fmtValue(v)]) }))
      .filter((s) => s.values.length > 0),
  };
}

/**
 * An instant query at `time`: a range function over [r] answers the window of r ending at
 * the last multiple of r (since 1970, UTC) at or before `time` (exactly [time − r, time) when
 * `time` is one); the sample is stamped `time`.
 */
export async function evaluateInstant(deps: PromDeps, e: Expr, time: number): Promise<InstantResult> {
  if (e.kind === 'scalar') return { resultType: 'scalar', result: [time / 1000, fmtValue(e.value)] };
  const inner = e.kind === 'aggregate' ? e.inner : e;
  if (inner.kind !== 'call') throw badData('an instant query needs a range function, like last_over_time(x[1m]) or sum_over_time(x[1h])');
  const r = inner.rangeMs;
  if (!bucketOf(r)) throw badData(`unsupported range [${fmtDuration(r)}] in an instant query: use a whole number of minutes ([1m], [5m], [1h], [1d], …)`);
  const endOfBucket = Math.floor(time / r) * r;
  const series = await evaluateSeries(deps, e, r, endOfBucket - r, endOfBucket);
  return {
    resultType: 'vector',
    result: series.flatMap((s) => {
      const v = s.points[0]?.[1];
      return v === null || v === undefined ? [] : [{ metric: s.labels, value: [time / 1000, fmtValue(v)] as [number, string] }];
    }),
  };
}
