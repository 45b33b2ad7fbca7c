/**
 * Partial aggregate of one (account, metric, tag set, time bucket): enough to answer
 * count|sum|avg|min|max|last and percentiles, and mergeable with other partials.
 *
 * mergeAggregates is commutative and associative exactly for count, min, max, last,
 * lastAt and the sketch; for sum it is commutative exactly and associative up to
 * float64 rounding (exact while partial sums are integers below 2^53).
 * Empty aggregate: count 0, sum 0, min +∞, max −∞, lastAt −∞ (identity for merge).
 */
import { ByteReader, ByteWriter } from './bytes.js';
import { RollupError, invalid, malformed } from './errors.js';
import {
  DEFAULT_ALPHA,
  DEFAULT_LN_GAMMA,
  DEFAULT_MAX_BUCKETS,
  type Sketch,
  type SketchOptions,
  add,
  clearSketch,
  cloneSketch,
  createSketch,
  incompatible,
  lnGammaOf,
  merge,
  mergeScanned,
  quantile,
  readSketchBody,
  keepScanned,
  commitKept,
  scanKeptBody,
  keptQuantile,
  mergeKept,
  scanSingle,
  scanSketchBody,
  scanValues,
  sketchEquals,
  validParams,
  writeSketchBody,
} from './sketch.js';
import { type Distinct, addHash, cloneDistinct, emptyDistinct, estimateDistinct, mergeDistinct, readDistinct, skipDistinct, writeDistinct } from './distinct.js';

export interface Aggregate {
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Value of the point with the greatest lastAt (ties: the greater value). */
  last: number;
  /** Epoch milliseconds of `last`; −∞ when empty. */
  lastAt: number;
  sketch: Sketch;
  /**
   * Distinct visitors of the points (distinct.ts), when any point came with a visitor hash
   * (browser batches, README "Unique visitors"); absent otherwise.
   */
  visitors?: Distinct;
  /**
   * Sketches merged in but not yet into `sketch` (mergeEncodedDeferred): the encodings they
   * came in, validated when merged. Every function here that reads `sketch` merges them first
   * (finalize reads a percentile through a scratch sketch instead, and keeps them).
   */
  deferred?: Deferred;
}

/**
 * Sketches merged but not yet into a sketch, in one array: [count, alpha, …] — their total
 * count, their (common) alpha (0: the default), then three entries per sketch: one of the
 * default parameters (nearly all) as its buckets `chunk, start, end` (sketch.ts keepScanned:
 * (key, count) pairs in a shared Int32Array), any other as its encoding `bytes, start, end` (a
 * Uint8Array). One array per cell instead of an object and two arrays: a percentile query's
 * cells (20 groups × 720 hours, three encodings each) are most of its merge's garbage. The
 * buckets are kept rather than the bytes so finishing a cell parses nothing a second time:
 * until session 14 the finish of a 30-day hourly p95 in Asia/Kolkata (2M points, ~10
 * encodings of ~4 buckets per cell) parsed each encoding again, about a third of its merge +
 * finish CPU.
 */
type Deferred = (number | Uint8Array | Int32Array)[];
const DEFERRED_COUNT = 0;
const DEFERRED_ALPHA = 1;
const DEFERRED_FIRST = 2;

export const AGGREGATIONS = ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p75', 'p90', 'p95', 'p99', 'last', 'uniq'] as const;
export type Aggregation = (typeof AGGREGATIONS)[number];
const QUANTILES: Partial<Record<Aggregation, number>> = { p50: 0.5, p75: 0.75, p90: 0.9, p95: 0.95, p99: 0.99 };

export function emptyAggregate(opts?: SketchOptions): Aggregate {
  return { count: 0, sum: 0, min: Infinity, max: -Infinity, last: 0, lastAt: -Infinity, sketch: createSketch(opts) };
}

/**
 * An empty aggregate for merges that never ask for a percentile (mergeEncoded with
 * withSketch = false): it shares one empty sketch instead of building one (mergeInto and
 * mergeEncoded replace it rather than write to it). Do not add points to it.
 */
export function emptyScalars(): Aggregate {
  // `deferred` from the start: one object shape whether or not a sketch is deferred (mergeEncodedDeferred)
  return { count: 0, sum: 0, min: Infinity, max: -Infinity, last: 0, lastAt: -Infinity, sketch: NO_SKETCH, deferred: undefined };
}

export function cloneAggregate(a: Aggregate): Aggregate {
  settleSketch(a);
  const c = { ...a, sketch: cloneSketch(a.sketch) };
  if (a.visitors) c.visitors = cloneDistinct(a.visitors);
  return c;
}

/**
 * Adds one point (value finite, timeMs a safe integer), and its visitor's hash (8 bytes or more)
 * when it has one. Mutates and returns `agg`.
 */
export function addPoint(agg: Aggregate, value: number, timeMs: number, visitor?: Uint8Array): Aggregate {
  if (!Number.isFinite(value)) throw invalid('value must be a finite number');
  if (!Number.isSafeInteger(timeMs)) throw invalid('time must be an integer number of milliseconds');
  settleSketch(agg);
  if (visitor) addHash((agg.visitors ??= emptyDistinct()), visitor);
  if (value === 0) value = 0; // -0 → 0, so equal inputs give byte-equal encodings in any order
  add(agg.sketch, value);
  mergeFields(agg, 1, value, value, value, value, timeMs); // one point: an aggregate of one value
  return agg;
}

/** Merges `from` into `into` (mutates and returns `into`); use in hot loops. */
export function mergeInto(into: Aggregate, from: Aggregate): Aggregate {
  settleSketch(into);
  settleSketch(from);
  if (into.sketch === NO_SKETCH && from.sketch.count > 0) into.sketch = createSketch(); // never write to NO_SKETCH
  merge(into.sketch, from.sketch); // first: it may throw, and then nothing has changed
  if (from.visitors) mergeDistinct((into.visitors ??= emptyDistinct()), from.visitors);
  mergeFields(into, from.count, from.sum, from.min, from.max, from.last, from.lastAt);
  return into;
}

function mergeFields(into: Aggregate, count: number, sum: number, min: number, max: number, last: number, lastAt: number): void {
  into.count += count;
  into.sum += sum;
  if (min < into.min) into.min = min;
  if (max > into.max) into.max = max;
  if (lastAt > into.lastAt || (lastAt === into.lastAt && last > into.last)) {
    into.last = last;
    into.lastAt = lastAt;
  }
}

/** Pure merge: a new aggregate, inputs untouched. */
export function mergeAggregates(a: Aggregate, b: Aggregate): Aggregate {
  return mergeInto(cloneAggregate(a), b);
}

/**
 * The requested statistic. Empty aggregate: count and sum give 0 (their value over
 * no points), everything else null. Percentiles are sketch estimates (see sketch.ts)
 * clamped to [min, max], which keeps the error bound and makes single values exact.
 */
export function finalize(agg: Aggregate, aggregation: Aggregation): number | null {
  if (aggregation === 'count') return agg.count;
  if (aggregation === 'sum') return agg.sum;
  if (aggregation === 'uniq') return agg.visitors ? estimateDistinct(agg.visitors) : 0;
  const q = QUANTILES[aggregation];
  if (q === undefined && !AGGREGATIONS.includes(aggregation)) throw invalid(`unknown aggregation: ${String(aggregation)}`);
  if (agg.count === 0) return null;
  switch (aggregation) {
    case 'avg':
      return agg.sum / agg.count;
    case 'min':
      return agg.min;
    case 'max':
      return agg.max;
    case 'last':
      return agg.last;
  }
  // Every value the same (one point, often, in a cell of a percentile query): the clamp below
  // gives min whatever the sketch says, so its sketch is not merged.
  if (Object.is(agg.min, agg.max)) return agg.min;
  // Deferred sketches only: read from their kept buckets (sketch.ts keptQuantile), else through a scratch sketch.
  const d = agg.deferred;
  const only = d !== undefined && agg.sketch.count === 0;
  const v = (only ? keptQuantile(d, DEFERRED_FIRST, d[DEFERRED_COUNT] as number, q!) : undefined) ?? quantile(only ? scratchOf(d) : (settleSketch(agg), agg.sketch), q!)!;
  return Math.min(Math.max(v, agg.min), agg.max);
}

// ---- binary encoding, version 1 ----------------------------------------------
//   u8 version (1), varint count; count 0 ends here.
//   u8 flags
//   SINGLE ? f64 v (= min = max = last) : f64 min, f64 max, f64 last
//   SUM_IMPLIED ? (sum = count·v) : f64 sum
//   varint |lastAt| (LASTAT_NEG: negative)
//   PARAMS ? f64 alpha, varint maxBuckets : (defaults)
//   SKETCH_IMPLIED ? (sketch = v added count times) : sketch body (sketch.ts)
// The flags make the common cases small: one point, or a counter of all-equal values.
//
// Version 2 (an aggregate with visitors; README "Unique visitors"): version 1's layout with the
// distinct sketch (distinct.ts writeDistinct) right after lastAt.
//
// ---- version 3, compact (4: with visitors, after lastAt as in 2) — what encodeAggregate writes ----
// Version 1's layout with fewer bytes for what rows hold most (issue 14, bytes per point):
//   - every value (min, max, last, sum) is a *number* (below): a decimal such as 1, 4000 or 129.95
//     takes 1–4 bytes instead of 8; any other float64 takes 9 (1 + the float);
//   - LAST_MIN / LAST_MAX: `last` equals min / max and is not written;
//   - SKETCH_IMPLIED also without SINGLE: a sketch of 2 values is {min, max}, of 3 values
//     {min, max, sum − min − max} — used only when that rebuilds the sketch exactly (checked when
//     encoding), so the decoded sketch is the same.
// number: varint h; d = h % 16. d ≤ 9: the value is m / 10^d with m = zigzag⁻¹(⌊h / 16⌋), |m| ≤ 2^47;
// d = 15 (h = 15): a little-endian float64 follows. The encoder writes m / 10^d only when it gives
// the value back bit for bit (so −0 and non-decimals take the float), with the smallest such d.
// An empty aggregate is still written as version 1 (`01 00`). Rows of every version open.

const VERSION = 1;
const VERSION_VISITORS = 2;
const VERSION_COMPACT = 3;
const VERSION_COMPACT_VISITORS = 4;
const SINGLE = 1;
const SUM_IMPLIED = 2;
const SKETCH_IMPLIED = 4;
const PARAMS = 8;
const LASTAT_NEG = 16;
const LAST_MIN = 32;
const LAST_MAX = 64;
const ALL_FLAGS = SINGLE | SUM_IMPLIED | SKETCH_IMPLIED | PARAMS | LASTAT_NEG;
const ALL_COMPACT_FLAGS = ALL_FLAGS | LAST_MIN | LAST_MAX;
const POW10 = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const MAX_MANTISSA = 2 ** 47;
const FLOAT_NUMBER = 15;

/** A value as a number of the compact encoding (above). */
function writeNumber(w: ByteWriter, v: number): void {
  for (let d = 0; d < POW10.length; d++) {
    const m = Math.round(v * POW10[d]!) + 0; // + 0: −0 is written as a float
    if (!(Math.abs(m) <= MAX_MANTISSA)) break; // larger for every greater d (and NaN, ±∞)
    if (Object.is(m / POW10[d]!, v)) {
      w.varint((m >= 0 ? m * 2 : -m * 2 - 1) * 16 + d);
      return;
    }
  }
  w.u8(FLOAT_NUMBER);
  w.f64(v);
}

/** The sketch a compact SKETCH_IMPLIED stands for: `count` times min when min = max, else {min, max(, sum − min − max)}. */
function impliedSketch(params: SketchOptions, count: number, min: number, max: number, sum: number): Sketch | null {
  if (min !== max && count !== 2 && count !== 3) return null;
  const s = createSketch(params);
  if (min === max) return add(s, min, count);
  add(add(s, min), max);
  if (count === 3) {
    const mid = sum - min - max;
    if (!(mid >= min && mid <= max)) return null;
    add(s, mid);
  }
  return s;
}

/** The compact encoding (version 3, or 4 with visitors); an empty aggregate as version 1. */
export function encodeAggregate(agg: Aggregate): Uint8Array {
  const w = new ByteWriter();
  encodeAggregateTo(agg, w);
  return w.finish();
}

/** encodeAggregate appended to `w` (a tick encodes all its rows into one writer). */
export function encodeAggregateTo(agg: Aggregate, w: ByteWriter): void {
  settleSketch(agg);
  if (agg.count === 0) {
    w.u8(VERSION);
    w.u8(0);
    return;
  }
  const visitors = agg.visitors;
  w.u8(visitors ? VERSION_COMPACT_VISITORS : VERSION_COMPACT);
  w.varint(agg.count);
  const s = agg.sketch;
  const params = { alpha: s.alpha, maxBuckets: s.maxBuckets };
  // Object.is: a value written once stands for others only when it is the same float, −0 included
  const single = Object.is(agg.min, agg.max) && Object.is(agg.last, agg.min);
  let flags = 0;
  if (single) {
    flags |= SINGLE;
    if (Object.is(agg.sum, agg.count * agg.min)) flags |= SUM_IMPLIED;
  } else if (Object.is(agg.last, agg.min)) flags |= LAST_MIN;
  else if (Object.is(agg.last, agg.max)) flags |= LAST_MAX;
  const implied = impliedSketch(params, agg.count, agg.min, agg.max, agg.sum);
  if (implied && sketchEquals(s, implied)) flags |= SKETCH_IMPLIED;
  if (s.alpha !== DEFAULT_ALPHA || s.maxBuckets !== DEFAULT_MAX_BUCKETS) flags |= PARAMS;
  if (agg.lastAt < 0) flags |= LASTAT_NEG;
  w.u8(flags);
  writeNumber(w, agg.min);
  if (!single) {
    writeNumber(w, agg.max);
    if (!(flags & (LAST_MIN | LAST_MAX))) writeNumber(w, agg.last);
  }
  if (!(flags & SUM_IMPLIED)) writeNumber(w, agg.sum);
  w.varint(Math.abs(agg.lastAt));
  if (visitors) writeDistinct(w, visitors);
  if (flags & PARAMS) {
    w.f64(s.alpha);
    w.varint(s.maxBuckets);
  }
  if (!(flags & SKETCH_IMPLIED)) writeSketchBody(w, s);
}

/** Stands in for the sketch when it is not decoded: empty, never written to (merging empty sketches changes nothing). */
const NO_SKETCH: Sketch = createSketch();

/**
 * Decodes and validates; throws RollupError('malformed_aggregate') on anything off.
 * `withSketch = false` (count, sum, avg, min, max, last): the sketch body is not decoded and
 * the aggregate carries a shared empty sketch; do not ask it for percentiles or add to it
 * (mergeInto and mergeEncoded replace it rather than write to it).
 */
/**
 * The scalar part of an encoding after version and count, as readScalars leaves it: the numbers
 * in a Float64Array (module scratch, reused), so reading one allocates nothing. Until session 16
 * an object's fields and the readers' return values: a number beyond a small integer (a value,
 * a sum, every lastAt) is a heap number each, ~6 MB per 30-day hourly p95 in Asia/Kolkata.
 */
const head = new Float64Array(5);
const MIN = 0;
const MAX = 1;
const LAST = 2;
const SUM = 3;
const LAST_AT = 4;

/** Reads a number of the encoding (compact: a *number* as above; else a float64) into head[at]. */
function readNumberInto(r: ByteReader, compact: boolean, at: number): void {
  if (!compact) {
    head[at] = r.f64();
    return;
  }
  const h = r.varint();
  const d = h % 16;
  if (d === FLOAT_NUMBER && h === FLOAT_NUMBER) {
    head[at] = r.f64();
    return;
  }
  if (d >= POW10.length) throw malformed('number');
  const z = (h - d) / 16;
  if (z > MAX_MANTISSA * 2) throw malformed('number');
  head[at] = (z % 2 === 0 ? z / 2 : -(z + 1) / 2) / POW10[d]!;
}

/** Reads and validates flags, min/max/last, sum and lastAt into `head` (decodeAggregate and mergeEncoded alike); the flags. */
function readScalars(r: ByteReader, count: number, compact: boolean): number {
  const flags = r.u8();
  if (flags & ~(compact ? ALL_COMPACT_FLAGS : ALL_FLAGS)) throw malformed('unknown flags');
  if (!(flags & SINGLE) && flags & SUM_IMPLIED) throw malformed('implied fields need SINGLE');
  if (!compact && !(flags & SINGLE) && flags & SKETCH_IMPLIED) throw malformed('implied fields need SINGLE');
  if (flags & LAST_MIN && flags & (LAST_MAX | SINGLE)) throw malformed('last is one of min, max');
  if (flags & LAST_MAX && flags & SINGLE) throw malformed('last is one of min, max');
  readNumberInto(r, compact, MIN);
  if (flags & SINGLE) head[MAX] = head[MIN]!;
  else readNumberInto(r, compact, MAX);
  if (flags & SINGLE || flags & LAST_MIN) head[LAST] = head[MIN]!;
  else if (flags & LAST_MAX) head[LAST] = head[MAX]!;
  else readNumberInto(r, compact, LAST);
  const min = head[MIN]!;
  const max = head[MAX]!;
  const last = head[LAST]!;
  if (!Number.isFinite(min) || !Number.isFinite(max) || !Number.isFinite(last)) throw malformed('non-finite value');
  if (!(min <= last && last <= max)) throw malformed('min/last/max out of order');
  if (flags & SUM_IMPLIED) head[SUM] = count * min;
  else readNumberInto(r, compact, SUM);
  if (Number.isNaN(head[SUM]!)) throw malformed('sum is NaN');
  const lastAtAbs = r.varint();
  head[LAST_AT] = flags & LASTAT_NEG ? 0 - lastAtAbs : lastAtAbs;
  return flags;
}

/** The version byte: whether it is a compact one, and whether a distinct sketch follows lastAt. */
function readVersion(r: ByteReader): { compact: boolean; visitors: boolean } {
  const version = r.u8();
  if (version < VERSION || version > VERSION_COMPACT_VISITORS) throw malformed('unknown version');
  return VERSIONS[version]!;
}
const VERSIONS: Record<number, { compact: boolean; visitors: boolean }> = {
  [VERSION]: { compact: false, visitors: false },
  [VERSION_VISITORS]: { compact: false, visitors: true },
  [VERSION_COMPACT]: { compact: true, visitors: false },
  [VERSION_COMPACT_VISITORS]: { compact: true, visitors: true },
};

/** A compact SKETCH_IMPLIED without SINGLE: the sketch of 2 or 3 values, rebuilt (malformed when it cannot be). */
function impliedMulti(params: SketchOptions, count: number): Sketch {
  const s = impliedSketch(params, count, head[MIN]!, head[MAX]!, head[SUM]!);
  if (!s) throw malformed('implied sketch');
  return s;
}

/** impliedMulti's sketch put in the scan scratch (sketch.ts scanValues), with its checks (malformed alike). */
function scanImplied(count: number, lnGamma: number, maxBuckets: number): void {
  const min = head[MIN]!;
  const max = head[MAX]!;
  if (min === max) return scanSingle(min, count, lnGamma);
  if (count !== 2 && count !== 3) throw malformed('implied sketch');
  const mid = count === 3 ? head[SUM]! - min - max : 0;
  if (count === 3 && !(mid >= min && mid <= max)) throw malformed('implied sketch');
  scanValues(min, max, mid, count, lnGamma, maxBuckets);
}

export function decodeAggregate(bytes: Uint8Array, withSketch = true): Aggregate {
  if (!(bytes instanceof Uint8Array)) throw malformed('not a Uint8Array');
  const r = new ByteReader(bytes);
  const v = readVersion(r);
  const count = r.varint();
  if (count === 0) {
    if (v.compact || v.visitors) throw malformed('empty aggregate of a version other than 1');
    if (r.remaining !== 0) throw malformed('trailing bytes');
    return emptyAggregate();
  }
  const flags = readScalars(r, count, v.compact);
  const min = head[MIN]!;
  const max = head[MAX]!;
  const last = head[LAST]!;
  const sum = head[SUM]!;
  const lastAt = head[LAST_AT]!;
  const visitors = v.visitors ? readDistinct(r) : undefined;
  const withVisitors = <T extends Aggregate>(a: T): T => {
    if (visitors) a.visitors = visitors;
    return a;
  };
  if (!withSketch) return withVisitors({ count, sum, min, max, last, lastAt, sketch: NO_SKETCH });

  let sketch: Sketch;
  try {
    sketch = flags & PARAMS ? createSketch({ alpha: r.f64(), maxBuckets: r.varint() }) : createSketch();
  } catch (e) {
    if (e instanceof RollupError && e.code === 'invalid_argument') throw malformed('sketch parameters');
    throw e;
  }
  if (flags & SKETCH_IMPLIED) {
    if (flags & SINGLE) add(sketch, min, count);
    else sketch = impliedMulti({ alpha: sketch.alpha, maxBuckets: sketch.maxBuckets }, count);
  } else {
    readSketchBody(r, sketch);
    if (sketch.count !== count) throw malformed('sketch count does not match count');
  }
  if (r.remaining !== 0) throw malformed('trailing bytes');
  return withVisitors({ count, sum, min, max, last, lastAt, sketch });
}

const cursor = new ByteReader();

/** What parseEncoded read (module scratch, reused): the scalars are in `head`, the sketch (withSketch) in sketch.ts' scan scratch. */
const parsed = { count: 0, alpha: DEFAULT_ALPHA, maxBuckets: DEFAULT_MAX_BUCKETS, lnGamma: DEFAULT_LN_GAMMA, visitors: undefined as Distinct | undefined, keptBody: false };

/**
 * Reads and validates `bytes[start, end)` exactly as decodeAggregate(…, withSketch) does (same
 * errors) into `parsed` and `head`; a count of 0 reads nothing more. `again`: bytes this has
 * accepted before, read for their sketch only (the visitors skipped, not built).
 */
function parseEncoded(bytes: Uint8Array, withSketch: boolean, start: number, end: number, again = false, keep = false): number {
  if (!(bytes instanceof Uint8Array)) throw malformed('not a Uint8Array');
  const r = cursor;
  r.reset(bytes, start, end);
  const v = readVersion(r);
  const count = r.varint();
  parsed.count = count;
  parsed.visitors = undefined;
  parsed.keptBody = false;
  if (count === 0) {
    if (v.compact || v.visitors) throw malformed('empty aggregate of a version other than 1');
    if (r.remaining !== 0) throw malformed('trailing bytes');
    return 0;
  }
  const flags = readScalars(r, count, v.compact); // the same checks as decodeAggregate
  if (v.visitors) {
    if (again) skipDistinct(r);
    else parsed.visitors = readDistinct(r);
  }
  if (withSketch) {
    let alpha = DEFAULT_ALPHA;
    let maxBuckets = DEFAULT_MAX_BUCKETS;
    let lnGamma = DEFAULT_LN_GAMMA;
    if (flags & PARAMS) {
      alpha = r.f64();
      maxBuckets = r.varint();
      if (!validParams(alpha, maxBuckets)) throw malformed('sketch parameters');
      lnGamma = lnGammaOf(alpha);
    }
    if (flags & SKETCH_IMPLIED) {
      if (flags & SINGLE) scanSingle(head[MIN]!, count, lnGamma);
      else scanImplied(count, lnGamma, maxBuckets); // 2 or 3 values (compact): from min, max (and sum − min − max)
    } else if (keep && !(flags & PARAMS)) {
      // straight into the kept chunk (sketch.ts scanKeptBody: the same checks), committed by the caller
      if (scanKeptBody(r) !== count) throw malformed('sketch count does not match count');
      parsed.keptBody = true;
    } else if (scanSketchBody(r, maxBuckets, lnGamma) !== count) throw malformed('sketch count does not match count');
    if (r.remaining !== 0) throw malformed('trailing bytes');
    parsed.alpha = alpha;
    parsed.maxBuckets = maxBuckets;
    parsed.lnGamma = lnGamma;
  }
  return flags;
}

/** The parsed visitors and scalars merged into `into` (last: `into` is unchanged by anything that throws before). */
function mergeParsed(into: Aggregate): void {
  const visitors = parsed.visitors;
  if (visitors) {
    if (into.visitors) mergeDistinct(into.visitors, visitors);
    else into.visitors = visitors;
  }
  mergeFields(into, parsed.count, head[SUM]!, head[MIN]!, head[MAX]!, head[LAST]!, head[LAST_AT]!);
}

/**
 * Same result as mergeInto(into, decodeAggregate(bytes, withSketch)), without building the
 * decoded aggregate: for hot loops. Throws RollupError('malformed_aggregate') exactly when
 * decodeAggregate would, and merge's errors (incompatible_sketch, invalid_argument on count
 * overflow) exactly when mergeInto would; either way `into` is left unchanged.
 * withSketch = false: like decodeAggregate(bytes, false), the sketch body is neither read
 * nor validated, and `into.sketch` is untouched. `start`, `end`: the encoding is
 * `bytes[start, end)` (a day pack's slot, without a view per slot).
 */
export function mergeEncoded(into: Aggregate, bytes: Uint8Array, withSketch: boolean, start = 0, end = bytes.length): void {
  if (withSketch) settleSketch(into);
  parseEncoded(bytes, withSketch, start, end);
  if (parsed.count === 0) return mergeFields(into, 0, 0, Infinity, -Infinity, 0, -Infinity); // an empty aggregate
  if (withSketch) {
    // an empty sketch adopts the body's parameters and cannot throw, so swapping NO_SKETCH out first is safe
    if (into.sketch === NO_SKETCH) into.sketch = createSketch();
    mergeScanned(into.sketch, parsed.alpha, parsed.maxBuckets, parsed.lnGamma); // may throw; nothing has changed yet
  }
  mergeParsed(into);
}

/**
 * mergeEncoded(into, bytes, true, start, end) with the sketch merged later: the encoding is
 * validated now (the same errors, `into` unchanged on any) and kept (`bytes` must not change
 * until the aggregate is done with: a row's opened payload); its sketch goes into `into.sketch`
 * when something reads it, or through a scratch sketch when finalize asks for a percentile. A
 * query merges many small sketches into cells it finalizes once: no sketch is built per cell.
 * Start from emptyScalars(): `into` may also be one mergeEncoded or mergeInto built.
 */
export function mergeEncodedDeferred(into: Aggregate, bytes: Uint8Array, start = 0, end = bytes.length): void {
  const flags = parseEncoded(bytes, true, start, end, false, true);
  if (parsed.count === 0) return mergeFields(into, 0, 0, Infinity, -Infinity, 0, -Infinity); // an empty aggregate
  const d = into.deferred;
  const before = into.sketch.count + (d ? (d[DEFERRED_COUNT] as number) : 0);
  if (before > 0) {
    // what mergeScanned checks of a non-empty sketch
    if ((d ? deferredAlpha(d) : into.sketch.alpha) !== parsed.alpha) throw incompatible();
    if (before + parsed.count > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  }
  mergeParsed(into);
  const kept = d ?? (into.deferred = [0, parsed.alpha === DEFAULT_ALPHA ? 0 : parsed.alpha]);
  (kept[DEFERRED_COUNT] as number) += parsed.count;
  // default parameters: its buckets (written by the scan, or in the scan scratch for an implied sketch), else its bytes
  if (flags & PARAMS || !(parsed.keptBody ? commitKept(kept) : keepScanned(kept))) kept.push(bytes, start, end);
}

/** The alpha of deferred sketches (0: the default, a small integer rather than a float boxed per cell). */
const deferredAlpha = (d: Deferred): number => (d[DEFERRED_ALPHA] === 0 ? DEFAULT_ALPHA : (d[DEFERRED_ALPHA] as number));

/** Merges the deferred sketches into `s`, in the order they came (validated then: nothing throws). */
function mergeDeferred(s: Sketch, d: Deferred): void {
  for (let i = DEFERRED_FIRST; i < d.length; i += 3) {
    const at = d[i]!;
    if (at instanceof Int32Array) {
      mergeKept(s, at, d[i + 1] as number, d[i + 2] as number);
      continue;
    }
    parseEncoded(at as Uint8Array, true, d[i + 1] as number, d[i + 2] as number, true);
    mergeScanned(s, parsed.alpha, parsed.maxBuckets, parsed.lnGamma);
  }
}

/** Merges an aggregate's deferred sketches (mergeEncodedDeferred) into its sketch, allocating one if it has none; then `sketch` is all of it. */
export function settleSketch(a: Aggregate): void {
  const d = a.deferred;
  if (!d) return;
  a.deferred = undefined; // not deleted: the object keeps its shape
  if (a.sketch === NO_SKETCH) a.sketch = createSketch();
  mergeDeferred(a.sketch, d);
}

/** One sketch, emptied and reused for each deferred aggregate finalize reads a percentile of. */
const scratch = createSketch();
function scratchOf(d: Deferred): Sketch {
  clearSketch(scratch);
  mergeDeferred(scratch, d);
  return scratch;
}
