/**
 * OTel histograms → individual observations for the Library's `observe` (the collector adds
 * each to its DDSketch, relative accuracy α = 0.01).
 *
 * A histogram data point only keeps bucket counts, so every observation of a bucket is sent
 * as one value inside that bucket (clamped to the point's min and max):
 *
 * - the smallest and the largest observation are sent as the recorded `min` and `max`;
 * - the others start at their bucket's centre — the harmonic mean 2·lo·hi/(lo + hi) for
 *   exponential buckets (equal relative distance to both ends), the midpoint for explicit
 *   buckets — and are then all moved by the same fraction of the way towards their bucket's
 *   upper (or lower) end so that the values sent add up to the recorded `sum` exactly.
 *
 * So count, sum, avg, min and max come back exact (float64 rounding aside), and every value
 * stays in its own bucket, which keeps the order between buckets: the k-th smallest value
 * sent lies in the same bucket as the k-th smallest value recorded. A percentile is then off
 * by at most that bucket's width plus the sketch's α:
 *
 * - exponential buckets (lo, lo·b] with b = 2^(2^−scale): relative error ≤ (1 + α)·b − 1
 *   (scale 3: 10.1 %, scale 4: 5.5 %, scale 5: 3.2 %, scale 6: 2.1 %; the SDK picks the
 *   largest scale ≤ 20 whose 160 buckets span the recorded range: values over 4 orders of
 *   magnitude (13.3 doublings) get scale 3, over 2 orders scale 4);
 * - explicit buckets: the percentile lies in [lo·(1 − α), hi·(1 + α)] of the bucket that holds
 *   the true percentile (clamped to min/max): an absolute error up to that bucket's width.
 *
 * Cumulative points are turned into deltas first (diff), then converted the same way; their
 * min/max are the whole stream's, which still bound every value, so they only clamp.
 */
import type { ExponentialHistogram, Histogram } from '@opentelemetry/sdk-metrics';

/** `count` observations, each in [lo, hi]. */
export interface Range {
  lo: number;
  hi: number;
  count: number;
}

export interface Buckets {
  /** Ascending, non-overlapping, counts > 0. */
  ranges: Range[];
  exp: boolean;
  sum?: number;
  /** Exact min/max of these observations (delta points only). */
  min?: number;
  max?: number;
}

/** An explicit-bucket histogram point (minus `prev`, the previous cumulative point of the same stream). */
const finite = (v: number | undefined) => (v !== undefined && Number.isFinite(v) ? v : undefined);

export function explicitBuckets(h: Histogram, prev?: Histogram): Buckets {
  const { boundaries } = h.buckets;
  const counts = h.buckets.counts.map((c, i) => c - (prev?.buckets.counts[i] ?? 0));
  // An infinite min or max (the SDK's explicit histogram records ±Infinity) bounds no bucket: the
  // infinite observation itself is sent as it is (and refused by the Library, reported
  // invalid_value), the others stay in their buckets.
  const lowest = finite(h.min) ?? boundaries[0] ?? 0;
  const highest = finite(h.max) ?? boundaries[boundaries.length - 1] ?? 0;
  const ranges: Range[] = [];
  counts.forEach((count, i) => {
    if (count <= 0) return;
    const lo = Math.max(i == 0 ? lowest : boundaries[i - 1]!, lowest);
    const hi = Math.min(i == boundaries.length ? highest : boundaries[i]!, highest);
    ranges.push({ lo: Math.min(lo, hi), hi, count });
  });
  const sum = h.sum === undefined ? undefined : h.sum - (prev?.sum ?? 0);
  return { ranges, exp: false, sum, ...(prev ? {} : { min: h.min, max: h.max }) };
}

type ExpCounts = Map<number, number>;

/** index → count at `scale`, for one side of an exponential histogram, lowered to `to`. */
function expCounts(side: { offset: number; bucketCounts: number[] }, scale: number, to: number): ExpCounts {
  const m: ExpCounts = new Map();
  side.bucketCounts.forEach((c, i) => {
    if (c) {
      const idx = (side.offset + i) >> (scale - to); // downscaling merges 2^(scale−to) buckets into one
      m.set(idx, (m.get(idx) ?? 0) + c);
    }
  });
  return m;
}

/** An exponential histogram point (minus `prev`, the previous cumulative point of the same stream). */
export function exponentialBuckets(h: ExponentialHistogram, prev?: ExponentialHistogram): Buckets {
  const scale = prev ? Math.min(h.scale, prev.scale) : h.scale;
  const base = Math.pow(2, Math.pow(2, -scale));
  const side = (s: 'positive' | 'negative') => {
    const cur = expCounts(h[s], h.scale, scale);
    if (prev) for (const [i, c] of expCounts(prev[s], prev.scale, scale)) cur.set(i, (cur.get(i) ?? 0) - c);
    return cur;
  };
  const ranges: Range[] = [];
  // bucket i covers (base^i, base^(i+1)]; negatives mirror it
  const neg = [...side('negative')].sort((a, b) => b[0] - a[0]);
  for (const [i, count] of neg) if (count > 0) ranges.push({ lo: -Math.pow(base, i + 1), hi: -Math.pow(base, i), count });
  const zero = h.zeroCount - (prev?.zeroCount ?? 0);
  if (zero > 0) ranges.push({ lo: 0, hi: 0, count: zero });
  const pos = [...side('positive')].sort((a, b) => a[0] - b[0]);
  for (const [i, count] of pos) if (count > 0) ranges.push({ lo: Math.pow(base, i), hi: Math.pow(base, i + 1), count });
  const sum = h.sum === undefined ? undefined : h.sum - (prev?.sum ?? 0);
  return { ranges: clamp(ranges, h.min, h.max), exp: true, sum, ...(prev ? {} : { min: h.min, max: h.max }) };
}

function clamp(ranges: Range[], min: number | undefined, max: number | undefined): Range[] {
  for (const r of ranges) {
    if (min !== undefined) (r.lo = Math.max(r.lo, min)), (r.hi = Math.max(r.hi, min));
    if (max !== undefined) (r.lo = Math.min(r.lo, max)), (r.hi = Math.min(r.hi, max));
  }
  return ranges;
}

const centre = (r: Range, exp: boolean) =>
  exp && r.lo * r.hi > 0 ? (2 * r.lo * r.hi) / (r.lo + r.hi) : r.lo + (r.hi - r.lo) / 2;

/**
 * The values to send, as [value, how many times] pairs: count and (when the point has them)
 * sum, min and max equal the histogram's.
 */
export function observations(b: Buckets): [value: number, times: number][] {
  const ranges = b.ranges.map((r) => ({ ...r }));
  const total = ranges.reduce((n, r) => n + r.count, 0);
  if (total == 0) return [];
  const exact: [number, number][] = [];
  // the recorded min and max are observations: send them as they are
  if (b.min !== undefined && b.max !== undefined) {
    exact.push([b.min, 1]);
    ranges[0]!.count--;
    if (total > 1) {
      exact.push([b.max, 1]);
      ranges[ranges.length - 1]!.count--;
    }
  }
  const live = ranges.filter((r) => r.count > 0);
  const values = live.map((r) => centre(r, b.exp));
  if (b.sum !== undefined && Number.isFinite(b.sum)) {
    // (an infinite sum — an infinite observation, now or earlier in a cumulative stream — fits nothing)
    // one fraction f of the way to each bucket's end, the same for all, makes the sum exact
    let d = b.sum - exact.reduce((s, [v]) => s + v, 0) - live.reduce((s, r, i) => s + r.count * values[i]!, 0);
    const up = d > 0;
    const slack = live.reduce((s, r, i) => s + r.count * (up ? r.hi - values[i]! : values[i]! - r.lo), 0);
    const f = slack > 0 ? Math.min(1, Math.abs(d) / slack) : 0;
    live.forEach((r, i) => (values[i] = up ? values[i]! + f * (r.hi - values[i]!) : values[i]! - f * (values[i]! - r.lo)));
  }
  return [...exact, ...live.map((r, i): [number, number] => [values[i]!, r.count])];
}
