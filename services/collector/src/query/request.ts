/**
 * The query body, validated once with zod and turned into what the engine needs: whole
 * time-zone buckets, the stored level to read, and the limits that keep a query interactive.
 *
 * Stable error codes (all HTTP 400): invalid_query, invalid_time, invalid_time_range,
 * invalid_time_zone, range_too_large, unknown_format.
 */
import { z } from 'zod';
import { tagsError, validName } from '@cipherstat/protocol';
import { CollectorError } from '../errors.js';
import { LEVEL, RollupError, buckets, isValidTimeZone, nextBucketStart, sourceLevel, type Aggregation, type Interval, type QueryLevel } from '../rollup/index.js';
import { HOUR_MS } from '../rollup/days.js';

/** The aggregations of the public surface, plus `last` (the newest value; handy for gauges). */
export const QUERY_AGGREGATIONS = ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p75', 'p90', 'p95', 'p99', 'last', 'uniq'] as const satisfies readonly Aggregation[];
/** Most buckets per series (10,000: a week of minutes, 416 days of hours). */
export const MAX_BUCKETS = 10_000;
export const MAX_GROUP_BY = 4;
export const MAX_FILTER_KEYS = 16;
export const MAX_FILTER_VALUES = 100;
/**
 * The forms of an answer (`format`): `points` (the default) gives each series `[start, value]`
 * pairs; `columns` gives every bucket start once (`buckets`) and each series its `values` in
 * that order — the same numbers in fewer bytes (bench query: 20-54 % of the points form's for
 * grouped hourly and minute answers). The form is only how the
 * answer is written (routes.ts): the cache and shared reads serve either.
 */
export const QUERY_FORMATS = ['points', 'columns'] as const;
export type QueryFormat = (typeof QUERY_FORMATS)[number];

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/;
/** Instants accepted: 1970 .. 2299 (what the rollups table can hold). */
const MAX_TIME = 10_413_791_999_999;

const time = z.union([z.number(), z.string().max(40)]);
const tagKey = z.string().min(1).max(64);
const tagValue = z.string().max(256);

export const querySchema = z
  .object({
    metric: z.string().min(1).max(128),
    aggregation: z
      .enum(QUERY_AGGREGATIONS)
      .describe(
        'count, sum, avg, min, max and last are exact (15 significant digits); p50-p99 come from a DDSketch of 1 % relative error, given to 5 significant digits where the value is the sketch\'s (a cell\'s minimum or maximum, and a one-value cell, exactly): within 1.006 % of the exact rank value; uniq is a HyperLogLog++ estimate',
      ),
    from: time,
    to: time,
    interval: z.enum(['minute', 'hour', 'day', 'week', 'month']),
    groupBy: z.array(tagKey).max(MAX_GROUP_BY).optional(),
    // null: points without the tag (Prometheus reads a missing label as "")
    filter: z.record(tagKey, z.union([tagValue, z.null(), z.array(z.union([tagValue, z.null()])).min(1).max(MAX_FILTER_VALUES)])).optional(),
    timezone: z.string().min(1).max(64).optional(),
    format: z.enum(QUERY_FORMATS).optional(),
  })
  .strict();

export type QueryBody = z.infer<typeof querySchema>;

/** A validated query. */
export interface Query {
  metric: string;
  aggregation: Aggregation;
  interval: Interval;
  timezone: string;
  groupBy: string[];
  /** tag key → accepted values (a point matches when its value is any of them) and, with
   * `missing`, points without the tag */
  filter: [key: string, values: string[], missing?: boolean][];
  /** Bucket starts, epoch ms, ascending; bucket i covers [starts[i], starts[i+1] or end). */
  starts: number[];
  /** End of the last bucket (exclusive). */
  end: number;
  level: QueryLevel;
  /**
   * With level hour: UTC hours (their starts) read from minute rollups instead, because a
   * bucket edge falls inside them; the hour-level data of these hours is not used.
   */
  minuteHours?: number[];
  /**
   * With level quarter: the UTC hours (their starts) holding a bucket edge, the only ones that
   * need quarter-hour data; elsewhere a (UTC day, series, key version) without a quarter pack is
   * read from its hour rows and hour pack (merge.ts).
   */
  quarterHours?: number[];
  /**
   * With level hour or quarter: UTC hours from here on (the derivation watermark, when the range
   * reaches it) are read from minute rows; their hour and quarter-hour rows are not derived yet.
   */
  minuteFrom?: number;
}

const bad = (code: string, message: string) => new CollectorError(400, code, message);

/** Epoch ms (integer) or ISO 8601 with a time and an explicit offset (`Z` or `±hh:mm`). */
export function parseTime(v: number | string, field: string): number {
  let ms: number;
  if (typeof v === 'number') ms = v;
  else {
    if (!ISO.test(v)) throw bad('invalid_time', `${field}: epoch milliseconds or ISO 8601 with an offset, like 2026-03-29T00:00:00Z`);
    ms = Date.parse(v);
  }
  if (!Number.isSafeInteger(ms) || ms < 0 || ms > MAX_TIME) throw bad('invalid_time', `${field}: not a valid time`);
  return ms;
}

/**
 * Validates `body` (already JSON-parsed) and plans the buckets. Throws CollectorError(400).
 * `quarterSince`: from when quarter-hour rows exist for every point (schema migration 7; default
 * never): a range starting earlier reads minute rows instead. `derivedUntil`: the derivation
 * watermark (compaction/derive.ts; the engine always passes it; absent: every hour derived), from
 * which hour and quarter-hour queries read minute rows.
 */
export function parseQuery(body: unknown, opts: { quarterSince?: number; derivedUntil?: number } = {}): Query {
  answerFormat(body);
  const parsed = querySchema.safeParse(body);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw bad('invalid_query', `${i.path.join('.') || 'body'}: ${i.message}`);
  }
  const b = parsed.data;
  if (!validName(b.metric)) throw bad('invalid_query', 'metric: not a valid metric name');
  const groupBy = b.groupBy ?? [];
  if (new Set(groupBy).size !== groupBy.length) throw bad('invalid_query', 'groupBy: repeated tag key');
  const filter = Object.entries(b.filter ?? {}).map(([k, v]): Query['filter'][number] => {
    const all = Array.isArray(v) ? v : [v];
    return [k, [...new Set(all.filter((x): x is string => x !== null))], all.includes(null)];
  });
  if (filter.length > MAX_FILTER_KEYS) throw bad('invalid_query', `filter: at most ${MAX_FILTER_KEYS} tag keys`);
  for (const k of [...groupBy, ...filter.map(([k]) => k)]) {
    if (tagsError({ [k]: '' }) !== null) throw bad('invalid_query', `not a valid tag key: ${JSON.stringify(k)}`);
  }
  const timezone = b.timezone ?? 'UTC';
  if (!isValidTimeZone(timezone)) throw bad('invalid_time_zone', `unknown time zone: ${timezone}`);
  const from = parseTime(b.from, 'from');
  const to = parseTime(b.to, 'to');
  if (to <= from) throw bad('invalid_time_range', '`to` must be after `from`');
  const interval = b.interval;
  let starts: number[];
  try {
    starts = buckets(from, to, interval, timezone, MAX_BUCKETS);
  } catch (e) {
    if (e instanceof RollupError && e.code === 'too_many_buckets') {
      throw bad('range_too_large', `more than ${MAX_BUCKETS} ${interval} buckets; shorten the range or use a longer interval`);
    }
    throw e;
  }
  const end = nextBucketStart(starts[starts.length - 1]!, interval, timezone);
  let level = sourceLevel(interval, timezone, from, to);
  if (level === LEVEL.quarter && starts[0]! < (opts.quarterSince ?? Infinity)) level = LEVEL.minute;
  // Day (or longer) buckets in a zone whose midnights are on quarter hours (Asia/Kolkata) read
  // quarter-hour rows and quarter packs: one pack per closed day and series, as UTC reads hour
  // packs. Without quarter rows (a range before they exist, a zone off quarter hours): only
  // the UTC hours holding a bucket edge need minute rollups; every other hour comes from hour
  // rollups and day packs.
  let minuteHours: number[] | undefined;
  // The UTC hours holding a bucket edge, when they are at most half the range's hours.
  const edgeHours = (): number[] | undefined => {
    const edges = new Set([...starts, end].filter((t) => t % HOUR_MS !== 0).map((t) => t - (t % HOUR_MS)));
    return edges.size * 2 <= Math.ceil((end - starts[0]!) / HOUR_MS) ? [...edges].sort((a, b) => a - b) : undefined;
  };
  if (level === LEVEL.minute && interval !== 'minute') {
    minuteHours = edgeHours();
    if (minuteHours) level = LEVEL.hour;
  }
  // Quarter-hour data is needed only in the hours holding a bucket edge (a day in
  // Asia/Kathmandu: one UTC hour in 24). A (UTC day, series, key version) without a quarter
  // pack (a compaction backlog, today) is read from hour rows and its hour pack elsewhere:
  // about 1 row per hour instead of up to 4 (merge.ts decides per day, never both for one hour).
  const quarterHours = level === LEVEL.quarter ? edgeHours() : undefined;
  // Hours not derived yet (from the watermark on) come from minute rows: ticks write minute rows
  // only, compaction derives the hour and quarter-hour rows once an hour is closed.
  const derivedUntil = opts.derivedUntil;
  const minuteFrom = derivedUntil !== undefined && level !== LEVEL.minute && end > derivedUntil ? derivedUntil : undefined;
  return {
    metric: b.metric, aggregation: b.aggregation, interval, timezone, groupBy, filter, starts, end, level,
    ...(minuteHours ? { minuteHours } : {}),
    ...(quarterHours ? { quarterHours } : {}),
    ...(minuteFrom !== undefined ? { minuteFrom } : {}),
  };
}

/** The answer form a query body asks for (`format`, default `points`); 400 unknown_format for any other value. */
export function answerFormat(body: unknown): QueryFormat {
  const f = body !== null && typeof body === 'object' ? (body as { format?: unknown }).format : undefined;
  if (f === undefined) return 'points';
  if (!(QUERY_FORMATS as readonly unknown[]).includes(f)) {
    throw bad('unknown_format', `format: ${JSON.stringify(f)?.slice(0, 40) ?? typeof f} is not an answer form; use ${QUERY_FORMATS.map((x) => JSON.stringify(x)).join(' or ')}`);
  }
  return f as QueryFormat;
}

/** A canonical string of a query (cache key): equal for queries with equal answers. */
export function queryKey(q: Query): string {
  return JSON.stringify([
    q.metric,
    q.aggregation,
    q.interval,
    q.timezone,
    q.groupBy,
    [...q.filter].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v, missing]) => [k, [...v].sort(), !!missing]),
    q.starts[0],
    q.end,
  ]);
}
