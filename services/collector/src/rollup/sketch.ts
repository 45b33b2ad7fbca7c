/**
 * DDSketch: a mergeable quantile sketch with relative-error guarantees
 * (Masson, Rim, Lee, "DDSketch", VLDB 2019), logarithmic mapping.
 *
 * Mapping. With relative accuracy α (default 0.01) let γ = (1 + α) / (1 − α).
 * A value v with |v| ≥ MIN_INDEXABLE (1e-9) goes to bucket i = ⌈ln|v| / ln γ⌉,
 * which covers magnitudes (γ^(i−1), γ^i]; positives and negatives have separate
 * stores, values with |v| < 1e-9 go to a zero counter. A bucket is reported as
 * γ^i·(1 − α) = 2γ^i/(γ + 1), whose relative distance to both bucket ends is
 * exactly (γ − 1)/(γ + 1) = α, so it is within α of every value in the bucket.
 *
 * Quantile definition (rank convention). For n values sorted ascending
 * x_0 ≤ … ≤ x_{n−1}, the q-quantile is x_k with k = ⌊q·(n − 1)⌋ (0-based,
 * computed in float64; no interpolation: q = 0 is the minimum, q = 1 the maximum).
 *
 * Guarantee. quantile(s, q) returns v̂ with |v̂ − x_k| ≤ α·|x_k| when |x_k| ≥ 1e-9,
 * and v̂ = 0 when |x_k| < 1e-9 (absolute error < 1e-9) — up to float64 rounding
 * of ln/exp (~1e-15 relative). The sketch is exact under merge: merging sketches
 * gives the same buckets as adding all values to one sketch.
 *
 * Limit. Each store holds at most maxBuckets (default 2048) consecutive buckets,
 * i.e. magnitudes spanning a factor γ^2048 ≈ 6·10^17 at α = 0.01. Beyond that the
 * lowest values are collapsed (positive store: the smallest positives; negative
 * store: the most negative values) into the lowest kept bucket; quantiles falling
 * in a collapsed range are overestimated, all others keep the guarantee. The
 * final buckets do not depend on the order of adds and merges.
 */
import { ByteReader, ByteWriter } from './bytes.js';
import { RollupError, invalid, malformed } from './errors.js';

export const DEFAULT_ALPHA = 0.01;
export const DEFAULT_MAX_BUCKETS = 2048;
/** Values with smaller magnitude are counted as zero. */
export const MIN_INDEXABLE = 1e-9;
const MIN_ALPHA = 1e-4;
const MAX_ALPHA = 0.5;
const MIN_MAX_BUCKETS = 16;
const MAX_MAX_BUCKETS = 65_536;

/** Dense run of bucket counts: counts[j] is the count of bucket index offset + j. */
export interface Store {
  offset: number;
  counts: number[];
}

export interface Sketch {
  alpha: number;
  maxBuckets: number;
  /** ln γ, cached. */
  lnGamma: number;
  /** Total number of values (zero + both stores). */
  count: number;
  zero: number;
  pos: Store;
  neg: Store;
}

export interface SketchOptions {
  alpha?: number;
  maxBuckets?: number;
}

export function createSketch(opts: SketchOptions = {}): Sketch {
  const alpha = opts.alpha ?? DEFAULT_ALPHA;
  const maxBuckets = opts.maxBuckets ?? DEFAULT_MAX_BUCKETS;
  if (!(alpha >= MIN_ALPHA && alpha <= MAX_ALPHA)) throw invalid(`sketch alpha must be in [${MIN_ALPHA}, ${MAX_ALPHA}]`);
  if (!Number.isInteger(maxBuckets) || maxBuckets < MIN_MAX_BUCKETS || maxBuckets > MAX_MAX_BUCKETS) {
    throw invalid(`sketch maxBuckets must be an integer in [${MIN_MAX_BUCKETS}, ${MAX_MAX_BUCKETS}]`);
  }
  const lnGamma = Math.log((1 + alpha) / (1 - alpha));
  return { alpha, maxBuckets, lnGamma, count: 0, zero: 0, pos: { offset: 0, counts: [] }, neg: { offset: 0, counts: [] } };
}

export function cloneSketch(s: Sketch): Sketch {
  return {
    ...s,
    pos: { offset: s.pos.offset, counts: s.pos.counts.slice() },
    neg: { offset: s.neg.offset, counts: s.neg.counts.slice() },
  };
}

export function count(s: Sketch): number {
  return s.count;
}

const indexOf = (s: Sketch, magnitude: number): number => Math.ceil(Math.log(magnitude) / s.lnGamma);
/** γ^i·(1 − α), computed in log space so the top bucket does not overflow. */
const valueOf = (s: Sketch, i: number): number => Math.min(Math.exp(i * s.lnGamma + Math.log1p(-s.alpha)), Number.MAX_VALUE);
const indexRange = (s: Sketch): [number, number] => [indexOf(s, MIN_INDEXABLE), indexOf(s, Number.MAX_VALUE)];

/** Adds `n` occurrences of `value` (finite; n a positive safe integer). Mutates and returns the sketch. */
export function add(s: Sketch, value: number, n = 1): Sketch {
  if (!Number.isFinite(value)) throw invalid('sketch value must be finite');
  if (!Number.isSafeInteger(n) || n < 1) throw invalid('sketch count must be a positive integer');
  if (s.count + n > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  const m = Math.abs(value);
  if (m < MIN_INDEXABLE) s.zero += n;
  else if (value > 0) storeAdd(s.pos, true, indexOf(s, m), n, s.maxBuckets);
  else storeAdd(s.neg, false, indexOf(s, m), n, s.maxBuckets);
  s.count += n;
  return s;
}

/** Merges `from` into `into` (mutates and returns `into`). An empty sketch is an identity either way. */
export function merge(into: Sketch, from: Sketch): Sketch {
  if (from.count === 0) return into;
  if (into.count === 0) {
    // adopt from's parameters too, so an empty default sketch is an identity for custom-α ones
    return Object.assign(into, cloneSketch(from));
  }
  if (into.alpha !== from.alpha) throw new RollupError('incompatible_sketch', 'cannot merge sketches with different alpha');
  if (into.count + from.count > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  storeMerge(into.pos, true, from.pos, into.maxBuckets);
  storeMerge(into.neg, false, from.neg, into.maxBuckets);
  into.zero += from.zero;
  into.count += from.count;
  return into;
}

/** The q-quantile (see the rank convention above), or null for an empty sketch. */
export function quantile(s: Sketch, q: number): number | null {
  if (!(q >= 0 && q <= 1)) throw invalid('quantile must be in [0, 1]');
  if (s.count === 0) return null;
  const rank = Math.floor(q * (s.count - 1));
  let seen = 0;
  // ascending value order: most negative first (= highest |v| index of the negative store)
  const neg = s.neg.counts;
  for (let j = neg.length - 1; j >= 0; j--) {
    seen += neg[j]!;
    if (seen > rank) return -valueOf(s, s.neg.offset + j);
  }
  seen += s.zero;
  if (seen > rank) return 0;
  const pos = s.pos.counts;
  for (let j = 0; j < pos.length; j++) {
    seen += pos[j]!;
    if (seen > rank) return valueOf(s, s.pos.offset + j);
  }
  throw new Error('sketch counts inconsistent'); // unreachable: count is the sum of all buckets
}

/** Same parameters and same non-empty buckets (ignores dense-array padding). */
export function sketchEquals(a: Sketch, b: Sketch): boolean {
  return a.alpha === b.alpha && a.count === b.count && a.zero === b.zero && storeEquals(a.pos, b.pos) && storeEquals(a.neg, b.neg);
}

// ---- stores ----------------------------------------------------------------

const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : x > hi ? hi : x);
const top = (s: Store): number => s.offset + s.counts.length - 1;

/**
 * Grows `s` to cover indexes [lo, hi] (and its current range), keeping at most `max`
 * buckets. keepHigh: drop the lowest indexes (positive store), else the highest
 * (negative store). Dropped counts fold into the nearest kept bucket. Since the kept
 * window only moves one way, a count ends where it would with one big batch.
 */
function cover(s: Store, keepHigh: boolean, lo: number, hi: number, max: number): void {
  if (s.counts.length > 0) {
    lo = Math.min(lo, s.offset);
    hi = Math.max(hi, top(s));
  }
  if (hi - lo + 1 > max) {
    if (keepHigh) lo = hi - max + 1;
    else hi = lo + max - 1;
  }
  if (s.counts.length > 0 && lo === s.offset && hi === top(s)) return;
  const next = new Array<number>(hi - lo + 1).fill(0);
  for (let j = 0; j < s.counts.length; j++) {
    const c = s.counts[j]!;
    if (c !== 0) next[clamp(s.offset + j, lo, hi) - lo]! += c;
  }
  s.offset = lo;
  s.counts = next;
}

function storeAdd(s: Store, keepHigh: boolean, index: number, n: number, max: number): void {
  cover(s, keepHigh, index, index, max);
  s.counts[clamp(index, s.offset, top(s)) - s.offset]! += n;
}

function storeMerge(into: Store, keepHigh: boolean, from: Store, max: number): void {
  if (from.counts.length === 0) return;
  cover(into, keepHigh, from.offset, top(from), max);
  const hi = top(into);
  for (let j = 0; j < from.counts.length; j++) {
    const c = from.counts[j]!;
    if (c !== 0) into.counts[clamp(from.offset + j, into.offset, hi) - into.offset]! += c;
  }
}

function* nonZero(s: Store): Generator<[number, number]> {
  for (let j = 0; j < s.counts.length; j++) {
    const c = s.counts[j]!;
    if (c !== 0) yield [s.offset + j, c];
  }
}

function storeEquals(a: Store, b: Store): boolean {
  const x = [...nonZero(a)];
  const y = [...nonZero(b)];
  return x.length === y.length && x.every(([i, c], k) => y[k]![0] === i && y[k]![1] === c);
}

// ---- binary body (parameters are written by the caller) ---------------------
//   varint zero, store pos, store neg
//   store: varint n, then n × (index, varint count); the first index is zigzag,
//   later ones varint(delta − 1) since indexes strictly increase.

export function writeSketchBody(w: ByteWriter, s: Sketch): void {
  w.varint(s.zero);
  writeStore(w, s.pos);
  writeStore(w, s.neg);
}

function writeStore(w: ByteWriter, s: Store): void {
  const buckets = [...nonZero(s)];
  w.varint(buckets.length);
  let prev = 0;
  buckets.forEach(([i, c], k) => {
    if (k === 0) w.zigzag(i);
    else w.varint(i - prev - 1);
    w.varint(c);
    prev = i;
  });
}

/** Reads a body into the empty sketch `s` (whose parameters are set). Validates everything. */
export function readSketchBody(r: ByteReader, s: Sketch): void {
  const total = (a: number, b: number): number => {
    if (a + b > Number.MAX_SAFE_INTEGER) throw malformed('count overflow');
    return a + b;
  };
  s.zero = r.varint();
  const [minIndex, maxIndex] = indexRange(s);
  let n = s.zero;
  for (const store of [s.pos, s.neg]) {
    const k = r.varint();
    if (k > s.maxBuckets || k * 2 > r.remaining) throw malformed('bucket count');
    const idx: number[] = [];
    const cnt: number[] = [];
    let index = 0;
    for (let b = 0; b < k; b++) {
      index = b === 0 ? r.zigzag() : index + r.varint() + 1;
      if (index < minIndex || index > maxIndex) throw malformed('bucket index out of range');
      const c = r.varint();
      if (c === 0) throw malformed('empty bucket');
      idx.push(index);
      cnt.push(c);
      n = total(n, c);
    }
    if (k === 0) continue;
    const lo = idx[0]!;
    const span = idx[k - 1]! - lo + 1;
    if (span > s.maxBuckets) throw malformed('bucket span exceeds maxBuckets');
    store.offset = lo;
    store.counts = new Array<number>(span).fill(0);
    idx.forEach((i, b) => (store.counts[i - lo] = cnt[b]!));
  }
  s.count = n;
}
