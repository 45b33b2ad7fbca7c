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

/**
 * Bucket counts: counts[j] is the count of bucket index offset + j. lo and hi are the lowest
 * and highest non-empty buckets (lo > hi: the store is empty); every count outside [lo, hi]
 * is zero, slack to grow into. counts.length ≤ the sketch's maxBuckets.
 */
export interface Store {
  offset: number;
  counts: number[];
  lo: number;
  hi: number;
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

const validMaxBuckets = (m: number): boolean => Number.isInteger(m) && m >= MIN_MAX_BUCKETS && m <= MAX_MAX_BUCKETS;
/** Whether createSketch accepts these parameters. */
export const validParams = (alpha: number, maxBuckets: number): boolean =>
  alpha >= MIN_ALPHA && alpha <= MAX_ALPHA && validMaxBuckets(maxBuckets);

/** ln γ for relative accuracy α. */
export const lnGammaOf = (alpha: number): number => Math.log((1 + alpha) / (1 - alpha));
export const DEFAULT_LN_GAMMA = lnGammaOf(DEFAULT_ALPHA);

const emptyStore = (): Store => ({ offset: 0, counts: [], lo: 0, hi: -1 });

export function createSketch(opts: SketchOptions = {}): Sketch {
  const alpha = opts.alpha ?? DEFAULT_ALPHA;
  const maxBuckets = opts.maxBuckets ?? DEFAULT_MAX_BUCKETS;
  if (!(alpha >= MIN_ALPHA && alpha <= MAX_ALPHA)) throw invalid(`sketch alpha must be in [${MIN_ALPHA}, ${MAX_ALPHA}]`);
  if (!validMaxBuckets(maxBuckets)) {
    throw invalid(`sketch maxBuckets must be an integer in [${MIN_MAX_BUCKETS}, ${MAX_MAX_BUCKETS}]`);
  }
  return { alpha, maxBuckets, lnGamma: lnGammaOf(alpha), count: 0, zero: 0, pos: emptyStore(), neg: emptyStore() };
}

/** A copy without the slack of `s`'s stores. */
export function cloneSketch(s: Sketch): Sketch {
  return { ...s, pos: cloneStore(s.pos), neg: cloneStore(s.neg) };
}

function cloneStore(s: Store): Store {
  if (s.lo > s.hi) return emptyStore();
  return { offset: s.lo, counts: s.counts.slice(s.lo - s.offset, s.hi - s.offset + 1), lo: s.lo, hi: s.hi };
}

export function count(s: Sketch): number {
  return s.count;
}

/** `+ 0`: magnitudes just under 1 give Math.ceil(−0.x) = −0; bucket indexes are +0 (same bytes, exact store bounds). */
const indexOf = (lnGamma: number, magnitude: number): number => Math.ceil(Math.log(magnitude) / lnGamma) + 0;
/** γ^i·(1 − α), computed in log space so the top bucket does not overflow. */
/** The value bucket `i` stands for, under `lnGamma` and `alpha`. */
const valueAt = (i: number, lnGamma: number, alpha: number): number => Math.min(Math.exp(i * lnGamma + Math.log1p(-alpha)), Number.MAX_VALUE);
const valueOf = (s: Sketch, i: number): number => valueAt(i, s.lnGamma, s.alpha);

/** Adds `n` occurrences of `value` (finite; n a positive safe integer). Mutates and returns the sketch. */
export function add(s: Sketch, value: number, n = 1): Sketch {
  if (!Number.isFinite(value)) throw invalid('sketch value must be finite');
  if (!Number.isSafeInteger(n) || n < 1) throw invalid('sketch count must be a positive integer');
  if (s.count + n > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  const m = Math.abs(value);
  if (m < MIN_INDEXABLE) s.zero += n;
  else if (value > 0) storeAdd(s.pos, true, indexOf(s.lnGamma, m), n, s.maxBuckets);
  else storeAdd(s.neg, false, indexOf(s.lnGamma, m), n, s.maxBuckets);
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
  if (into.alpha !== from.alpha) throw incompatible();
  if (into.count + from.count > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  storeMerge(into.pos, true, from.pos, into.maxBuckets);
  storeMerge(into.neg, false, from.neg, into.maxBuckets);
  into.zero += from.zero;
  into.count += from.count;
  return into;
}

export const incompatible = (): RollupError => new RollupError('incompatible_sketch', 'cannot merge sketches with different alpha');

/**
 * Empties `s` for reuse, keeping its stores' arrays (a scratch sketch merged into again and
 * again without allocating): the counts of [lo, hi] are zeroed, every other one already is.
 */
export function clearSketch(s: Sketch): void {
  clearStore(s.pos);
  clearStore(s.neg);
  s.count = 0;
  s.zero = 0;
}

/** clearSketch's work on one store (no array of both per call: finalize clears once per percentile cell). */
function clearStore(st: Store): void {
  for (let i = st.lo; i <= st.hi; i++) st.counts[i - st.offset] = 0;
  st.lo = 0;
  st.hi = -1;
}

/** The q-quantile (see the rank convention above), or null for an empty sketch. */
export function quantile(s: Sketch, q: number): number | null {
  if (!(q >= 0 && q <= 1)) throw invalid('quantile must be in [0, 1]');
  if (s.count === 0) return null;
  const rank = Math.floor(q * (s.count - 1));
  // walk from the nearer end: the same bucket either way, fewer steps for high quantiles
  return rank < s.count / 2 ? ascending(s, rank) : descending(s, s.count - 1 - rank);
}

/** The value of 0-based rank `rank` in ascending order. */
function ascending(s: Sketch, rank: number): number {
  let seen = 0;
  // most negative first (= highest |v| index of the negative store)
  const neg = s.neg;
  for (let i = neg.hi; i >= neg.lo; i--) {
    seen += neg.counts[i - neg.offset]!;
    if (seen > rank) return -valueOf(s, i);
  }
  seen += s.zero;
  if (seen > rank) return 0;
  const pos = s.pos;
  for (let i = pos.lo; i <= pos.hi; i++) {
    seen += pos.counts[i - pos.offset]!;
    if (seen > rank) return valueOf(s, i);
  }
  throw new Error('sketch counts inconsistent'); // unreachable: count is the sum of all buckets
}

/** The value of 0-based rank `rank` in descending order. */
function descending(s: Sketch, rank: number): number {
  let seen = 0;
  const pos = s.pos;
  for (let i = pos.hi; i >= pos.lo; i--) {
    seen += pos.counts[i - pos.offset]!;
    if (seen > rank) return valueOf(s, i);
  }
  seen += s.zero;
  if (seen > rank) return 0;
  const neg = s.neg;
  for (let i = neg.lo; i <= neg.hi; i++) {
    seen += neg.counts[i - neg.offset]!;
    if (seen > rank) return -valueOf(s, i);
  }
  throw new Error('sketch counts inconsistent'); // unreachable: count is the sum of all buckets
}

/** Same parameters and same non-empty buckets (ignores slack). */
export function sketchEquals(a: Sketch, b: Sketch): boolean {
  return a.alpha === b.alpha && a.count === b.count && a.zero === b.zero && storeEquals(a.pos, b.pos) && storeEquals(a.neg, b.neg);
}

// ---- stores ----------------------------------------------------------------

const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : x > hi ? hi : x);

/**
 * Grows `s` to cover indexes [lo, hi] (and its current range), keeping at most `max`
 * buckets. keepHigh: drop the lowest indexes (positive store), else the highest
 * (negative store). Dropped counts fold into the nearest kept bucket. Since the kept
 * window only moves one way, a count ends where it would with one big batch.
 * The new lo and hi are non-empty once the caller has added the counts it covered for.
 */
function cover(s: Store, keepHigh: boolean, lo: number, hi: number, max: number): void {
  const empty = s.lo > s.hi;
  if (!empty) {
    if (lo >= s.lo && hi <= s.hi) return;
    if (s.lo < lo) lo = s.lo;
    if (s.hi > hi) hi = s.hi;
  }
  if (hi - lo + 1 > max) {
    if (keepHigh) lo = hi - max + 1;
    else hi = lo + max - 1;
  }
  const c = s.counts;
  // [a, b]: old buckets inside the new range; the others fold into the kept edge
  let a = s.lo;
  let b = s.hi;
  let folded = 0;
  for (; a <= b && a < lo; a++) {
    folded += c[a - s.offset]!;
    c[a - s.offset] = 0;
  }
  for (; b >= a && b > hi; b--) {
    folded += c[b - s.offset]!;
    c[b - s.offset] = 0;
  }
  if (lo < s.offset || hi >= s.offset + c.length) {
    // reallocate with slack on both sides, so a store that keeps growing is copied O(log) times
    const span = hi - lo + 1;
    const size = Math.min(max, span + Math.max(span >> 1, 16));
    const offset = lo - ((size - span) >> 1);
    const next = new Array<number>(size).fill(0);
    for (let i = a; i <= b; i++) next[i - offset] = c[i - s.offset]!;
    s.offset = offset;
    s.counts = next;
  }
  s.lo = lo;
  s.hi = hi;
  if (folded !== 0) s.counts[(keepHigh ? lo : hi) - s.offset]! += folded;
}

function storeAdd(s: Store, keepHigh: boolean, index: number, n: number, max: number): void {
  if (index < s.lo || index > s.hi) cover(s, keepHigh, index, index, max);
  s.counts[clamp(index, s.lo, s.hi) - s.offset]! += n;
}

function storeMerge(into: Store, keepHigh: boolean, from: Store, max: number): void {
  if (from.lo > from.hi) return;
  cover(into, keepHigh, from.lo, from.hi, max);
  const ic = into.counts;
  const fc = from.counts;
  if (from.lo >= into.lo && from.hi <= into.hi) {
    const d = from.offset - into.offset;
    for (let j = from.lo - from.offset, end = from.hi - from.offset; j <= end; j++) ic[j + d]! += fc[j]!;
  } else {
    for (let i = from.lo; i <= from.hi; i++) {
      const c = fc[i - from.offset]!;
      if (c !== 0) ic[clamp(i, into.lo, into.hi) - into.offset]! += c;
    }
  }
}

function storeEquals(a: Store, b: Store): boolean {
  if (a.lo > a.hi || b.lo > b.hi) return a.lo > a.hi && b.lo > b.hi;
  if (a.lo !== b.lo || a.hi !== b.hi) return false;
  for (let i = a.lo; i <= a.hi; i++) if (a.counts[i - a.offset] !== b.counts[i - b.offset]) return false;
  return true;
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
  let n = 0;
  for (let i = s.lo; i <= s.hi; i++) if (s.counts[i - s.offset] !== 0) n++;
  w.varint(n);
  let prev = s.lo - 1;
  for (let i = s.lo; i <= s.hi; i++) {
    const c = s.counts[i - s.offset]!;
    if (c === 0) continue;
    if (prev < s.lo) w.zigzag(i);
    else w.varint(i - prev - 1);
    w.varint(c);
    prev = i;
  }
}

const LN_MIN_INDEXABLE = Math.log(MIN_INDEXABLE);
const LN_MAX_VALUE = Math.log(Number.MAX_VALUE);

/** Reads a body into the empty sketch `s` (whose parameters are set). Validates everything. */
export function readSketchBody(r: ByteReader, s: Sketch): void {
  s.zero = r.varint();
  const minIndex = Math.ceil(LN_MIN_INDEXABLE / s.lnGamma);
  const maxIndex = Math.ceil(LN_MAX_VALUE / s.lnGamma);
  let n = s.zero;
  for (let side = 0; side < 2; side++) {
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
      if (n + c > Number.MAX_SAFE_INTEGER) throw malformed('count overflow');
      n += c;
    }
    if (k === 0) continue;
    const lo = idx[0]!;
    const hi = idx[k - 1]!;
    if (hi - lo + 1 > s.maxBuckets) throw malformed('bucket span exceeds maxBuckets');
    const counts = new Array<number>(hi - lo + 1).fill(0);
    for (let b = 0; b < k; b++) counts[idx[b]! - lo] = cnt[b]!;
    const store = side === 0 ? s.pos : s.neg;
    store.offset = store.lo = lo;
    store.hi = hi;
    store.counts = counts;
  }
  s.count = n;
}

// ---- fast path: a body straight from bytes into a sketch, no sketch built per body ----

/** Buckets of one store as parsed: n × (index, count), indexes increasing. */
interface Runs {
  n: number;
  idx: number[];
  cnt: number[];
}
const newRuns = (): Runs => ({ n: 0, idx: [0], cnt: [0] });
/** The last body scanned (module scratch: one at a time, reused). */
const scanned = { zero: 0, count: 0, pos: newRuns(), neg: newRuns() };

/**
 * Parses and validates a body exactly as readSketchBody does (same checks, same errors)
 * into module scratch, for mergeScanned. Returns its total count.
 */
export function scanSketchBody(c: ByteReader, maxBuckets: number, lnGamma: number): number {
  const zero = c.varint();
  const minIndex = Math.ceil(LN_MIN_INDEXABLE / lnGamma);
  const maxIndex = Math.ceil(LN_MAX_VALUE / lnGamma);
  let n = scanRuns(c, scanned.pos, minIndex, maxIndex, maxBuckets, zero);
  n = scanRuns(c, scanned.neg, minIndex, maxIndex, maxBuckets, n);
  scanned.zero = zero;
  scanned.count = n;
  return n;
}

function scanRuns(c: ByteReader, runs: Runs, minIndex: number, maxIndex: number, maxBuckets: number, n: number): number {
  const k = c.varint();
  if (k > maxBuckets || k * 2 > c.remaining) throw malformed('bucket count');
  runs.n = 0;
  if (k === 0) return n;
  if (runs.idx.length < k) {
    const size = Math.max(k, 2 * runs.idx.length);
    runs.idx = new Array<number>(size).fill(0);
    runs.cnt = new Array<number>(size).fill(0);
  }
  const idx = runs.idx;
  const cnt = runs.cnt;
  const bytes = c.bytes;
  const len = c.end;
  let index = c.zigzag();
  let p = c.pos; // kept local in the loop; one-byte varints inline, longer ones via the cursor
  for (let b = 0; ; ) {
    if (index < minIndex || index > maxIndex) throw malformed('bucket index out of range');
    let v = p < len ? bytes[p]! : 0x80;
    if (v < 0x80) p++;
    else {
      c.pos = p;
      v = c.varint();
      p = c.pos;
    }
    if (v === 0) throw malformed('empty bucket');
    idx[b] = index;
    cnt[b] = v;
    if (n + v > Number.MAX_SAFE_INTEGER) throw malformed('count overflow');
    n += v;
    if (++b === k) break;
    let d = p < len ? bytes[p]! : 0x80;
    if (d < 0x80) p++;
    else {
      c.pos = p;
      d = c.varint();
      p = c.pos;
    }
    index += d + 1;
  }
  c.pos = p;
  if (idx[k - 1]! - idx[0]! + 1 > maxBuckets) throw malformed('bucket span exceeds maxBuckets');
  runs.n = k;
  return n;
}

/** Puts the body of add(createSketch(params), value, n) in scratch, for mergeScanned. */
export function scanSingle(value: number, n: number, lnGamma: number): void {
  scanned.zero = 0;
  scanned.count = n;
  scanned.pos.n = scanned.neg.n = 0;
  const m = Math.abs(value);
  if (m < MIN_INDEXABLE) scanned.zero = n;
  else {
    const runs = value > 0 ? scanned.pos : scanned.neg;
    runs.idx[0] = indexOf(lnGamma, m);
    runs.cnt[0] = n;
    runs.n = 1;
  }
}

// ---- a scanned body kept as numbers (a query's deferred sketches, aggregate.ts) ----
// Each non-empty bucket of a body of the default parameters as two int32s (key, count): key =
// 4 · index + side, side 0 the zero counter (index 0), 1 the positive store, 2 the negative
// one. Bodies are written one after another into shared chunks of 1 MB; a full chunk is left
// to the cells that point into it (never written again, freed with them) and a new one
// started: no array per body, no copy when a cell grows, no second parse of the bytes when it
// is finished. Tried and not kept: plain arrays as chunks (an array of 8,192 numbers costs
// ~0.2 ms to create, and they were copied by every scavenge), Float64Arrays (twice the bytes
// of external memory, which brought V8's full collections three times as often).

const KEPT_CHUNK = 262_144;
const MAX_KEPT_COUNT = 0x7fffffff;
let kept = new Int32Array(KEPT_CHUNK);
let keptAt = 0;

/**
 * scanSketchBody and keepScanned in one pass, for a body of the default parameters: parses and
 * validates it exactly as scanSketchBody does (same checks, same errors, in the same order) and
 * writes its buckets as keepScanned would, straight into the kept chunk (no scan scratch, no
 * second loop over the buckets: a 30-day hourly p95 in a zone keeps ~180,000 bodies). Nothing is
 * kept until `commitKept` (a merge that throws after the scan leaves the chunk as it was). Returns
 * the body's total count; `pendingKept.ok` is false when a count does not fit an int32 (then
 * nothing may be committed: keep the bytes instead, as keepScanned's false).
 */
export function scanKeptBody(c: ByteReader): number {
  const zero = c.varint();
  // room for the zero counter and every bucket (each takes at least 2 bytes of the body)
  if (keptAt + c.remaining + 2 > kept.length) {
    kept = new Int32Array(Math.max(KEPT_CHUNK, c.remaining + 2));
    keptAt = 0;
  }
  const k = kept;
  let o = keptAt;
  if (zero > 0) {
    k[o++] = 0;
    k[o++] = zero;
  }
  let n = zero;
  const bytes = c.bytes;
  const len = c.end;
  for (let side = 1; side <= 2; side++) {
    const count = c.varint();
    if (count > DEFAULT_MAX_BUCKETS || count * 2 > c.remaining) throw malformed('bucket count');
    if (count === 0) continue;
    let index = c.zigzag();
    const first = index;
    let p = c.pos; // as scanRuns: one-byte varints inline, longer ones via the cursor
    for (let b = 0; ; ) {
      if (index < KEPT_MIN_INDEX || index > KEPT_MAX_INDEX) throw malformed('bucket index out of range');
      let v = p < len ? bytes[p]! : 0x80;
      if (v < 0x80) p++;
      else {
        c.pos = p;
        v = c.varint();
        p = c.pos;
      }
      if (v === 0) throw malformed('empty bucket');
      k[o++] = index * 4 + side;
      k[o++] = v;
      if (n + v > Number.MAX_SAFE_INTEGER) throw malformed('count overflow');
      n += v;
      if (++b === count) break;
      let d = p < len ? bytes[p]! : 0x80;
      if (d < 0x80) p++;
      else {
        c.pos = p;
        d = c.varint();
        p = c.pos;
      }
      index += d + 1;
    }
    c.pos = p;
    if (index - first + 1 > DEFAULT_MAX_BUCKETS) throw malformed('bucket span exceeds maxBuckets');
  }
  pendingKept.ok = n <= MAX_KEPT_COUNT; // every count is at most the total
  pendingKept.chunk = k;
  pendingKept.start = keptAt;
  pendingKept.end = o;
  return n;
}
/** The last body scanKeptBody wrote (not kept yet). */
const pendingKept = { ok: false, chunk: kept, start: 0, end: 0 };
const KEPT_MIN_INDEX = Math.ceil(LN_MIN_INDEXABLE / DEFAULT_LN_GAMMA);
const KEPT_MAX_INDEX = Math.ceil(LN_MAX_VALUE / DEFAULT_LN_GAMMA);

/** Keeps the body scanKeptBody wrote last and appends where it is to `out` (chunk, start, end); false when it may not be kept (pendingKept.ok). */
export function commitKept(out: unknown[]): boolean {
  const p = pendingKept;
  if (!p.ok || p.chunk !== kept || p.start !== keptAt) return false;
  keptAt = p.end;
  p.ok = false;
  out.push(p.chunk, p.start, p.end);
  return true;
}

/**
 * Keeps the scanned body's buckets (the last scan*, of the default parameters) and appends
 * where they are to `out`: the chunk, start, end. False (nothing kept or appended) when a
 * count does not fit an int32.
 */
export function keepScanned(out: unknown[]): boolean {
  const pos = scanned.pos;
  const neg = scanned.neg;
  if (scanned.count > MAX_KEPT_COUNT) return false; // the count of each bucket is at most the total
  const n = 2 * (pos.n + neg.n + 1);
  if (keptAt + n > kept.length) {
    kept = new Int32Array(Math.max(KEPT_CHUNK, n));
    keptAt = 0;
  }
  const k = kept;
  const start = keptAt;
  let o = start;
  if (scanned.zero > 0) {
    k[o++] = 0;
    k[o++] = scanned.zero;
  }
  for (let b = 0; b < pos.n; b++) {
    k[o++] = pos.idx[b]! * 4 + 1;
    k[o++] = pos.cnt[b]!;
  }
  for (let b = 0; b < neg.n; b++) {
    k[o++] = neg.idx[b]! * 4 + 2;
    k[o++] = neg.cnt[b]!;
  }
  keptAt = o;
  out.push(k, start, o);
  return true;
}

/**
 * Merges the buckets keepScanned kept at `chunk[start, end)` into `s`: what mergeScanned does
 * with that body of the default parameters (an empty `s` adopts them) — each store covered once
 * for the body's lowest and highest index, then its counts added (the same buckets: stores
 * collapse by the kept window only, never by order). Checked when kept: nothing throws here.
 * The body's layout (keepScanned): the zero counter first when there is one, then the positive
 * store's buckets, then the negative one's, each by increasing index.
 */
export function mergeKept(s: Sketch, chunk: Int32Array, start: number, end: number): void {
  if (start === end) return;
  if (s.count === 0) {
    s.alpha = DEFAULT_ALPHA;
    s.maxBuckets = DEFAULT_MAX_BUCKETS;
    s.lnGamma = DEFAULT_LN_GAMMA;
  }
  let i = start;
  let n = 0;
  if (chunk[i] === 0) {
    s.zero += chunk[i + 1]!;
    n += chunk[i + 1]!;
    i += 2;
  }
  let j = i;
  while (j < end && (chunk[j]! & 3) === 1) j += 2;
  if (j > i) n += keptMerge(s.pos, true, chunk, i, j, 1, s.maxBuckets);
  if (end > j) n += keptMerge(s.neg, false, chunk, j, end, 2, s.maxBuckets);
  s.count += n;
}

/** One store's kept buckets `chunk[from, to)` (keys of `side`, increasing) into `st`, as runsMerge does; returns their count. */
function keptMerge(st: Store, keepHigh: boolean, chunk: Int32Array, from: number, to: number, side: number, max: number): number {
  const first = (chunk[from]! - side) >> 2;
  const last = (chunk[to - 2]! - side) >> 2;
  cover(st, keepHigh, first, last, max);
  const c = st.counts;
  const off = st.offset;
  let n = 0;
  if (first >= st.lo && last <= st.hi) {
    for (let i = from; i < to; i += 2) {
      const k = chunk[i + 1]!;
      c[((chunk[i]! - side) >> 2) - off]! += k;
      n += k;
    }
  } else {
    for (let i = from; i < to; i += 2) {
      const k = chunk[i + 1]!;
      c[clamp((chunk[i]! - side) >> 2, st.lo, st.hi) - off]! += k;
      n += k;
    }
  }
  return n;
}

/** Most heads a keptQuantile walk visits before it leaves the cell to the store (a long walk is cheaper there). */
const KEPT_WALK_BUDGET = 1024;
/** keptQuantile's cursors, one per kept body: where it is, where it ends, the bucket index there (module scratch, grown as needed). */
let walkAt = new Int32Array(64);
let walkEnd = new Int32Array(64);
let walkIndex = new Float64Array(64);

/**
 * quantile(s, q) of the sketch the kept bodies listed in `list` (from index `from`, triples
 * `chunk, start, end` as aggregate.ts defers them; `count` their total) would merge into, read
 * from the bodies themselves without merging them into a store: a query's percentile cell
 * (a 30-day hourly p95 in Asia/Kolkata: ~10 bodies of ~6 buckets each) walks from the nearer end
 * through the highest (or lowest) buckets of all its bodies at once, as the store's walk would,
 * and stops there — a p95 touches a few buckets instead of adding all ~65 into a scratch store.
 * The same value as the store's walk: equal indexes of several bodies are one bucket, and
 * returning inside a bucket returns its value. Undefined (the caller merges the store instead)
 * when an entry is not kept buckets (other parameters, a count beyond an int32), a body has
 * negative buckets, the union spans more than the default maxBuckets (the store would collapse
 * it), or the walk would visit more than KEPT_WALK_BUDGET heads.
 */
export function keptQuantile(list: readonly unknown[], from: number, count: number, q: number): number | undefined {
  const n = (list.length - from) / 3;
  if (!(n >= 1) || count < 1) return undefined;
  if (walkAt.length < n) {
    walkAt = new Int32Array(2 * n);
    walkEnd = new Int32Array(2 * n);
    walkIndex = new Float64Array(2 * n);
  }
  const rank = Math.floor(q * (count - 1));
  const up = rank < count / 2; // walk from the lowest bucket (else from the highest)
  let zero = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let k = 0, i = from; k < n; k++, i += 3) {
    const chunk = list[i];
    if (!(chunk instanceof Int32Array)) return undefined;
    let a = list[i + 1] as number;
    const b = list[i + 2] as number;
    if (a < b && chunk[a] === 0) {
      zero += chunk[a + 1]!;
      a += 2;
    }
    let head = up ? Infinity : -Infinity; // none left
    if (a < b) {
      if ((chunk[b - 2]! & 3) !== 1) return undefined; // negative buckets (they come last)
      const first = (chunk[a]! - 1) >> 2;
      const last = (chunk[b - 2]! - 1) >> 2;
      if (first < lo) lo = first;
      if (last > hi) hi = last;
      head = up ? first : last;
    }
    // ascending: from the first positive bucket up to b; descending: from the last down to a
    walkAt[k] = up ? a : b - 2;
    walkEnd[k] = up ? b : a;
    walkIndex[k] = head;
  }
  if (hi - lo + 1 > DEFAULT_MAX_BUCKETS) return undefined;
  let seen = 0;
  let budget = KEPT_WALK_BUDGET;
  const r = up ? rank : count - 1 - rank;
  if (up) {
    seen += zero; // the zero counter comes before the positive buckets
    if (seen > r) return 0;
  }
  for (;;) {
    let best = -1;
    let index = up ? Infinity : -Infinity;
    for (let k = 0; k < n; k++) {
      const x = walkIndex[k]!;
      if (up ? x < index : x > index) {
        index = x;
        best = k;
      }
    }
    if (best < 0) return !up && seen + zero > r ? 0 : undefined; // descending: the zero counter comes last
    budget -= n;
    if (budget < 0) return undefined;
    const chunk = list[from + 3 * best] as Int32Array;
    const at = walkAt[best]!;
    seen += chunk[at + 1]!;
    if (seen > r) return valueAt(index, DEFAULT_LN_GAMMA, DEFAULT_ALPHA);
    const next = up ? at + 2 : at - 2;
    walkAt[best] = next;
    walkIndex[best] = up ? (next < walkEnd[best]! ? (chunk[next]! - 1) >> 2 : Infinity) : next >= walkEnd[best]! ? (chunk[next]! - 1) >> 2 : -Infinity;
  }
}


/**
 * Puts the body of a sketch of `n` (2 or 3) values — createSketch(params), then add(a), add(b)
 * (and add(c)) — in scratch, for mergeScanned: the compact aggregate's implied sketch, without
 * building one. Buckets spanning more than `maxBuckets` (the encoded sketch's) are collapsed here
 * as the adds would have collapsed them: the merge collapses only by the accumulator's own
 * maxBuckets, which may be larger.
 */
export function scanValues(a: number, b: number, c: number, n: number, lnGamma: number, maxBuckets: number): void {
  scanned.zero = 0;
  scanned.count = n;
  scanned.pos.n = scanned.neg.n = 0;
  for (let i = 0; i < n; i++) {
    const v = i === 0 ? a : i === 1 ? b : c;
    const m = Math.abs(v);
    if (m < MIN_INDEXABLE) scanned.zero++;
    else insertRun(v > 0 ? scanned.pos : scanned.neg, indexOf(lnGamma, m));
  }
  collapseRuns(scanned.pos, true, maxBuckets);
  collapseRuns(scanned.neg, false, maxBuckets);
}

/** Folds sorted runs into `max` consecutive buckets as a store does (keepHigh: the lowest fold into the lowest kept one). */
function collapseRuns(r: Runs, keepHigh: boolean, max: number): void {
  if (r.n < 2 || r.idx[r.n - 1]! - r.idx[0]! + 1 <= max) return;
  const lo = keepHigh ? r.idx[r.n - 1]! - max + 1 : r.idx[0]!;
  const hi = lo + max - 1;
  let k = 0;
  for (let j = 0; j < r.n; j++) {
    const index = Math.min(Math.max(r.idx[j]!, lo), hi);
    if (k > 0 && r.idx[k - 1] === index) r.cnt[k - 1]! += r.cnt[j]!;
    else {
      r.idx[k] = index;
      r.cnt[k++] = r.cnt[j]!;
    }
  }
  r.n = k;
}

/** One value into sorted runs (equal indexes counted together). */
function insertRun(r: Runs, index: number): void {
  let j = 0;
  while (j < r.n && r.idx[j]! < index) j++;
  if (j < r.n && r.idx[j] === index) {
    r.cnt[j]!++;
    return;
  }
  for (let k = r.n; k > j; k--) {
    r.idx[k] = r.idx[k - 1]!;
    r.cnt[k] = r.cnt[k - 1]!;
  }
  r.idx[j] = index;
  r.cnt[j] = 1;
  r.n++;
}

/**
 * merge(into, the scanned body as a sketch with these parameters): the same result and
 * errors, thrown before anything changes.
 */
export function mergeScanned(into: Sketch, alpha: number, maxBuckets: number, lnGamma: number): void {
  if (scanned.count === 0) return;
  if (into.count === 0) {
    // adopt the parameters, like merge (the stores of an empty sketch are empty)
    into.alpha = alpha;
    into.maxBuckets = maxBuckets;
    into.lnGamma = lnGamma;
  } else {
    if (into.alpha !== alpha) throw incompatible();
    if (into.count + scanned.count > Number.MAX_SAFE_INTEGER) throw invalid('sketch count overflow');
  }
  runsMerge(into.pos, true, scanned.pos, into.maxBuckets);
  runsMerge(into.neg, false, scanned.neg, into.maxBuckets);
  into.zero += scanned.zero;
  into.count += scanned.count;
}

function runsMerge(s: Store, keepHigh: boolean, runs: Runs, max: number): void {
  const k = runs.n;
  if (k === 0) return;
  const idx = runs.idx;
  const cnt = runs.cnt;
  const first = idx[0]!;
  const last = idx[k - 1]!;
  cover(s, keepHigh, first, last, max);
  const c = s.counts;
  const off = s.offset;
  if (first >= s.lo && last <= s.hi) {
    for (let b = 0; b < k; b++) c[idx[b]! - off]! += cnt[b]!;
  } else {
    for (let b = 0; b < k; b++) c[clamp(idx[b]!, s.lo, s.hi) - off]! += cnt[b]!;
  }
}
