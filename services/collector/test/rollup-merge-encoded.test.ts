/**
 * mergeEncoded(into, bytes, withSketch) must behave exactly like
 * mergeInto(into, decodeAggregate(bytes, withSketch)): same result, same errors, and
 * `into` unchanged whenever it throws.
 */
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Aggregate,
  addPoint,
  cloneAggregate,
  decodeAggregate,
  emptyAggregate,
  encodeAggregate,
  finalize,
  emptyScalars,
  mergeEncoded,
  mergeEncodedDeferred,
  mergeInto,
} from '../src/rollup/aggregate.js';
import { ByteWriter } from '../src/rollup/bytes.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';
import { emptyDistinct, mergeDistinct } from '../src/rollup/distinct.js';
import { RollupError } from '../src/rollup/errors.js';
import { type SketchOptions, type Store, add, createSketch, keptQuantile, quantile, sketchEquals } from '../src/rollup/sketch.js';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/**
 * A copy of an aggregate to compare later: its deferred sketches' kept buckets as the values in
 * their range (sketch.ts keepScanned: a range of a chunk other cells write after it), not the chunk.
 */
const snapshot = (a: Aggregate): unknown =>
  structuredClone({ ...a, deferred: a.deferred?.map((x, i, d) => (x instanceof Int32Array ? [...x.subarray(d[i + 1] as number, d[i + 2] as number)] : x)) });

type Outcome = { ok: true } | { ok: false; code: string; message: string };

/** Byte mutations of an encoding: set, truncate, insert, delete or append a byte at a position. */
const mutation = fc.tuple(fc.constantFrom('set', 'truncate', 'insert', 'delete', 'append'), fc.nat(), fc.nat(255));

/** `agg`'s encoding with `muts` applied in order. */
function mutated(agg: Aggregate, muts: [string, number, number][]): Uint8Array {
  let b = [...encodeAggregate(agg)];
  for (const [kind, at, byte] of muts) {
    const i = at % (b.length + 1);
    if (kind === 'set' && i < b.length) b[i] = byte;
    else if (kind === 'truncate') b = b.slice(0, i);
    else if (kind === 'insert') b.splice(i, 0, byte);
    else if (kind === 'delete') b.splice(i, 1);
    else if (kind === 'append') b.push(byte);
  }
  return new Uint8Array(b);
}

function attempt(f: () => unknown): Outcome {
  try {
    f();
    return { ok: true };
  } catch (e) {
    if (!(e instanceof RollupError)) throw e;
    return { ok: false, code: e.code, message: e.message };
  }
}

/** Non-empty buckets of a store, read from the whole array (so slack must be zero). */
function buckets(s: Store): [number, number][] {
  const out: [number, number][] = [];
  s.counts.forEach((c, j) => c !== 0 && out.push([s.offset + j, c]));
  return out;
}

/** Store invariants: lo/hi are the non-empty ends, everything else is zero, at most maxBuckets. */
function checkStore(s: Store, maxBuckets: number): void {
  const b = buckets(s);
  if (b.length === 0) expect(s.lo).toBeGreaterThan(s.hi);
  else expect([s.lo, s.hi]).toEqual([b[0]![0], b[b.length - 1]![0]]);
  expect(s.counts.length).toBeLessThanOrEqual(maxBuckets);
}

/** What must be equal: every field, and the sketch's parameters and buckets (not its slack). */
function view(a: Aggregate): unknown {
  const s = a.sketch;
  checkStore(s.pos, s.maxBuckets);
  checkStore(s.neg, s.maxBuckets);
  const sketch = { alpha: s.alpha, maxBuckets: s.maxBuckets, lnGamma: s.lnGamma, count: s.count, zero: s.zero, pos: buckets(s.pos), neg: buckets(s.neg) };
  return { ...a, sketch };
}

/** One merge both ways: the same outcome and the same state after it. */
function step(ref: Aggregate, got: Aggregate, bytes: Uint8Array, withSketch: boolean): Outcome {
  const before = structuredClone(got);
  const r = attempt(() => mergeInto(ref, decodeAggregate(bytes, withSketch)));
  const g = attempt(() => mergeEncoded(got, bytes, withSketch));
  expect(g).toEqual(r);
  if (!g.ok) expect(got).toEqual(before);
  expect(view(got)).toEqual(view(ref));
  return g;
}

// ---- arbitraries ---------------------------------------------------------------

const value = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }),
  fc.constantFrom(0, -0, 1, -1, 0.1, 1e-9, -1e-9, 0.9e-9, 5e-324, 1e300, -1e307, Number.MAX_VALUE, -Number.MAX_VALUE),
  fc.double({ min: -1e6, max: 1e6, noNaN: true }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.double({ min: 1e-12, max: 1e-6, noNaN: true }).chain((v) => fc.constantFrom(v, -v)),
);
const time = fc.oneof(fc.integer({ min: -5, max: 5 }), fc.integer({ min: -(2 ** 45), max: 2 ** 45 }));

const params: fc.Arbitrary<SketchOptions | undefined> = fc.option(
  fc.record({ alpha: fc.constantFrom(1e-4, 0.005, 0.01, 0.02, 0.05, 0.5), maxBuckets: fc.constantFrom(16, 64, 2048, 65_536) }),
  { nil: undefined },
);
/** Mostly default parameters, so that merges are mostly compatible. */
const mostlyDefault = fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: params });

const aggregate: fc.Arbitrary<Aggregate> = fc
  .record({
    opts: mostlyDefault,
    // varied points, or one value repeated (the SINGLE / implied-field encodings)
    points: fc.oneof(
      fc.array(fc.tuple(value, time), { maxLength: 80 }),
      fc.tuple(value, time, fc.integer({ min: 1, max: 40 })).map(([v, t, n]) => Array.from({ length: n }, (_, i): [number, number] => [v, t + (i % 3)])),
      fc.tuple(value, time).map((p) => [p]),
    ),
  })
  .map(({ opts, points }) => {
    const agg = emptyAggregate(opts);
    for (const [v, t] of points) addPoint(agg, v, t);
    return agg;
  });

/** A starting accumulator: empty (default or custom parameters) or already holding data. */
const start = fc.oneof(
  params.map((p) => emptyAggregate(p)),
  aggregate,
);

// ---- properties ----------------------------------------------------------------

describe('mergeEncoded ≡ mergeInto ∘ decodeAggregate', () => {
  it('on sequences of random aggregates, with and without the sketch', () => {
    fc.assert(
      fc.property(start, fc.array(fc.tuple(aggregate, fc.boolean()), { minLength: 1, maxLength: 6 }), fc.boolean(), (into, parts, mixed) => {
        const ref = cloneAggregate(into);
        const got = cloneAggregate(into);
        const ws = parts[0]![1];
        for (const [agg, w] of parts) step(ref, got, encodeAggregate(agg), mixed ? w : ws);
        if (got.count > 0 && got.sketch.count === got.count) expect(hex(encodeAggregate(got))).toBe(hex(encodeAggregate(ref)));
      }),
      { numRuns: 300 },
    );
  });

  it('into a fresh accumulator gives the decoded aggregate, custom parameters included', () => {
    fc.assert(
      fc.property(aggregate, (agg) => {
        const bytes = encodeAggregate(agg);
        const got = emptyAggregate();
        const r = attempt(() => decodeAggregate(bytes));
        expect(attempt(() => mergeEncoded(got, bytes, true))).toEqual(r);
        if (!r.ok) return;
        const dec = decodeAggregate(bytes);
        expect({ ...got, sketch: null }).toEqual({ ...dec, sketch: null });
        expect(sketchEquals(got.sketch, dec.sketch)).toBe(true);
        expect([got.sketch.alpha, got.sketch.maxBuckets, got.sketch.lnGamma]).toEqual([dec.sketch.alpha, dec.sketch.maxBuckets, dec.sketch.lnGamma]);
        expect(hex(encodeAggregate(got))).toBe(hex(bytes));
        for (const a of ['p50', 'p95', 'p99', 'avg', 'last'] as const) expect(finalize(got, a)).toBe(finalize(dec, a));
      }),
      { numRuns: 300 },
    );
  });

  it('mutated and truncated encodings: throws exactly when decodeAggregate does, into unchanged', () => {
    fc.assert(
      fc.property(start, aggregate, fc.array(mutation, { minLength: 1, maxLength: 3 }), fc.boolean(), (into, agg, muts, ws) => {
        step(cloneAggregate(into), cloneAggregate(into), mutated(agg, muts), ws);
      }),
      { numRuns: 1000 },
    );
  });

  it('hand-built encodings that probe every check', () => {
    const f64 = fc.oneof(
      fc.integer({ min: -20, max: 20 }),
      fc.constantFrom(NaN, Infinity, -Infinity, -0, 1e-10, Number.MAX_VALUE),
      fc.double({ min: -1e3, max: 1e3, noNaN: true }),
    );
    const bucketCount = fc.oneof(
      { weight: 20, arbitrary: fc.integer({ min: 1, max: 5 }) },
      { weight: 1, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: fc.constantFrom(2 ** 52, MAX_SAFE) },
    );
    const store = fc.record({
      first: fc.oneof(fc.integer({ min: -40, max: 40 }), fc.integer({ min: -3000, max: 80_000 }), fc.constantFrom(-1037, -1036, 35_495, 35_496)),
      // (gap − 1 as written, count)
      rest: fc.array(fc.tuple(fc.oneof(fc.nat(3), fc.nat(70), fc.nat(3000)), bucketCount), { maxLength: 25 }),
      count: bucketCount,
      empty: fc.boolean(),
    });
    const raw = fc.record({
      version: fc.oneof({ weight: 19, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat(255) }),
      count: fc.oneof(fc.nat(50), fc.constantFrom(0, MAX_SAFE)),
      matchCount: fc.boolean(),
      flags: fc.oneof(
        // mostly consistent: SUM_IMPLIED (2) and SKETCH_IMPLIED (4) only with SINGLE (1); PARAMS 8, LASTAT_NEG 16
        { weight: 9, arbitrary: fc.tuple(fc.boolean(), fc.nat(3), fc.constantFrom(0, 8, 16, 24)).map(([single, implied, rest]) => (single ? 1 | (implied << 1) : 0) | rest) },
        { weight: 1, arbitrary: fc.nat(255) },
      ),
      vals: fc.tuple(f64, f64, f64).map((v) => (v.every(Number.isFinite) ? v.sort((a, b) => a - b) : v)),
      order: fc.constantFrom('min,max,last', 'min,last,max'),
      sum: f64,
      lastAt: fc.oneof(fc.nat(100), fc.nat(2 ** 45)),
      alpha: fc.constantFrom(0.01, 0.02, 0.5, 1e-4, 0, 0.6, NaN, 9e-5),
      maxBuckets: fc.oneof(fc.constantFrom(16, 20, 2048, 65_536, 15, 65_537), fc.nat(70_000)),
      zero: fc.oneof(fc.nat(5), fc.constant(MAX_SAFE)),
      pos: store,
      neg: store,
      trailing: fc.oneof({ weight: 5, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(fc.nat(255), { maxLength: 2 }) }),
      cut: fc.oneof({ weight: 5, arbitrary: fc.constant(Infinity) }, { weight: 1, arbitrary: fc.nat(60) }),
    });
    const encode = (r: typeof raw extends fc.Arbitrary<infer T> ? T : never): Uint8Array => {
      const w = new ByteWriter();
      const stores = [r.pos, r.neg].map((s): [number, number][] => (s.empty ? [] : [[s.first, s.count], ...s.rest]));
      let total = r.zero;
      for (const s of stores) for (const [, c] of s) total += c;
      const count = r.matchCount && total <= MAX_SAFE ? total : r.count;
      w.u8(r.version);
      w.varint(count);
      if (count !== 0) {
        w.u8(r.flags);
        const [lo, mid, hi] = r.vals;
        if (r.flags & 1) w.f64(lo);
        else for (const v of r.order === 'min,max,last' ? [lo, hi, mid] : [lo, mid, hi]) w.f64(v);
        if (!(r.flags & 2)) w.f64(r.sum);
        w.varint(r.lastAt);
        if (r.flags & 8) {
          w.f64(r.alpha);
          w.varint(r.maxBuckets);
        }
        if (!(r.flags & 4)) {
          w.varint(r.zero);
          for (const s of stores) {
            w.varint(s.length);
            s.forEach(([i, c], k) => {
              if (k === 0) w.zigzag(i);
              else w.varint(i);
              w.varint(c);
            });
          }
        }
      }
      for (const t of r.trailing) w.u8(t);
      const out = w.finish();
      return out.subarray(0, Math.min(out.length, r.cut));
    };
    const outcomes = new Map<string, number>();
    fc.assert(
      fc.property(start, raw, fc.boolean(), (into, r, ws) => {
        const o = step(cloneAggregate(into), cloneAggregate(into), encode(r), ws);
        const key = o.ok ? 'ok' : o.message;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }),
      { numRuns: 3000, seed: 20260601 }, // fixed, so that the coverage check below is deterministic
    );
    // the generator reaches every check (and valid inputs)
    for (const why of [
      'ok',
      'unknown version',
      'unknown flags',
      'implied fields need SINGLE',
      'non-finite value',
      'min/last/max out of order',
      'sum is NaN',
      'sketch parameters',
      'bucket count',
      'bucket index out of range',
      'empty bucket',
      'count overflow',
      'bucket span exceeds maxBuckets',
      'sketch count does not match count',
      'trailing bytes',
      'truncated',
    ]) {
      expect([...outcomes.keys()].some((k) => k === why || k.endsWith(`: ${why}`)), why).toBe(true);
    }
  });
});

describe('mergeEncoded: cases that matter', () => {
  it('rejects a non-Uint8Array like decodeAggregate', () => {
    const into = emptyAggregate();
    expect(attempt(() => mergeEncoded(into, 'nope' as never, true))).toEqual(attempt(() => decodeAggregate('nope' as never)));
    expect(into).toEqual(emptyAggregate());
  });

  it('different alpha: incompatible_sketch, into unchanged; withSketch=false does not look', () => {
    const into = addPoint(addPoint(emptyAggregate({ alpha: 0.02 }), 1, 0), 2, 1);
    const bytes = encodeAggregate(addPoint(addPoint(emptyAggregate(), 3, 5), 4, 6));
    const before = structuredClone(into);
    expect(attempt(() => mergeEncoded(into, bytes, true))).toMatchObject({ ok: false, code: 'incompatible_sketch' });
    expect(into).toEqual(before);
    mergeEncoded(into, bytes, false);
    expect(into).toMatchObject({ count: 4, sum: 10, min: 1, max: 4, last: 4, lastAt: 6 });
    expect(into.sketch).toEqual(before.sketch);
  });

  it('a compact 2- or 3-value sketch wider than its maxBuckets merges collapsed, into an accumulator with more buckets', () => {
    // (fast-check seed 807429085 found it: the implied sketch was merged uncollapsed)
    for (const values of [[2e-9, 1e300], [-1e300, -2e-9], [2e-9, 1, 1e300], [-1e300, 5, 1e300]]) {
      const agg = build(values.map((v, i): [number, number] => [v, i]), emptyAggregate({ maxBuckets: 2048 }));
      const into = build([[0, 0], [7, 1]], emptyAggregate({ maxBuckets: 65_536 }));
      expect(step(cloneAggregate(into), cloneAggregate(into), encodeAggregate(agg), true)).toEqual({ ok: true });
    }
  });

  it('sketch count overflow: invalid_argument like merge, into unchanged', () => {
    const big = emptyAggregate();
    add(big.sketch, 5, MAX_SAFE - 10);
    Object.assign(big, { count: MAX_SAFE - 10, sum: 5 * (MAX_SAFE - 10), min: 5, max: 5, last: 5, lastAt: 0 });
    const bytes = encodeAggregate(build([[1, 0], ...Array.from({ length: 20 }, (_, i): [number, number] => [2, i])]));
    const ref = cloneAggregate(big);
    const got = cloneAggregate(big);
    expect(step(ref, got, bytes, true)).toMatchObject({ ok: false, code: 'invalid_argument' });
    expect(step(ref, got, encodeAggregate(big), true)).toMatchObject({ ok: false, code: 'invalid_argument' });
  });

  it('never writes to the shared sketch of aggregates decoded without one', () => {
    const noSketch = decodeAggregate(encodeAggregate(build([[1, 0]])), false);
    const shared = noSketch.sketch;
    const bytes = encodeAggregate(build([[3, 5], [-7, 6]], emptyAggregate({ alpha: 0.05 })));
    const ref = cloneAggregate(noSketch);
    ref.sketch = shared; // as decoded: mergeInto must not write to it either
    mergeInto(ref, decodeAggregate(bytes));
    mergeEncoded(noSketch, bytes, true);
    expect(view(noSketch)).toEqual(view(ref));
    expect(noSketch.sketch).not.toBe(shared);
    expect(shared).toEqual(createSketch());
    expect(decodeAggregate(encodeAggregate(build([[2, 0]])), false).sketch).toEqual(createSketch());
  });

  it('withSketch=false skips the body and trailing bytes, like decodeAggregate', () => {
    const bytes = encodeAggregate(build([[1, 0], [5, 1], [9, 2], [20, 3]])); // 4 values: a sketch body is written
    const bad = new Uint8Array([...bytes.subarray(0, bytes.length - 1), 0xff, 0xff]); // body broken, extra byte
    expect(attempt(() => decodeAggregate(bad, false))).toEqual({ ok: true });
    step(emptyAggregate(), emptyAggregate(), bad, false);
    step(emptyAggregate(), emptyAggregate(), bad, true);
  });

  it('many rows into few accumulators match the old way byte for byte', () => {
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const rows = Array.from({ length: 300 }, (_, k) =>
      encodeAggregate(build(Array.from({ length: 50 + (k % 7) * 30 }, (_, i): [number, number] => [Math.round(Math.exp(6 + 2 * (rnd() - 0.5)) * 10) / 10, k * 100 + i]))),
    );
    const refs = Array.from({ length: 7 }, () => emptyAggregate());
    const gots = Array.from({ length: 7 }, () => emptyAggregate());
    rows.forEach((b, k) => {
      mergeInto(refs[k % 7]!, decodeAggregate(b));
      mergeEncoded(gots[k % 7]!, b, true);
    });
    gots.forEach((g, i) => {
      expect(hex(encodeAggregate(g))).toBe(hex(encodeAggregate(refs[i]!)));
      expect(finalize(g, 'p95')).toBe(finalize(refs[i]!, 'p95'));
    });
  });
});

function build(points: [number, number][], agg = emptyAggregate()): Aggregate {
  for (const [v, t] of points) addPoint(agg, v, t);
  return agg;
}

describe('mergeEncodedDeferred ≡ mergeEncoded(…, true)', () => {
  const QS = ['p50', 'p75', 'p90', 'p95', 'p99', 'min', 'max', 'count', 'sum', 'last'] as const;
  /** An encoding, sometimes mutated (so errors are compared too). */
  const visitor = (n: number) => new Uint8Array(createHash('sha256').update(String(n)).digest().subarray(0, 8));
  /** Enough visitors for the dense form of the distinct sketch. */
  const manyVisitors = emptyAggregate();
  for (let n = 0; n < 6000; n++) addPoint(manyVisitors, 1 + (n % 5), n, visitor(n));
  /** Some with visitors (browser batches: version 4, a distinct sketch before the sketch), sparse or dense. */
  const withVisitors = fc
    .tuple(aggregate, fc.array(fc.tuple(value, time, fc.nat()), { maxLength: 40 }), fc.nat(9).map((x) => x === 0))
    .map(([agg, points, dense]) => {
      for (const [v, t, n] of points) addPoint(agg, v, t, visitor(n));
      if (dense) mergeDistinct((agg.visitors ??= emptyDistinct()), manyVisitors.visitors!);
      return agg;
    });
  const encoding = fc.tuple(fc.oneof(aggregate, withVisitors), fc.array(mutation, { maxLength: 2 })).map(([agg, muts]) => mutated(agg, muts));

  it('same outcomes, into unchanged on a throw, the same percentiles before and the same aggregate after its sketch is merged', () => {
    expect(manyVisitors.visitors?.dense).toBeTruthy();
    fc.assert(
      fc.property(fc.oneof(fc.constant(null), start), fc.array(encoding, { minLength: 1, maxLength: 8 }), fc.boolean(), (from, parts, slots) => {
        const ref = from ? cloneAggregate(from) : emptyScalars();
        const got = from ? cloneAggregate(from) : emptyScalars();
        for (const bytes of parts) {
          // also as a slot of a larger buffer (a day pack's)
          const buf = slots ? new Uint8Array([7, ...bytes, 9]) : bytes;
          const [at, end] = slots ? [1, bytes.length + 1] : [0, bytes.length];
          const before = snapshot(got);
          const r = attempt(() => mergeEncoded(ref, bytes, true));
          expect(attempt(() => mergeEncodedDeferred(got, buf, at, end))).toEqual(r);
          if (!r.ok) expect(snapshot(got)).toEqual(before);
        }
        for (const q of QS) expect(finalize(got, q)).toBe(finalize(ref, q)); // through the scratch sketch
        const copy = cloneAggregate(got); // merges the deferred sketches
        expect(got.deferred).toBeUndefined();
        expect(view(got)).toEqual(view(ref));
        expect(view(copy)).toEqual(view(ref));
        if (got.count > 0) expect(hex(encodeAggregate(got))).toBe(hex(encodeAggregate(ref)));
      }),
      { numRuns: 300 },
    );
  });

  it('cells with deferred sketches merge, export and take more like eager ones (mergeInto, encodeAggregate, mergeEncoded)', () => {
    fc.assert(
      fc.property(fc.array(aggregate, { minLength: 2, maxLength: 6 }), (aggs) => {
        const half = aggs.length >> 1;
        const cell = (xs: Aggregate[], deferred: boolean) => {
          const c = deferred ? emptyScalars() : emptyAggregate();
          for (const a of xs) attempt(() => (deferred ? mergeEncodedDeferred(c, encodeAggregate(a)) : mergeEncoded(c, encodeAggregate(a), true)));
          return c;
        };
        const [a, b] = [cell(aggs.slice(0, half), true), cell(aggs.slice(half), true)];
        const [ra, rb] = [cell(aggs.slice(0, half), false), cell(aggs.slice(half), false)];
        expect(attempt(() => mergeInto(a, b))).toEqual(attempt(() => mergeInto(ra, rb)));
        expect(view(a)).toEqual(view(ra));
        const c = cell(aggs.slice(half), true);
        const rc = cell(aggs.slice(half), false);
        const bytes = encodeAggregate(ra);
        expect(attempt(() => mergeEncoded(c, bytes, true))).toEqual(attempt(() => mergeEncoded(rc, bytes, true)));
        expect(view(c)).toEqual(view(rc));
      }),
      { numRuns: 300 },
    );
  });

  it('different alpha and count overflow: the same errors as the eager merge, against sketches deferred or merged', () => {
    const into = emptyScalars();
    mergeEncodedDeferred(into, encodeAggregate(addPoint(addPoint(emptyAggregate({ alpha: 0.02 }), 1, 0), 2, 1)));
    const other = encodeAggregate(addPoint(addPoint(emptyAggregate(), 3, 5), 4, 6));
    const before = snapshot(into);
    expect(attempt(() => mergeEncodedDeferred(into, other))).toMatchObject({ ok: false, code: 'incompatible_sketch' });
    expect(snapshot(into)).toEqual(before);
    const big = emptyAggregate();
    add(big.sketch, 5, MAX_SAFE - 10);
    Object.assign(big, { count: MAX_SAFE - 10, sum: 5 * (MAX_SAFE - 10), min: 5, max: 5, last: 5, lastAt: 0 });
    const twenty = encodeAggregate(build(Array.from({ length: 20 }, (_, i): [number, number] => [2, i])));
    for (const deferred of [true, false]) {
      const b = deferred ? emptyScalars() : cloneAggregate(big);
      if (deferred) mergeEncodedDeferred(b, encodeAggregate(big));
      const kept = snapshot(b);
      expect(attempt(() => mergeEncodedDeferred(b, twenty))).toMatchObject({ ok: false, code: 'invalid_argument', message: 'sketch count overflow' });
      expect(snapshot(b)).toEqual(kept);
    }
  });

  it('many cells merged in turn, their buckets kept across several shared chunks: the same sketches and percentiles as eager cells', () => {
    // 400 cells × 60 encodings of 1–12 values (zeros and negatives too), one encoding per cell
    // in turn like a query's rows: about 300,000 kept numbers, more than one chunk of 262,144.
    const rand = mulberry32(7);
    const cells = Array.from({ length: 400 }, () => ({ got: emptyScalars(), ref: emptyAggregate() }));
    for (let round = 0; round < 60; round++) {
      for (const { got, ref } of cells) {
        const agg = emptyAggregate();
        const n = 1 + Math.floor(rand() * 12);
        for (let i = 0; i < n; i++) addPoint(agg, rand() < 0.05 ? 0 : (rand() < 0.1 ? -1 : 1) * Math.exp(rand() * 12), round * 1000 + i);
        const bytes = encodeAggregate(agg);
        mergeEncodedDeferred(got, bytes);
        mergeEncoded(ref, bytes, true);
      }
    }
    // a count beyond an int32 is kept as its bytes, beside kept buckets
    const huge = emptyAggregate();
    add(huge.sketch, 7, 2 ** 32);
    Object.assign(huge, { count: 2 ** 32, sum: 7 * 2 ** 32, min: 7, max: 7, last: 7, lastAt: 0 });
    const { got, ref } = cells[0]!;
    for (const bytes of [encodeAggregate(huge), encodeAggregate(build([[3, 1], [9000, 2], [-2, 3]]))]) {
      mergeEncodedDeferred(got, bytes);
      mergeEncoded(ref, bytes, true);
    }
    for (const { got, ref } of cells) {
      for (const q of QS) expect(finalize(got, q)).toBe(finalize(ref, q));
      expect(view(cloneAggregate(got))).toEqual(view(ref));
    }
  });
  it('a percentile read from the kept buckets of its bodies (no store) is the store\'s, at every rank from both ends', () => {
    // cells of 1–40 bodies of 1–12 values: shared buckets across bodies, zeros, one-value
    // bodies, wide spans (beyond maxBuckets: left to the store), negatives (left to the store)
    const rand = mulberry32(11);
    let read = 0;
    for (let c = 0; c < 600; c++) {
      const got = emptyScalars();
      const ref = emptyAggregate();
      const kind = c % 6;
      const bodies = 1 + Math.floor(rand() * 40);
      for (let b = 0; b < bodies; b++) {
        const agg = emptyAggregate();
        const n = 1 + Math.floor(rand() * 12);
        for (let i = 0; i < n; i++) {
          let v = kind === 0 ? 100 + Math.floor(rand() * 4) : Math.exp(rand() * 8);
          if (kind === 1 && rand() < 0.2) v = 0;
          if (kind === 2 && rand() < 0.05) v = rand() < 0.5 ? 1e-8 : 1e30; // a span beyond 2,048 buckets
          if (kind === 3 && rand() < 0.05) v = -v;
          addPoint(agg, v, b * 100 + i);
        }
        const bytes = encodeAggregate(agg);
        mergeEncodedDeferred(got, bytes);
        mergeEncoded(ref, bytes, true);
      }
      const d = got.deferred!;
      for (let k = 0; k <= 40; k++) {
        const q = k / 40;
        const v = keptQuantile(d, 2, d[0] as number, q);
        if (v !== undefined) {
          read++;
          expect(v).toBe(quantile(ref.sketch, q));
        } else if (kind < 2 && (q <= 0.05 || q >= 0.95)) expect((d.length - 2) / 3).toBeGreaterThan(8); // else too wide, negative, or a long walk
      }
      for (const q of ['p50', 'p75', 'p90', 'p95', 'p99'] as const) expect(finalize(got, q)).toBe(finalize(ref, q));
    }
    expect(read).toBeGreaterThan(10_000);
  });
});
