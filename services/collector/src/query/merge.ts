/**
 * The CPU part of a query: decode the stored rows, open them (rows.ts), merge the partial
 * aggregates per (time-zone bucket, group), then finalize per labelled series. Plain data in,
 * plain data out (a MergePlan, the storage result bytes): it runs in a query worker thread
 * (worker.ts) or, for small reads, inline (mergers.ts). The engine (engine.ts) does the I/O.
 */
import { CollectorError } from '../errors.js';
import { emptyAggregate, emptyScalars, finalize, mergeEncoded, mergeEncodedDeferred, mergeInto, type Aggregate, type Aggregation } from '../rollup/index.js';
import type { RollupLevel } from '../storage/types.js';
import { DAY_MS, HOUR_MS } from '../rollup/days.js';
import { LEVEL, readRows, RowReader, type OpenedRow, type StoredRow } from '../rollup/rows.js';
import { isPack } from '../rollup/levels.js';

/** Most series in one answer. */
export const MAX_SERIES = 1000;

/** What merging a query needs, without the account's MAC keys: a worker receives it. */
export interface MergePlan {
  accountId: string;
  /** The query's level (minute; hour with hour packs; quarter hour with quarter packs). */
  level: RollupLevel;
  /** Bucket starts in the query's zone (epoch ms), and the end of the last bucket. */
  starts: number[];
  end: number;
  /** UTC hours read from minute rows (an hour-level query with a bucket edge inside them). */
  minuteHours?: number[];
  /**
   * A quarter-level plan: the UTC hours holding a bucket edge, the only ones read from
   * quarter-hour data for a (UTC day, series, key version) without a quarter pack; its other
   * hours are read from its hour rows and hour pack.
   */
  quarterHours?: number[];
  /** UTC hours from here on are read from minute rows (their hour rows are not derived yet: the derivation watermark). */
  minuteFrom?: number;
  aggregation: Aggregation;
  /** Most rows read (more: `tooLarge`, nothing opened). */
  maxRows: number;
  /** Most groups (more: 400 too_many_series). */
  maxGroups: number;
  versions: {
    version: number;
    dataKey: Uint8Array;
    /** The metric's pseudonym under this version. */
    metric: string;
    /** Group-by key pseudonyms, parallel to the query's groupBy. */
    groupKeys: string[];
    /** Per filter, the accepted value pseudonyms, and the key's pseudonym when points without the key pass too. */
    filters: { accepted: string[]; missingKey?: string }[];
  }[];
}

export interface Group {
  /** group-by tag value pseudonyms, parallel to the query's groupBy ('0' = tag absent) */
  values: string[];
  aggs: (Aggregate | undefined)[];
}

export interface Merged {
  rows: number;
  /** More than plan.maxRows rows: nothing was opened. */
  tooLarge: boolean;
  groups: Map<string, Group>;
  failed: number;
  tampered: number;
}

export const tooManySeries = (): CollectorError =>
  new CollectorError(400, 'too_many_series', `more than ${MAX_SERIES} series; group by fewer tags or add a filter`);

/** Index of the bucket containing t (greatest start ≤ t), or −1. */
function locate(starts: number[], t: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  if (hi < 0 || t < starts[0]!) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Decodes the storage result (RowBinary, storage/queries.ts) and merges it (into `groups`: the groups of earlier parts of the query). */
export const mergeBytes = (plan: MergePlan, bytes: Uint8Array, groups?: Map<string, Group>): Merged => mergeRows(plan, readRows(bytes), groups);

/** The key of a group in `Merged.groups`: its group-by value pseudonyms. */
export const groupKey = (values: readonly string[]): string => values.join('\u0000');

/**
 * Opens and merges rows per (bucket, group). A row's group and filter match come from its tag
 * pseudonym arrays, which its identity covers: storage rewriting `tag_values` makes the row fail
 * to open (never regrouped); a row outside the filter is counted as failed.
 */
export function mergeRows(plan: MergePlan, rows: StoredRow[], groups = new Map<string, Group>()): Merged {
  if (rows.length > plan.maxRows) return { rows: rows.length, tooLarge: true, groups, failed: 0, tampered: 0 };
  const { starts, end } = plan;
  const n = starts.length;
  const versions = new Map(plan.versions.map((v) => [v.version, { ...v, accepted: v.filters.map((f) => ({ values: new Set(f.accepted), missingKey: f.missingKey })) }]));
  // Bucket of a time: rows and a pack's slots mostly come in increasing time, so the last
  // bucket found (or the next) is checked before a binary search; no map, no boxed key.
  let at = 0;
  const indexOf = (t: number): number => {
    if (n === 0 || t < starts[0]!) return -1;
    if (starts[at]! <= t) {
      if (at + 1 === n || t < starts[at + 1]!) return at;
      if (at + 2 === n || t < starts[at + 2]!) return ++at;
    }
    return (at = locate(starts, t));
  };
  // (version, series) → the group of its tag arrays: the rows of one series carry the same ones
  // (checked: a row of the series with other arrays gets its own answer, uncached). No key
  // string per row; the Group itself is kept once it exists (no map lookup per cell).
  type Target = { key: string; values: string[]; g: Group | undefined };
  type Grouping = { k: string; t: string; grp: Target | null };
  const groupCache = new Map<number, Map<string, Grouping>>();
  const groupOf = (row: StoredRow): Target | null => {
    let bySeries = groupCache.get(row.v);
    if (!bySeries) groupCache.set(row.v, (bySeries = new Map()));
    const hit = bySeries.get(row.s);
    if (hit && hit.k === row.k && hit.t === row.t) return hit.grp;
    const grp = groupFor(row);
    if (!hit) bySeries.set(row.s, { k: row.k, t: row.t, grp });
    return grp;
  };
  const groupFor = (row: StoredRow): Target | null => {
    const v = versions.get(row.v)!;
    const keys = row.k === '' ? [] : row.k.split(',');
    const values = row.t === '' ? [] : row.t.split(',');
    const passes = (f: { values: Set<string>; missingKey: string | undefined }) =>
      values.some((x) => f.values.has(x)) || (f.missingKey !== undefined && !keys.includes(f.missingKey));
    if (!v.accepted.every(passes)) return null;
    // Like `tag_values[indexOf(tag_keys, k)]`: '0' when the key is absent.
    const g = v.groupKeys.map((gk) => {
      const i = keys.indexOf(gk);
      return i < 0 ? '0' : values[i] ?? '0';
    });
    const key = groupKey(g);
    return { key, values: g, g: undefined };
  };
  // Hours read from minute rows (bucket edges inside them, or not derived yet): there a minute
  // row counts and the hour (quarter-hour) rows and pack slots do not; elsewhere the reverse.
  const minuteHours = plan.minuteHours ? new Set(plan.minuteHours) : undefined;
  const minuteFrom = plan.minuteFrom ?? Infinity;
  const anyMinutes = minuteHours !== undefined || plan.minuteFrom !== undefined;
  const inMinutes = (t: number): boolean => {
    const hour = t - (t % HOUR_MS);
    return hour >= minuteFrom || minuteHours?.has(hour) === true;
  };
  // A quarter-level plan with quarterHours: per (key version, series, UTC day), quarter-hour data
  // (its quarter pack and quarter-hour rows) when the rows hold its quarter pack, else hour data
  // (hour rows, hour pack) outside quarterHours and quarter-hour rows in them; never both for one hour.
  const quarterHours = plan.level === LEVEL.quarter && plan.quarterHours ? new Set(plan.quarterHours) : undefined;
  const quarterPacked = quarterHours ? quarterPackedDays(rows) : undefined;
  /** Whether the rows hold the quarter pack of this row's key version and series for UTC day `day`. */
  const quarterPackOf = (row: StoredRow, day: number): boolean => quarterPacked!.get(row.v)?.get(row.s)?.has(day) === true;
  const inQuarters = (row: StoredRow): boolean => quarterPackOf(row, row.b - (row.b % DAY_MS)) || quarterHours!.has(row.b - (row.b % HOUR_MS));
  const reader = new RowReader({
    accountId: plan.accountId,
    dataKey: (v) => versions.get(v)?.dataKey,
    metric: (row) => versions.get(row.v)?.metric,
    level: (row) => {
      if (row.l === LEVEL.dayPack) {
        if (quarterHours) return quarterPackOf(row, row.b) ? 'skip' : LEVEL.dayPack;
        return plan.level === LEVEL.hour ? LEVEL.dayPack : 'fail';
      }
      if (row.l === LEVEL.quarterPack) return plan.level === LEVEL.quarter ? LEVEL.quarterPack : 'fail';
      // a minute pack (at its UTC hour): a minute plan, or an hour read from minute data (its slots are that hour's minute rows)
      if (row.l === LEVEL.minutePack) return plan.level === LEVEL.minute || (anyMinutes && inMinutes(row.b)) ? LEVEL.minutePack : 'fail';
      let level: RollupLevel = anyMinutes && row.l === LEVEL.minute ? LEVEL.minute : plan.level;
      if (quarterHours && level === LEVEL.quarter) {
        if (row.l === LEVEL.hour) {
          if (inQuarters(row)) return 'skip';
          level = LEVEL.hour;
        } else if (!inQuarters(row)) return 'skip'; // these hours come from hour data
      }
      if (anyMinutes) {
        const minutes = inMinutes(row.b);
        if (level !== LEVEL.minute && minutes) return 'skip'; // selected by the range; these hours come from minute rows
        if (level === LEVEL.minute && !minutes) return 'fail';
      }
      return indexOf(row.b) < 0 || row.b >= end ? 'fail' : level;
    },
    accept: (row) => groupOf(row) !== null, // storage returned a row outside the filter: failed
  });

  // Percentiles merge sketches: a cell keeps the encodings it merged (validated) and its sketch
  // is merged when finalized, through one scratch sketch (no sketch stores per cell); every
  // other aggregation reads no sketch.
  const withSketch = plan.aggregation[0] === 'p';
  const merge = withSketch ? mergeEncodedDeferred : (a: Aggregate, bytes: Uint8Array, from: number, to: number) => mergeEncoded(a, bytes, false, from, to);
  let failed = 0;
  const add = (grp: Target, i: number, bytes: Uint8Array, from: number, to: number): void => {
    const g = grp.g ?? (grp.g = groups.get(grp.key)); // another series may have made the group
    const cur = g?.aggs[i];
    try {
      if (cur) return merge(cur, bytes, from, to); // unchanged when it throws
      const agg = emptyScalars();
      merge(agg, bytes, from, to);
      if (g) g.aggs[i] = agg;
      else {
        if (groups.size >= plan.maxGroups) throw tooManySeries();
        const made: Group = { values: grp.values, aggs: new Array(n) };
        made.aggs[i] = agg;
        groups.set(grp.key, (grp.g = made));
      }
    } catch (e) {
      if (e instanceof CollectorError) throw e;
      failed++;
    }
  };
  // a day pack: only its slots inside the range, and not those read from minute rows (a minute pack: its slots inside the range)
  let last: OpenedRow | undefined;
  let target: Target | null = null;
  reader.eachCell(rows, starts[0]!, end, (o, t, bytes, from, to) => {
    if (anyMinutes && o.level !== LEVEL.minutePack && isPack(o.level) && inMinutes(t)) return;
    if (o.level === LEVEL.dayPack && quarterHours?.has(t)) return; // read from quarter-hour rows
    if (o !== last) {
      last = o;
      target = groupOf(o.row);
    }
    add(target!, indexOf(t), bytes, from, to);
  });
  return { rows: rows.length, tooLarge: false, groups, failed: failed + reader.failed, tampered: reader.tampered };
}

/** The (key version → series → UTC day) of the quarter packs among `rows`. */
function quarterPackedDays(rows: readonly StoredRow[]): Map<number, Map<string, Set<number>>> {
  const out = new Map<number, Map<string, Set<number>>>();
  for (const row of rows) {
    if (row.l !== LEVEL.quarterPack) continue;
    let bySeries = out.get(row.v);
    if (!bySeries) out.set(row.v, (bySeries = new Map()));
    const days = bySeries.get(row.s);
    if (days) days.add(row.b);
    else bySeries.set(row.s, new Set([row.b]));
  }
  return out;
}

/**
 * 15 significant digits: what float64 sums of decimal inputs support. Drops the binary tail
 * of an addition (19.99 + 179.4 = 199.39000000000001 → 199.39); any value a point carried
 * (≤ 15 digits) is unchanged. A decimal of at most 6 places and 15 digits (`shortDecimal`: a
 * point's value, the value of a one-value cell) is its own rounding and skips toPrecision (~1 µs:
 * most of a 24 h minute p95's finish, whose ~15,000 values are mostly points' own).
 */
export const roundFloat = (v: number | null): number | null => (v === null || Number.isInteger(v) || shortDecimal(v) ? v : Number(v.toPrecision(15)));

const POW10 = [10, 100, 1e3, 1e4, 1e5, 1e6];
/**
 * Whether `v` is the double of a decimal m / 10^d with 1 ≤ d ≤ 6 and |m| < 10^15. Such a decimal
 * has at most 15 significant digits, so it is the 15-digit decimal nearest to `v` (doubles are
 * closer together than 15-digit decimals: DBL_DIG) and `v.toPrecision(15)` reads back as `v`.
 */
function shortDecimal(v: number): boolean {
  for (let d = 0; d < POW10.length; d++) {
    const m = Math.round(v * POW10[d]!);
    if (!(Math.abs(m) < 1e15)) return false; // larger for every greater d (NaN, ±Infinity too)
    if (m / POW10[d]! === v) return true;
  }
  return false;
}

/**
 * Significant digits of a percentile read from the sketch (a value strictly between its cell's
 * minimum and maximum: a sketch bucket's value, `γ^i·(1 − α)`, which has ~15 digits that say
 * nothing past the sketch's relative accuracy α = 1 %). Five digits move it by at most half a unit
 * of the fifth, 5·10⁻⁵ of the value (see PERCENTILE_ERROR), and still tell neighbouring buckets
 * (2 % apart) from one another. A percentile that is its cell's minimum or maximum (one value, or
 * clamped) is a point's own value and keeps roundFloat's 15 digits, as does every other aggregation.
 * A 24-hour minute p95 by a 20-value tag: most of its non-null values are sketch values of ~16
 * characters; they make most of its answer's bytes, and each KB costs the client ~20 µs of HTTP and parse.
 */
export const SKETCH_DIGITS = 5;

/**
 * The relative error bound of an answered percentile: the sketch's (|v̂ − x| ≤ α·|x|, α = 0.01)
 * plus the rounding to SKETCH_DIGITS digits (≤ 0.5·10^(1 − SKETCH_DIGITS)·|v̂| ≤ 5·10⁻⁵·(1 + α)·|x|),
 * rounded up: |answer − x| ≤ 0.01006·|x| (README "Aggregation semantics"). Clamping to the cell's
 * [min, max] afterwards only brings it closer to x, which lies there.
 */
export const PERCENTILE_ERROR = 0.01006;

/** A sketch value to SKETCH_DIGITS significant digits (0 stays 0). */
export const roundSketchValue = (v: number): number => (v === 0 || !Number.isFinite(v) ? v : Number(v.toPrecision(SKETCH_DIGITS)));

/**
 * A percentile cell's answer: `v` (finalize's, clamped to [min, max]) is the minimum or maximum
 * (a point's own value: roundFloat) or a sketch value, rounded by `round` (roundSketchValue,
 * memoized) and kept inside [min, max].
 */
function percentileValue(a: Aggregate, v: number | null, round: (v: number) => number): number | null {
  if (v === null || v === a.min || v === a.max) return roundFloat(v);
  const r = round(v);
  return r < a.min ? roundFloat(a.min) : r > a.max ? roundFloat(a.max) : r;
}

/** `f` remembering its answer per value (for one finish: bounded by its cells). */
function memoized(f: (v: number) => number): (v: number) => number {
  const seen = new Map<number, number>();
  return (v) => {
    let r = seen.get(v);
    if (r === undefined) seen.set(v, (r = f(v)));
    return r;
  };
}

/**
 * An answer's finalized values as they cross between threads: `values[s * buckets + i]` is series
 * s's value in bucket i, null where `nulls` holds 1. Two flat buffers are moved (postMessage's
 * transfer list) instead of an array per series cloned value by value.
 */
export interface FinishedValues {
  series: number;
  buckets: number;
  values: Float64Array;
  nulls: Uint8Array;
}

/**
 * The values of each answer series: groups (in merge order) are merged into series
 * `seriesOf[j]` (groups of different key versions with the same labels are one series;
 * −1: left out), then finalized per bucket. An empty bucket is the empty aggregate's value.
 */
export function finishCells(plan: Pick<MergePlan, 'starts' | 'aggregation'>, groups: Iterable<Group>, seriesOf: number[], series: number): FinishedValues {
  const { starts, aggregation } = plan;
  const buckets = starts.length;
  const merged: ((Aggregate | undefined)[] | undefined)[] = new Array(series);
  let j = 0;
  for (const g of groups) {
    const s = seriesOf[j++] ?? -1;
    if (s < 0) continue;
    const same = merged[s];
    if (!same) {
      merged[s] = g.aggs;
      continue;
    }
    for (let i = 0; i < buckets; i++) {
      const a = g.aggs[i];
      if (a === undefined) continue;
      const b = same[i];
      if (b === undefined) same[i] = a;
      else mergeInto(b, a);
    }
  }
  const empty = finalize(emptyAggregate(), aggregation);
  const values = new Float64Array(series * buckets);
  const nulls = new Uint8Array(series * buckets);
  // A percentile is one of a few hundred sketch bucket values (or a cell's min or max): each
  // distinct sketch value is rounded once (toPrecision is ~1 µs, and a 30-day hourly p95 by 20
  // tag values finalizes 14,400 cells). A cell of one value (every point the same: finalize gives
  // it) is a point's own value, rarely seen twice (a 24 h minute p95: 8,000 such cells): rounded
  // without the memo, as a min or max finalize clamped to.
  const percentile = aggregation[0] === 'p';
  const sketchValue = memoized(roundSketchValue);
  for (let s = 0, k = 0; s < series; s++) {
    const aggs = merged[s];
    for (let i = 0; i < buckets; i++, k++) {
      const a = aggs?.[i];
      const v =
        a === undefined
          ? empty
          : !percentile
            ? roundFloat(finalize(a, aggregation))
            : a.count > 0 && Object.is(a.min, a.max)
              ? roundFloat(a.min)
              : percentileValue(a, finalize(a, aggregation), sketchValue);
      if (v === null) nulls[k] = 1;
      else values[k] = v;
    }
  }
  return { series, buckets, values, nulls };
}

/** The values of each series (finishCells' layout, one array per series). */
export function unpackValues(f: FinishedValues): (number | null)[][] {
  const { series, buckets, values, nulls } = f;
  const out: (number | null)[][] = new Array(series);
  for (let s = 0, k = 0; s < series; s++) {
    const row: (number | null)[] = new Array(buckets);
    for (let i = 0; i < buckets; i++, k++) row[i] = nulls[k] ? null : values[k]!;
    out[s] = row;
  }
  return out;
}

/** finishCells as one array of values per series (the inline merge, tests). */
export const finishSeries = (plan: Pick<MergePlan, 'starts' | 'aggregation'>, groups: Iterable<Group>, seriesOf: number[], series: number): (number | null)[][] =>
  unpackValues(finishCells(plan, groups, seriesOf, series));
