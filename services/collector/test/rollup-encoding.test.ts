/**
 * The compact aggregate encoding (versions 3 and 4, rollup/aggregate.ts): it decodes to exactly
 * the aggregate of the plaintext points (every field, every sketch bucket), through
 * decodeAggregate and mergeEncoded alike; rows written in versions 1 and 2 (fixed vectors,
 * produced by the encoder before this one) still open to the same aggregates; hostile bytes are
 * refused as malformed.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type Aggregate, addPoint, decodeAggregate, emptyAggregate, encodeAggregate, mergeEncoded, mergeInto } from '../src/rollup/aggregate.js';
import { ByteWriter } from '../src/rollup/bytes.js';
import { type Distinct, writeDistinct } from '../src/rollup/distinct.js';
import { RollupError } from '../src/rollup/errors.js';
import { type Store } from '../src/rollup/sketch.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';

const T0 = Date.UTC(2026, 5, 1);
const hashOf = (s: string): Uint8Array => new Uint8Array(createHash('sha256').update(s).digest().subarray(0, 8));

/** The plaintext reference: the points added one by one. */
function build(points: readonly (readonly [number, number])[], opts?: { alpha: number; maxBuckets: number }, visitors?: readonly string[]): Aggregate {
  const agg = emptyAggregate(opts);
  points.forEach(([v, t], i) => addPoint(agg, v, t, visitors ? hashOf(visitors[i]!) : undefined));
  return agg;
}

const buckets = (s: Store): [number, number][] => {
  const out: [number, number][] = [];
  s.counts.forEach((c, j) => c !== 0 && out.push([s.offset + j, c]));
  return out;
};
const distinctBytes = (d: Distinct): string => {
  const w = new ByteWriter();
  writeDistinct(w, d);
  return Buffer.from(w.finish()).toString('hex');
};
/** Every field and the sketch's parameters and buckets (not its slack); -0 and 0 told apart. */
function view(a: Aggregate): unknown {
  const s = a.sketch;
  const sign = (v: number) => (Object.is(v, -0) ? '-0' : v);
  return {
    count: a.count, sum: sign(a.sum), min: sign(a.min), max: sign(a.max), last: sign(a.last), lastAt: a.lastAt,
    sketch: { alpha: s.alpha, maxBuckets: s.maxBuckets, count: s.count, zero: s.zero, pos: buckets(s.pos), neg: buckets(s.neg) },
    visitors: a.visitors ? distinctBytes(a.visitors) : undefined,
  };
}

/** decodeAggregate and mergeEncoded (into an empty aggregate) both give back exactly `ref`. */
function expectOpensTo(bytes: Uint8Array, ref: Aggregate): void {
  expect(view(decodeAggregate(bytes))).toEqual(view(ref));
  const merged = emptyAggregate();
  mergeEncoded(merged, bytes, true);
  expect(view(merged)).toEqual(view(mergeInto(emptyAggregate(), ref)));
  const noSketch = decodeAggregate(bytes, false);
  expect([noSketch.count, noSketch.sum, noSketch.min, noSketch.max, noSketch.last, noSketch.lastAt]).toEqual([ref.count, ref.sum, ref.min, ref.max, ref.last, ref.lastAt]);
}

/** What each path makes of `bytes`: [decodeAggregate, decodeAggregate without sketch, mergeEncoded, mergeEncoded without sketch]. */
function outcomes(bytes: Uint8Array | number[]): string[] {
  const b = bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes);
  return [() => decodeAggregate(b), () => decodeAggregate(b, false), () => mergeEncoded(emptyAggregate(), b, true), () => mergeEncoded(emptyAggregate(), b, false)].map((f) => {
    try {
      f();
      return 'ok';
    } catch (e) {
      if (!(e instanceof RollupError)) throw e;
      return e.code;
    }
  });
}
const M = 'malformed_aggregate';
/** Refused on every path (the scalars are read by all of them). */
const EVERYWHERE = [M, M, M, M];
/** Refused where the sketch is read; the paths without a sketch skip its body and what follows (as for version 1). */
const WITH_SKETCH = [M, 'ok', M, 'ok'];

// Written by the encoder before the compact one (git show 5862245:services/collector/src/rollup/aggregate.ts).
const OLD_VECTORS: { name: string; points: [number, number][]; alpha?: number; maxBuckets?: number; visitors?: string[]; hex: string }[] = [
  { name: 'one point', points: [[3, 1780272000000]], hex: '010107000000000000084080d8eb83e833' },
  { name: 'a counter of five ones', points: [[1, 1780272000000], [1, 1780272000010], [1, 1780272000020], [1, 1780272000030], [1, 1780272000040]], hex: '010507000000000000f03fa8d8eb83e833' },
  { name: 'two values', points: [[3, 1780272000000], [5, 1780272000001]], hex: '010200000000000000084000000000000014400000000000001440000000000000204081d8eb83e83300026e01190100' },
  {
    name: 'decimals, a zero and negatives',
    points: [[129.95, 1780272000000], [0, 1780272000005], [-2.5, 1780272000009], [4000, 1780272000007], [0.1, 1780272000003], [-2.5, 1780272000011], [1e-12, 1780272000002]],
    hex: '01070000000000000004c0000000000040af4000000000000004c0cecccccc0c1db0408bd8eb83e8330203e50101e60201aa0101015c02',
  },
  {
    name: 'custom sketch parameters',
    points: [[10, 1780272000000], [20, 1780272000001], [30, 1780272000002], [40, 1780272000003]],
    alpha: 0.05,
    maxBuckets: 64,
    hex: '010408000000000000244000000000000044400000000000004440000000000000594083d8eb83e8339a9999999999a93f400004300105010301020100',
  },
  { name: 'before 1970 (negative lastAt)', points: [[7, -86400000], [8, -86399000]], hex: '0102100000000000001c40000000000000204000000000000020400000000000002e4098b099290002c40101050100' },
  {
    name: 'non-decimal floats',
    points: [[3.141592653589793, 1780272000000], [0.3333333333333333, 1780272000001], [4.4942328371557893e307, 1780272000002], [-5e-324, 1780272000003]],
    hex: '0104000100000000000080ffffffffffffcf7f0100000000000080ffffffffffffcf7f83d8eb83e8330102b8890402fe0f0100',
  },
  { name: 'visitors (version 2)', points: [[1, 1780272000000], [1, 1780272000001], [1, 1780272000002]], visitors: ['a', 'b', 'a'], hex: '020307000000000000f03f82d8eb83e8330002d08ff10303b1cee30803' },
];

describe('aggregate encoding: versions 1 and 2 still open', () => {
  it.each(OLD_VECTORS)('$name', (v) => {
    const ref = build(v.points, v.alpha ? { alpha: v.alpha, maxBuckets: v.maxBuckets! } : undefined, v.visitors);
    const old = Uint8Array.from(Buffer.from(v.hex, 'hex'));
    expect(old[0]).toBe(v.visitors ? 2 : 1);
    expectOpensTo(old, ref);
    // re-encoded (as compaction does when it merges old rows): compact, smaller, the same aggregate
    const compact = encodeAggregate(decodeAggregate(old));
    expect(compact[0]).toBe(v.visitors ? 4 : 3);
    expect(compact.length).toBeLessThan(old.length);
    expectOpensTo(compact, ref);
  });

  it('an empty aggregate is written as version 1, as before', () => {
    expect(Buffer.from(encodeAggregate(emptyAggregate())).toString('hex')).toBe('0100');
    expect(view(decodeAggregate(Uint8Array.from([1, 0])))).toEqual(view(emptyAggregate()));
  });
});

describe('aggregate encoding: compact (version 3, 4 with visitors)', () => {
  it('decodes to the plaintext reference at the edges of its number form', () => {
    const edges = [
      0, -0, 1, -1, 0.1, -0.1, 129.95, 4000, 1e-9, 1.5e-9, 123456789.123, 2 ** 47, -(2 ** 47), 2 ** 47 + 1, 2 ** 53 - 1, -(2 ** 53 - 1), 1e21, 1e-320,
      Number.MIN_VALUE, -Number.MIN_VALUE, Number.MAX_VALUE, -Number.MAX_VALUE, Math.PI, 1 / 3, 0.30000000000000004, 14073748835.53279, 1.7976931348623157e300,
    ];
    for (const a of edges) {
      for (const b of [a, 0, 1, -2.5, 1e15]) {
        // one point, two, three (implied sketches) and four (a body), in both orders of time
        for (const points of [[[a, T0]], [[a, T0], [b, T0 + 1]], [[b, T0], [a, T0 + 1], [b, T0 + 2]], [[a, T0], [b, T0 + 1], [a / 2, T0 + 2], [b / 3, T0 + 3]]] as [number, number][][]) {
          const ref = build(points);
          const bytes = encodeAggregate(ref);
          expect(bytes[0]).toBe(3);
          expectOpensTo(bytes, ref);
        }
      }
    }
  });

  it('-0 keeps its sign (written as a float) where an aggregate holds it', () => {
    // addPoint turns -0 into 0; an aggregate decoded from an old row may still hold one
    const agg = { ...build([[0, T0], [1, T0 + 1]]), min: -0 };
    const back = decodeAggregate(encodeAggregate(agg));
    expect(Object.is(back.min, -0)).toBe(true);
    expect(view(back)).toEqual(view(agg));
  });

  it('decodes random aggregates (decimals, integers, floats, custom sketches, visitors) to the reference, and merges them like mergeInto', () => {
    const rnd = mulberry32(14);
    const value = (): number => {
      const k = Math.floor(rnd() * 5);
      if (k === 0) return Math.round(rnd() * 25000) / 100; // a price
      if (k === 1) return Math.floor(rnd() * 4000); // milliseconds
      if (k === 2) return (rnd() - 0.5) * 1e6; // any float
      if (k === 3) return -Math.floor(rnd() * 10);
      return 1;
    };
    const acc = emptyAggregate();
    const accEncoded = emptyAggregate();
    for (let i = 0; i < 400; i++) {
      const n = 1 + Math.floor(rnd() * (i % 4 === 0 ? 60 : 5));
      const points = Array.from({ length: n }, (_, j): [number, number] => [value(), T0 + Math.floor(rnd() * 3_600_000) - (j % 7 === 0 ? T0 * 2 : 0)]);
      const visitors = i % 5 === 0 ? points.map((_, j) => `v${j % 3}`) : undefined;
      const ref = build(points, undefined, visitors);
      const bytes = encodeAggregate(ref);
      expect(bytes[0]).toBe(visitors ? 4 : 3);
      expectOpensTo(bytes, ref);
      mergeInto(acc, ref);
      mergeEncoded(accEncoded, bytes, true);
    }
    expect(view(accEncoded)).toEqual(view(acc));
    const custom = build([[10, T0], [20, T0 + 1], [30, T0 + 2]], { alpha: 0.05, maxBuckets: 64 });
    expectOpensTo(encodeAggregate(custom), custom);
    // 2 and 3 values whose buckets span more than maxBuckets: add collapses them, and so does mergeEncoded
    for (const points of [[[1, T0], [1000, T0 + 1]], [[1, T0], [3, T0 + 1], [1000, T0 + 2]], [[-1000, T0], [-1, T0 + 1]]] as [number, number][][]) {
      const narrow = build(points, { alpha: 0.01, maxBuckets: 16 });
      const bytes = encodeAggregate(narrow);
      expect(bytes[2]! & 4).toBe(4); // the sketch is implied
      expectOpensTo(bytes, narrow);
      const into = build([[2, T0], [500, T0 + 5]], { alpha: 0.01, maxBuckets: 16 });
      const ref = mergeInto(build([[2, T0], [500, T0 + 5]], { alpha: 0.01, maxBuckets: 16 }), narrow);
      mergeEncoded(into, bytes, true);
      expect(view(into)).toEqual(view(ref));
    }
  });

  it('implies a sketch of 2 or 3 values only where min, max and sum rebuild it exactly', () => {
    const sizes = (points: [number, number][]) => encodeAggregate(build(points)).length;
    // 2 values: {min, max}; 3 values: the third is sum − min − max
    expect(sizes([[3, T0], [5, T0 + 1]])).toBeLessThan(sizes([[3, T0], [5, T0 + 1], [7, T0 + 2], [9, T0 + 3]]) - 4);
    for (const points of [
      [[0.1, T0], [0.2, T0 + 1], [0.3, T0 + 2]], // 0.1 + 0.2 + 0.3 − 0.1 − 0.3 is not 0.2 in float64
      [[1e16, T0], [1, T0 + 1], [-1e16, T0 + 2]], // the middle value is lost in the sum
      [[5, T0], [5, T0 + 1], [6, T0 + 2]],
    ] as [number, number][][]) {
      const ref = build(points);
      expectOpensTo(encodeAggregate(ref), ref);
    }
  });

  it('rows of the bench shape are smaller than in version 1 (one point by 5 bytes, four by a quarter)', () => {
    const one = build([[129.95, T0]]);
    const few = build([[129.95, T0], [80, T0 + 1], [4000, T0 + 2], [512, T0 + 3]]);
    const v1 = { one: 17, few: 3 + 32 + 6 + 11 }; // version 1: u8, count, flags, 8 per float, lastAt, sketch body
    expect(encodeAggregate(one).length).toBeLessThanOrEqual(12);
    expect(encodeAggregate(few).length).toBeLessThan(v1.few * 0.75);
    expect(encodeAggregate(one).length).toBeLessThan(v1.one);
  });

  it('refuses hostile bytes as malformed, the same way on every path', () => {
    const w = (f: (b: ByteWriter, n: (m: number) => void) => void) => {
      const b = new ByteWriter();
      f(b, (m) => b.varint((m >= 0 ? m * 2 : -m * 2 - 1) * 16)); // a decimal number with exponent 0
      return b.finish();
    };
    const good = encodeAggregate(build([[1, 0], [9, 1], [5, 3], [5, 2]]));
    expect(outcomes(good)).toEqual(['ok', 'ok', 'ok', 'ok']);
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(4 | 32), n(2), n(4), n(6), b.varint(0))))).toEqual(['ok', 'ok', 'ok', 'ok']); // the writer below is right
    expect(outcomes([3, 0])).toEqual(EVERYWHERE); // empty in a compact version
    expect(outcomes([4, 0])).toEqual(EVERYWHERE);
    expect(outcomes([5, 1])).toEqual(EVERYWHERE); // unknown version
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(128))))).toEqual(EVERYWHERE); // unknown flag
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(32 | 64), n(2), n(4), n(6), b.varint(0))))).toEqual(EVERYWHERE); // last both min and max
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(1 | 32), n(2), b.varint(0))))).toEqual(EVERYWHERE); // SINGLE with LAST_MIN
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(1 | 64), n(2), b.varint(0))))).toEqual(EVERYWHERE); // SINGLE with LAST_MAX
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(2), n(2), n(4), n(4), b.varint(0))))).toEqual(EVERYWHERE); // SUM_IMPLIED without SINGLE
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(1 | 2 | 4), b.varint(10), b.varint(0))))).toEqual(EVERYWHERE); // decimal exponent 10
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(1 | 2 | 4), b.varint(31), b.varint(0))))).toEqual(EVERYWHERE); // the float marker with a mantissa
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(1 | 2 | 4), b.u8(15), b.u8(0))))).toEqual(EVERYWHERE); // a truncated float
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(1 | 2 | 4), b.u8(15), b.f64(Infinity), b.varint(0))))).toEqual(EVERYWHERE); // a non-finite value
    expect(outcomes(w((b) => (b.u8(3), b.varint(1), b.u8(1 | 2 | 4), b.varint((2 ** 48 + 2) * 16), b.varint(0))))).toEqual(EVERYWHERE); // a mantissa above 2^47
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(2), b.u8(32), n(9), n(4), n(13), b.varint(0))))).toEqual(EVERYWHERE); // min above max
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(4), b.u8(4 | 64), n(2), n(8), n(20), b.varint(0))))).toEqual(WITH_SKETCH); // an implied sketch of 4 values
    expect(outcomes(w((b, n) => (b.u8(3), b.varint(3), b.u8(4 | 64), n(2), n(8), n(100), b.varint(0))))).toEqual(WITH_SKETCH); // 3 values whose middle is above max
    expect(outcomes(new Uint8Array([...good, 0]))).toEqual(WITH_SKETCH); // trailing bytes
    for (let cut = 1; cut < good.length; cut++) {
      const o = outcomes(good.subarray(0, cut));
      expect([o[0], o[2]]).toEqual([M, M]);
    }
  });
});
