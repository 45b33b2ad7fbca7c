import { describe, expect, it } from 'vitest';
import { RollupError } from '../src/rollup/errors.js';
import { DEFAULT_ALPHA, type Sketch, type Store, add, cloneSketch, count, createSketch, merge, quantile, sketchEquals } from '../src/rollup/sketch.js';
import { mulberry32, normal } from '../../../test/support/seeded.mjs';


const QS = [0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.29, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1];
const SLACK = 1e-12; // float64 rounding of ln/exp

/** Exact quantile under the documented rank convention: sorted[floor(q·(n−1))]. */
const exact = (sorted: number[], q: number): number => sorted[Math.floor(q * (sorted.length - 1))]!;

function checkBound(values: number[], alpha = DEFAULT_ALPHA, qs = QS, maxBuckets?: number): void {
  const s = maxBuckets === undefined ? createSketch({ alpha }) : createSketch({ alpha, maxBuckets });
  for (const v of values) add(s, v);
  const sorted = [...values].sort((a, b) => a - b);
  for (const q of qs) {
    const x = exact(sorted, q);
    const est = quantile(s, q)!;
    if (Math.abs(x) < 1e-9) expect(est).toBe(0);
    else expect(Math.abs(est - x), `q=${q} x=${x} est=${est}`).toBeLessThanOrEqual(alpha * Math.abs(x) * (1 + SLACK));
  }
}

const datasets: Record<string, (rnd: () => number) => number> = {
  uniform: (rnd) => rnd() * 1000,
  lognormal: (rnd) => Math.exp(1 + 2 * normal(rnd)),
  'mixed signs with zeros': (rnd) => {
    const u = rnd();
    if (u < 0.15) return 0;
    if (u < 0.2) return 1e-12 * rnd(); // below the zero threshold
    const v = Math.exp(3 * normal(rnd));
    return u < 0.55 ? -v : v;
  },
  // e^±20 ≈ 2e-9 .. 5e8: 2035 buckets at alpha 0.01, just under the 2048 limit
  'wide range': (rnd) => Math.exp((rnd() - 0.5) * 40),
};

describe('sketch error bound', () => {
  for (const [name, gen] of Object.entries(datasets)) {
    it(`${name}: every quantile within alpha of the exact rank quantile`, () => {
      for (const seed of [1, 2, 3]) {
        const rnd = mulberry32(seed);
        for (const n of [1, 2, 7, 100, 10_000]) {
          const values = Array.from({ length: n }, () => gen(rnd));
          checkBound(values, DEFAULT_ALPHA, [...QS, ...Array.from({ length: 40 }, () => rnd())]);
        }
      }
    });
  }

  it('holds for other alphas', () => {
    const rnd = mulberry32(9);
    const values = Array.from({ length: 5000 }, () => Math.exp(2 * normal(rnd)) * (rnd() < 0.3 ? -1 : 1));
    for (const alpha of [0.001, 0.02, 0.05]) checkBound(values, alpha, QS, 65_536);
  });

  it('extreme magnitudes: no overflow at the top, zero threshold at the bottom', () => {
    checkBound([Number.MAX_VALUE, -Number.MAX_VALUE, 1e300, -1e307, 0, 1e305]);
    checkBound([1e-9, -1e-9, 5e-324, -5e-324, 1e-8, 0.9e-9]);
  });
});

describe('sketch merge', () => {
  it('merging random splits equals one sketch, in any order', () => {
    const rnd = mulberry32(42);
    const values = Array.from({ length: 3000 }, () => (rnd() < 0.1 ? 0 : Math.exp(2 * normal(rnd)) * (rnd() < 0.4 ? -1 : 1)));
    const whole = createSketch();
    values.forEach((v) => add(whole, v));
    for (let trial = 0; trial < 10; trial++) {
      const parts = Array.from({ length: 1 + Math.floor(rnd() * 6) }, () => createSketch());
      values.forEach((v) => add(parts[Math.floor(rnd() * parts.length)]!, v));
      // left fold, right fold, shuffled fold
      const left = parts.reduce((acc, p) => merge(acc, p), createSketch());
      const right = parts.reduceRight((acc, p) => merge(cloneSketch(p), acc), createSketch());
      const shuffled = [...parts].sort(() => rnd() - 0.5).reduce((acc, p) => merge(acc, p), createSketch());
      for (const m of [left, right, shuffled]) expect(sketchEquals(m, whole)).toBe(true);
      expect(count(left)).toBe(values.length);
    }
  });

  it('add with a count equals repeated adds; self-merge doubles', () => {
    const a = createSketch();
    const b = createSketch();
    add(a, 3.5, 5);
    for (let i = 0; i < 5; i++) add(b, 3.5);
    expect(sketchEquals(a, b)).toBe(true);
    merge(a, a);
    expect(count(a)).toBe(10);
  });

  it('empty is an identity, even for custom alpha; different alphas do not merge', () => {
    const custom = add(createSketch({ alpha: 0.02 }), 10);
    const into = merge(createSketch(), custom);
    expect(sketchEquals(into, custom)).toBe(true);
    expect(sketchEquals(merge(cloneSketch(custom), createSketch()), custom)).toBe(true);
    expect(() => merge(add(createSketch(), 1), custom)).toThrow(RollupError);
  });
});

describe('sketch collapsing', () => {
  it('keeps at most maxBuckets per store and high quantiles accurate, order-independent', () => {
    const rnd = mulberry32(7);
    // 400 buckets of magnitudes per sign; 64 buckets keep only the top factor e^1.28 of each store
    const values = Array.from({ length: 20_000 }, () => Math.exp(rnd() * 8) * (rnd() < 0.3 ? -1 : 1));
    const s = createSketch({ maxBuckets: 64 });
    values.forEach((v) => add(s, v));
    expect(s.pos.counts.length).toBeLessThanOrEqual(64);
    expect(s.neg.counts.length).toBeLessThanOrEqual(64);
    expect(count(s)).toBe(values.length);
    const sorted = [...values].sort((a, b) => a - b);
    for (const q of [0.95, 0.99, 1]) {
      const x = exact(sorted, q);
      expect(Math.abs(quantile(s, q)! - x)).toBeLessThanOrEqual(0.01 * Math.abs(x) * (1 + SLACK));
    }
    // the collapsed low end is overestimated, never underestimated
    expect(quantile(s, 0)!).toBeGreaterThan(exact(sorted, 0));
    // collapsing commutes with merging: split, merge in reverse, same buckets
    const parts = [createSketch({ maxBuckets: 64 }), createSketch({ maxBuckets: 64 }), createSketch({ maxBuckets: 64 })];
    values.forEach((v, i) => add(parts[i % 3]!, v));
    const merged = merge(merge(parts[2]!, parts[1]!), parts[0]!);
    expect(sketchEquals(merged, s)).toBe(true);
  });
});

describe('sketch input validation', () => {
  it('rejects non-finite values, bad counts, bad q; empty quantile is null', () => {
    const s = createSketch();
    expect(quantile(s, 0.5)).toBeNull();
    for (const bad of [NaN, Infinity, -Infinity]) expect(() => add(s, bad)).toThrow(RollupError);
    for (const n of [0, -1, 1.5, NaN]) expect(() => add(s, 1, n)).toThrow(RollupError);
    add(s, 1);
    for (const q of [-0.1, 1.1, NaN]) expect(() => quantile(s, q)).toThrow(RollupError);
    expect(() => createSketch({ alpha: 0 })).toThrow(RollupError);
    expect(() => createSketch({ maxBuckets: 1 })).toThrow(RollupError);
    expect(count(s)).toBe(1);
  });
});

describe('sketch stores', () => {
  /** The documented rank convention, walked over the buckets in ascending value order. */
  function reference(s: Sketch, q: number): number {
    const value = (i: number): number => Math.min(Math.exp(i * s.lnGamma + Math.log1p(-s.alpha)), Number.MAX_VALUE);
    const asc: [number, number][] = [];
    for (let i = s.neg.hi; i >= s.neg.lo; i--) asc.push([-value(i), s.neg.counts[i - s.neg.offset]!]);
    asc.push([0, s.zero]);
    for (let i = s.pos.lo; i <= s.pos.hi; i++) asc.push([value(i), s.pos.counts[i - s.pos.offset]!]);
    const rank = Math.floor(q * (s.count - 1));
    let seen = 0;
    for (const [v, c] of asc) if ((seen += c) > rank) return v;
    throw new Error('unreachable');
  }

  function checkStore(st: Store, maxBuckets: number): void {
    expect(st.counts.length).toBeLessThanOrEqual(maxBuckets);
    st.counts.forEach((c, j) => {
      const i = st.offset + j;
      if (i < st.lo || i > st.hi) expect(c).toBe(0);
    });
    if (st.lo <= st.hi) {
      expect(st.counts[st.lo - st.offset]).toBeGreaterThan(0);
      expect(st.counts[st.hi - st.offset]).toBeGreaterThan(0);
    }
  }

  it('keep their invariants under adds and merges (with slack); quantile from either end is the reference', () => {
    const rnd = mulberry32(13);
    const gen = Object.values(datasets);
    for (let trial = 0; trial < 60; trial++) {
      const maxBuckets = [16, 64, 2048][trial % 3]!;
      const parts = Array.from({ length: 4 }, () => createSketch({ maxBuckets }));
      const g = gen[trial % gen.length]!;
      const n = 1 + Math.floor(rnd() * 800);
      for (let i = 0; i < n; i++) add(parts[Math.floor(rnd() * 4)]!, g(rnd) * (trial % 2 ? 1e4 : 1));
      const s = parts.reduce((acc, p) => merge(acc, p), createSketch({ maxBuckets }));
      for (const x of [s, ...parts]) {
        checkStore(x.pos, maxBuckets);
        checkStore(x.neg, maxBuckets);
      }
      for (const q of [...QS, 0.4999, 0.5001, ...Array.from({ length: 20 }, () => rnd())]) expect(quantile(s, q)).toBe(reference(s, q));
    }
  });
});
