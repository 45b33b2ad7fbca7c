import { describe, expect, it } from 'vitest';
import {
  AGGREGATIONS,
  type Aggregate,
  addPoint,
  cloneAggregate,
  decodeAggregate,
  emptyAggregate,
  encodeAggregate,
  finalize,
  mergeAggregates,
  mergeInto,
} from '../src/rollup/aggregate.js';
import { RollupError } from '../src/rollup/errors.js';
import { sketchEquals } from '../src/rollup/sketch.js';
import { mulberry32, normal } from '../../../test/support/seeded.mjs';

const T0 = Date.UTC(2026, 5, 1);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const build = (points: [number, number][], agg = emptyAggregate()): Aggregate => {
  for (const [v, t] of points) addPoint(agg, v, t);
  return agg;
};

/** Integers keep sums exact, so merged results must be byte-identical. Times collide on purpose. */
function randomPoints(rnd: () => number, n: number): [number, number][] {
  return Array.from({ length: n }, () => [Math.round((rnd() - 0.3) * 1000), T0 + Math.floor(rnd() * 50)]);
}

describe('aggregate basics', () => {
  it('addPoint and finalize', () => {
    const agg = build([
      [5, T0 + 2],
      [-1, T0 + 9],
      [10, T0 + 1],
      [3, T0 + 9], // same time as -1: the greater value wins, in any order
    ]);
    expect(agg).toMatchObject({ count: 4, sum: 17, min: -1, max: 10, last: 3, lastAt: T0 + 9 });
    expect(finalize(agg, 'count')).toBe(4);
    expect(finalize(agg, 'sum')).toBe(17);
    expect(finalize(agg, 'avg')).toBe(4.25);
    expect(finalize(agg, 'min')).toBe(-1);
    expect(finalize(agg, 'max')).toBe(10);
    expect(finalize(agg, 'last')).toBe(3);
    expect(finalize(agg, 'p50')).toBeCloseTo(3, 1); // rank ⌊0.5·3⌋ = 1 → 3
    expect(finalize(agg, 'p99')).toBeCloseTo(5, 1); // rank ⌊0.99·3⌋ = 2 → 5
  });

  it('single values are exact (percentiles clamped to [min, max])', () => {
    const agg = build([[123.456, T0]]);
    for (const a of ['p50', 'p90', 'p95', 'p99'] as const) expect(finalize(agg, a)).toBe(123.456);
  });

  it('empty: count/sum 0, everything else null; unknown aggregation throws', () => {
    const e = emptyAggregate();
    expect(finalize(e, 'count')).toBe(0);
    expect(finalize(e, 'sum')).toBe(0);
    for (const a of ['avg', 'min', 'max', 'last', 'p50', 'p90', 'p95', 'p99'] as const) expect(finalize(e, a)).toBeNull();
    expect(() => finalize(e, 'median' as never)).toThrow(RollupError);
  });

  it('rejects bad points without changing the aggregate', () => {
    const agg = build([[1, T0]]);
    const before = hex(encodeAggregate(agg));
    for (const [v, t] of [
      [NaN, T0],
      [Infinity, T0],
      [1, 1.5],
      [1, NaN],
      [1, 2 ** 60],
    ] as const) {
      expect(() => addPoint(agg, v, t)).toThrow(RollupError);
    }
    expect(hex(encodeAggregate(agg))).toBe(before);
  });
});

describe('aggregate merge', () => {
  it('is associative and commutative on random splits', () => {
    const rnd = mulberry32(1234);
    for (let trial = 0; trial < 50; trial++) {
      const points = randomPoints(rnd, 1 + Math.floor(rnd() * 300));
      const whole = hex(encodeAggregate(build(points)));
      const parts = Array.from({ length: 1 + Math.floor(rnd() * 8) }, () => emptyAggregate());
      for (const p of points) build([p], parts[Math.floor(rnd() * parts.length)]!);
      const snapshot = parts.map((p) => hex(encodeAggregate(p)));

      const left = parts.reduce((acc, p) => mergeAggregates(acc, p), emptyAggregate());
      const right = parts.reduceRight((acc, p) => mergeAggregates(p, acc), emptyAggregate());
      const shuffled = [...parts].sort(() => rnd() - 0.5).reduce((acc, p) => mergeAggregates(acc, p), emptyAggregate());
      // random binary tree
      let pool = parts.map(cloneAggregate);
      while (pool.length > 1) {
        const i = Math.floor(rnd() * pool.length);
        const a = pool.splice(i, 1)[0]!;
        const j = Math.floor(rnd() * pool.length);
        pool[j] = rnd() < 0.5 ? mergeInto(a, pool[j]!) : mergeInto(pool[j]!, a);
      }
      for (const m of [left, right, shuffled, pool[0]!]) expect(hex(encodeAggregate(m))).toBe(whole);
      expect(parts.map((p) => hex(encodeAggregate(p)))).toEqual(snapshot); // mergeAggregates is pure
    }
  });

  it('float sums are commutative and associative up to rounding', () => {
    const rnd = mulberry32(99);
    const points: [number, number][] = Array.from({ length: 1000 }, (_, i) => [Math.exp(normal(rnd)), T0 + i]);
    const whole = build(points);
    const a = build(points.slice(0, 300));
    const b = build(points.slice(300, 700));
    const c = build(points.slice(700));
    const x = mergeAggregates(mergeAggregates(a, b), c);
    const y = mergeAggregates(c, mergeAggregates(b, a));
    for (const m of [x, y]) {
      expect(m.sum).toBeCloseTo(whole.sum, 9);
      expect({ ...m, sum: 0, sketch: null }).toEqual({ ...whole, sum: 0, sketch: null });
      expect(sketchEquals(m.sketch, whole.sketch)).toBe(true);
    }
  });

  it('empty is an identity', () => {
    const agg = build([[2, T0]]);
    const h = hex(encodeAggregate(agg));
    expect(hex(encodeAggregate(mergeAggregates(emptyAggregate(), agg)))).toBe(h);
    expect(hex(encodeAggregate(mergeAggregates(agg, emptyAggregate())))).toBe(h);
    expect(mergeAggregates(emptyAggregate(), emptyAggregate())).toEqual(emptyAggregate());
  });
});

function roundTrip(agg: Aggregate): Aggregate {
  const bytes = encodeAggregate(agg);
  const back = decodeAggregate(bytes);
  expect(hex(encodeAggregate(back))).toBe(hex(bytes));
  expect({ ...back, sketch: null }).toEqual({ ...agg, sketch: null });
  expect(sketchEquals(back.sketch, agg.sketch)).toBe(true);
  for (const a of AGGREGATIONS) expect(finalize(back, a)).toBe(finalize(agg, a));
  return back;
}

describe('encode / decode', () => {
  it('round-trips typical and edge cases', () => {
    const rnd = mulberry32(5);
    roundTrip(emptyAggregate());
    roundTrip(build([[1, T0]]));
    roundTrip(build([[0, T0]]));
    roundTrip(build([[-2.5, -5]])); // negative time
    roundTrip(build(Array.from({ length: 1000 }, (_, i) => [1, T0 + i]))); // counter: everything implied
    roundTrip(build(Array.from({ length: 10 }, (_, i) => [0.1, T0 + i]))); // constant, float sum not implied
    roundTrip(build([[1, T0], [2, T0 + 1], [1, T0 + 2]])); // last between min and max
    roundTrip(build(Array.from({ length: 500 }, (_, i) => [(rnd() - 0.5) * 1e6, T0 + i])));
    roundTrip(build([[Number.MAX_VALUE, T0], [-Number.MAX_VALUE, T0 + 1], [1e-300, T0 + 2]]));
    roundTrip(build([[3, T0], [4, T0]], emptyAggregate({ alpha: 0.02, maxBuckets: 100 }))); // custom params
    roundTrip(build([[3, T0]], emptyAggregate({ alpha: 0.05 })));
  });

  it('reports encoded sizes', () => {
    const rnd = mulberry32(11);
    const one = encodeAggregate(build([[42.5, Date.now()]]));
    const counter = encodeAggregate(build(Array.from({ length: 100 }, (_, i) => [1, T0 + i])));
    const ln100 = encodeAggregate(build(Array.from({ length: 100 }, (_, i) => [Math.exp(3 + normal(rnd)), T0 + i])));
    const ln10k = encodeAggregate(build(Array.from({ length: 10_000 }, (_, i) => [Math.exp(3 + normal(rnd)), T0 + i])));
    const u10k = encodeAggregate(build(Array.from({ length: 10_000 }, (_, i) => [rnd() * 1000, T0 + i])));
    console.log(
      `encoded sizes: empty ${encodeAggregate(emptyAggregate()).length} B, 1 point ${one.length} B, ` +
        `100-point counter ${counter.length} B, 100 lognormal ${ln100.length} B, ` +
        `10k lognormal ${ln10k.length} B, 10k uniform[0,1000) ${u10k.length} B`,
    );
    expect(one.length).toBeLessThanOrEqual(20);
    expect(counter.length).toBeLessThanOrEqual(20);
    expect(ln100.length).toBeLessThan(400);
    expect(ln10k.length).toBeLessThan(2000);
  });
});

describe('decode rejects malformed input', () => {
  const rnd = mulberry32(77);
  const samples = [
    build([[1, T0]]),
    build(Array.from({ length: 50 }, (_, i) => [1, T0 + i])),
    build(Array.from({ length: 200 }, (_, i) => [(rnd() - 0.4) * 100, T0 + i])),
    build([[3, T0], [0, T0 + 1]], emptyAggregate({ alpha: 0.02 })),
  ].map(encodeAggregate);

  /** Either a valid aggregate (which then re-encodes stably) or a RollupError — nothing else. */
  function decodeOrReject(bytes: Uint8Array): 'ok' | 'rejected' {
    let agg: Aggregate;
    try {
      agg = decodeAggregate(bytes);
    } catch (e) {
      expect(e).toBeInstanceOf(RollupError);
      expect((e as RollupError).code).toBe('malformed_aggregate');
      return 'rejected';
    }
    const again = encodeAggregate(agg);
    expect(hex(encodeAggregate(decodeAggregate(again)))).toBe(hex(again));
    return 'ok';
  }

  it('every truncation is rejected, and so is a trailing byte', () => {
    for (const s of samples) {
      for (let n = 0; n < s.length; n++) expect(decodeOrReject(s.subarray(0, n))).toBe('rejected');
      expect(decodeOrReject(new Uint8Array([...s, 0]))).toBe('rejected');
    }
  });

  it('hand-made bad inputs', () => {
    const bad = [
      [],
      [2, 0], // unknown version
      [1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], // varint too long
      [1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], // varint beyond 2^53
      [1, 1, 0x40], // unknown flag
      [1, 1, 2], // SUM_IMPLIED without SINGLE
      [1, 1, 1, ...new Uint8Array(new Float64Array([NaN]).buffer), 0, 0, 0, 0], // NaN
      [1, 2, 1 | 2, ...new Uint8Array(new Float64Array([1]).buffer), 0, 0, 1, 10, 1, 0], // sketch total 1 ≠ count 2
      [1, 1, 1 | 2, ...new Uint8Array(new Float64Array([1]).buffer), 0, 0, 1, 0xfe, 0xff, 0x7f, 1, 0], // index out of range
    ];
    for (const b of bad) expect(decodeOrReject(new Uint8Array(b))).toBe('rejected');
    expect(() => decodeAggregate('nope' as never)).toThrow(RollupError);
  });

  it('random bytes and random mutations never crash or hang', () => {
    const r = mulberry32(2024);
    const outcomes = { ok: 0, rejected: 0 };
    for (let i = 0; i < 20_000; i++) {
      let bytes: Uint8Array;
      if (i % 2 === 0) {
        bytes = new Uint8Array(Math.floor(r() * 64));
        for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(r() * 256);
        if (r() < 0.5 && bytes.length > 0) bytes[0] = r() < 0.5 ? 1 : 3; // get past the version byte (version 1 or compact)
      } else {
        bytes = samples[i % samples.length]!.slice();
        for (let k = 1 + Math.floor(r() * 3); k > 0; k--) bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
      }
      outcomes[decodeOrReject(bytes)]++;
    }
    expect(outcomes.rejected).toBeGreaterThan(0);
  });
});

describe('many partials', () => {
  it('decodes and merges 20k partials into the right totals (speed: npm run bench query)', () => {
    const rnd = mulberry32(21);
    const partials = Array.from({ length: 200 }, (_, k) =>
      encodeAggregate(build(Array.from({ length: 100 }, (_, i) => [Math.exp(3 + normal(rnd)), T0 + k * 100 + i]))),
    );
    const n = 20_000;
    const total = emptyAggregate();
    for (let i = 0; i < n; i++) mergeInto(total, decodeAggregate(partials[i % partials.length]!));
    const p95 = finalize(total, 'p95');
    expect(total.count).toBe(n * 100);
    expect(p95).toBeGreaterThan(0);
  });
});
