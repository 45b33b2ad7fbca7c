/**
 * The query merge's per-row shortcuts (src/query/merge.ts, src/at-rest/records.ts) against
 * plaintext references: a row's group is cached per (key version, series) with its tag arrays
 * checked, so rows of one series pseudonym carrying other tag arrays still land in their own
 * group (and outside a filter still fail); opened plaintexts are views into a shared pool, so
 * every payload kept must still hold its own bytes after thousands more rows were opened. Day
 * packs are merged slot by slot straight from the pack's bytes (no view, no object per slot,
 * no sketch per cell unless a percentile is asked): answers over packs, the rows they hold
 * still stored, late rows and unpacked days, in UTC and in zones at :30 and :45, by hour and
 * by day, equal the plaintext points' (sums exactly, p95 within the sketch's bound).
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { openRollup, sealRollup } from '../src/at-rest/records.js';
import { finishCells, finishSeries, mergeRows, PERCENTILE_ERROR, roundFloat, roundSketchValue, SKETCH_DIGITS, unpackValues, type Group, type MergePlan } from '../src/query/merge.js';
import { parseQuery } from '../src/query/request.js';
import { addPoint, mergeInto, buckets, bucketStart, emptyAggregate, encodeAggregate, encodeDayPack, finalize, nextBucketStart, sourceLevel, type Aggregate, type Aggregation, type Interval } from '../src/rollup/index.js';
import { LEVEL, PACKS, type PackLevel } from '../src/rollup/levels.js';
import type { StoredRow } from '../src/rollup/rows.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';

const HOUR = 3_600_000;
const day0 = Date.UTC(2026, 10, 2);
const key = randomBytes(32);
const accountId = 'acct_merge';
const metric = '42';
const sealed = (b: number, s: string, k: string, t: string, part: string, values: number[]): StoredRow => {
  const a = emptyAggregate();
  for (const v of values) addPoint(a, v, b);
  const id = { accountId, level: 1 as const, bucket: b, metric, series: s, tagKeys: k.split(','), tagValues: t.split(','), keyVersion: 1, part };
  return { l: 1, b, v: 1, s, a: sealRollup(key, id, encodeAggregate(a)), k, t, m: metric, p: part, u: [] };
};
const plan = (filters: MergePlan['versions'][number]['filters'] = []): MergePlan => ({
  accountId,
  level: 1,
  starts: [day0, day0 + HOUR, day0 + 2 * HOUR],
  end: day0 + 3 * HOUR,
  aggregation: 'sum',
  maxRows: 1000,
  maxGroups: 1000,
  versions: [{ version: 1, dataKey: key, metric, groupKeys: ['7'], filters }],
});
const sums = (rows: StoredRow[], p: MergePlan) => {
  const m = mergeRows(p, rows);
  const out: Record<string, (number | null)[]> = {};
  for (const g of m.groups.values()) out[g.values.join('|')] = Array.from(g.aggs, (a) => (a ? finalize(a, 'sum') : null));
  return { out, failed: m.failed, tampered: m.tampered };
};

describe('query merge', () => {
  // One series pseudonym 's1' written with two different tag arrays (a writer would never; the
  // identity covers both, so both open): each row is grouped by its own arrays.
  const rows = [
    sealed(day0, 's1', '7,8', '100,200', 'a', [1, 2]),
    sealed(day0 + HOUR, 's1', '7,8', '101,200', 'b', [10]),
    sealed(day0 + HOUR, 's1', '7,8', '100,200', 'c', [5]),
    sealed(day0 + 2 * HOUR, 's2', '7', '101', 'd', [7]),
    sealed(day0 + 2 * HOUR, 's1', '7,8', '101,200', 'e', [20]),
    sealed(day0, 's3', '8', '200', 'f', [4]), // no country: group '0'
  ];
  const reference = { '100': [3, 5, null], '101': [null, 10, 27], '0': [4, null, null] };

  it('groups every row by its own tag arrays, in any order (plaintext reference)', () => {
    for (const order of [rows, [...rows].reverse(), [rows[1]!, rows[0]!, ...rows.slice(2)]]) {
      const r = sums(order, plan());
      expect(r.out).toEqual(reference);
      expect(r.failed).toBe(0);
      expect(r.tampered).toBe(0);
    }
  });

  it('a filter keeps rows by their own tag arrays; the others fail', () => {
    for (const order of [rows, [...rows].reverse()]) {
      const r = sums(order, plan([{ accepted: ['101'] }]));
      expect(r.out).toEqual({ '101': reference['101'] });
      expect(r.failed).toBe(3); // storage returned rows outside the filter (a, c, f)
    }
  });

  it('a merge in parts (one mergeRows per part into the same groups, as a query worker merges a cut statement) groups every row by its own tag arrays, a filter\'s failures counted alike', () => {
    const cuts = [[rows.slice(0, 2), rows.slice(2)], [rows.slice(0, 1), rows.slice(1, 4), rows.slice(4)], [[...rows].reverse().slice(0, 3), [...rows].reverse().slice(3)]];
    for (const parts of cuts) {
      for (const p of [plan(), plan([{ accepted: ['101'] }])]) {
        const groups = new Map<string, Group>();
        let failed = 0;
        for (const part of parts) failed += mergeRows(p, part, groups).failed;
        const out: Record<string, (number | null)[]> = {};
        for (const g of groups.values()) out[g.values.join('|')] = Array.from(g.aggs, (a) => (a ? finalize(a, 'sum') : null));
        expect(out).toEqual(p.versions[0]!.filters.length ? { '101': reference['101'] } : reference);
        expect(failed).toBe(p.versions[0]!.filters.length ? 3 : 0);
      }
      // the same groups map under another plan (a filter): its rows are judged by that plan
      const groups = new Map<string, Group>();
      mergeRows(plan(), parts[0]!, groups);
      const r = mergeRows(plan([{ accepted: ['999'] }]), parts[1]!, groups);
      expect(r.failed).toBe(parts[1]!.length);
    }
  });

  it('finished values cross as flat buffers: series merged by label, empty buckets as the aggregation answers them, nulls and every float kept', () => {
    const agg = (...vs: number[]) => vs.reduce((a, v, i) => addPoint(a, v, i), emptyAggregate());
    const groups: Group[] = [
      { values: ['a'], aggs: [agg(1, 2), undefined, agg(-0.5)] },
      { values: ['b'], aggs: [undefined, agg(1e300, -1e-300), agg(19.99, 179.4)] },
      { values: ['c'], aggs: [agg(4), undefined, undefined] }, // same labels as a
    ];
    const starts = [0, 1, 2];
    for (const aggregation of ['sum', 'max', 'p50'] as Aggregation[]) {
      // the reference: finalize per cell, groups with the same series merged first
      const cell = (s: number, i: number) => {
        const merged = (s === 0 ? [groups[0]!, groups[2]!] : [groups[1]!]).map((g) => g.aggs[i]).filter((a) => a !== undefined);
        const a = merged.reduce((x, y) => mergeInto(x, y), emptyAggregate());
        const v = finalize(a, aggregation);
        if (v === null || Number.isInteger(v)) return v;
        // a percentile strictly inside its cell's [min, max] is a sketch value: SKETCH_DIGITS digits
        if (aggregation[0] === 'p' && v !== a.min && v !== a.max) return Number(v.toPrecision(SKETCH_DIGITS));
        return Number(v.toPrecision(15));
      };
      const fresh = groups.map((g) => ({ values: g.values, aggs: g.aggs.map((a) => a && mergeInto(emptyAggregate(), a)) }));
      const f = finishCells({ starts, aggregation }, fresh, [0, 1, 0], 2);
      expect([f.series, f.buckets, f.values.length, f.nulls.length]).toEqual([2, 3, 6, 6]);
      expect(unpackValues(f)).toEqual([0, 1].map((s) => starts.map((i) => cell(s, i))));
    }
    expect(unpackValues(finishCells({ starts, aggregation: 'max' }, [], [], 1))).toEqual([[null, null, null]]);
    expect(unpackValues(finishCells({ starts, aggregation: 'count' }, [], [], 0))).toEqual([]);
  });

  it('rounds every value to 15 significant digits, a short decimal without toPrecision (the same number)', () => {
    const rand = mulberry32(151);
    const values = [0.1, -0.1, 0.1 + 0.2, 19.99 + 179.4, 1e-6, 1e-7, 5e-7, -2.5, 123456.123456, 999999999.999999, 99999999999999.9, 1e15 - 0.5, 1e21 + 0.5, 5e-324, Number.MAX_VALUE, Number.NaN, Number.POSITIVE_INFINITY];
    for (let i = 0; i < 20_000; i++) {
      const places = Math.floor(rand() * 9);
      const m = Math.floor(rand() * 10 ** (1 + Math.floor(rand() * 16))) * (rand() < 0.3 ? -1 : 1);
      values.push(m / 10 ** places, m * 10 ** -places, Math.exp(rand() * 40 - 20), (m / 10 ** places) * 3 + 0.1);
    }
    const wrong = values.filter((v) => !Object.is(roundFloat(v), Number.isInteger(v) ? v : Number(v.toPrecision(15))));
    expect(wrong).toEqual([]);
    expect(roundFloat(null)).toBe(null);
  });

  it('answers a percentile from the sketch to SKETCH_DIGITS significant digits, within PERCENTILE_ERROR of the exact rank value; a cell\'s min, max and one-value cells exactly, other aggregations to 15 digits', () => {
    const rand = mulberry32(95);
    const digits = (v: number) => (v === 0 ? 0 : Number(Math.abs(v).toExponential(14).split('e')[0]!.replace('.', '').replace(/0+$/, '').length));
    let sketchValues = 0;
    let exactValues = 0;
    let worst = 0;
    let worstUnrounded = 0;
    for (let round = 0; round < 400; round++) {
      // cells of 1-60 values: decimals of page loads, prices, tiny and huge magnitudes, negatives, repeats
      const kind = round % 5;
      const cells = Array.from({ length: 20 }, () => {
        const n = 1 + Math.floor(rand() * (rand() < 0.3 ? 2 : 60));
        return Array.from({ length: n }, () => {
          const x = Math.exp(6 + 1.5 * (rand() - 0.5) * 4);
          if (kind === 0) return Math.round(x * 10) / 10;
          if (kind === 1) return Math.round(x) / 100;
          if (kind === 2) return x * 10 ** (Math.floor(rand() * 12) - 6); // within the span a sketch keeps uncollapsed (γ^2048)
          if (kind === 3) return (rand() < 0.5 ? -1 : 1) * Math.round(x * 1000) / 1000;
          return [3, 7.5, 100][Math.floor(rand() * 3)]!;
        });
      });
      const group: Group = { values: ['g'], aggs: cells.map((vs) => vs.reduce((a, v, i) => addPoint(a, v, i), emptyAggregate())) };
      for (const aggregation of ['p50', 'p95', 'p99', 'avg', 'max'] as Aggregation[]) {
        const fresh: Group = { values: ['g'], aggs: group.aggs.map((a) => a && mergeInto(emptyAggregate(), a)) };
        const [values] = unpackValues(finishCells({ starts: cells.map((_, i) => i), aggregation }, [fresh], [0], 1));
        cells.forEach((vs, i) => {
          const v = values![i]!;
          const a = group.aggs[i]!;
          const raw = finalize(a, aggregation)!;
          if (aggregation[0] !== 'p') return expect(v).toBe(roundFloat(raw));
          const sorted = [...vs].sort((x, y) => x - y);
          const x = sorted[Math.floor(Number(aggregation.slice(1)) / 100 * (vs.length - 1))]!;
          expect(v).toBeGreaterThanOrEqual(roundFloat(sorted[0]!)!); // min and max to 15 digits, as every answer
          expect(v).toBeLessThanOrEqual(roundFloat(sorted.at(-1)!)!);
          if (Math.abs(x) >= 1e-9) {
            worst = Math.max(worst, Math.abs(v - x) / Math.abs(x));
            worstUnrounded = Math.max(worstUnrounded, Math.abs(raw - x) / Math.abs(x));
          }
          expect(Math.abs(v - x), `${aggregation} of ${vs.length} values: ${v} vs ${x}`).toBeLessThanOrEqual(PERCENTILE_ERROR * Math.abs(x) + 1e-9);
          if (raw === a.min || raw === a.max) {
            // a point's own value (one value, or clamped): as every other answer
            expect(v).toBe(roundFloat(raw));
            exactValues++;
          } else {
            // a sketch value: SKETCH_DIGITS digits (then kept inside [min, max])
            expect(v === roundSketchValue(raw) || v === roundFloat(a.min) || v === roundFloat(a.max), `${v} from ${raw}`).toBe(true);
            expect(digits(v)).toBeLessThanOrEqual(SKETCH_DIGITS);
            sketchValues++;
          }
          if (vs.every((y) => y === vs[0])) expect(v).toBe(roundFloat(vs[0]!));
        });
      }
    }
    expect(sketchValues).toBeGreaterThan(5000);
    expect(exactValues).toBeGreaterThan(1000);
    // the sketch alone stays within α; the rounding adds at most 5e-5 of the value
    expect(worstUnrounded).toBeLessThanOrEqual(0.01 * (1 + 1e-12));
    expect(worst).toBeGreaterThan(0.009);
    expect(worst - worstUnrounded).toBeLessThanOrEqual(0.5 * 10 ** (1 - SKETCH_DIGITS) * 1.01);
    // short decimals and edge values
    expect([123.456789, 0.000123456789, -987654.321, 1e300 * 1.23456789, 0].map(roundSketchValue)).toEqual([123.46, 0.00012346, -987650, 1.2346e300, 0]);
  });

  it('payloads opened earlier keep their bytes while thousands more rows are opened', () => {
    const id = { accountId, level: 1 as const, bucket: day0, metric, series: 's', tagKeys: ['7'], tagValues: ['1'], keyVersion: 1, part: 'p' };
    const plains = Array.from({ length: 3000 }, (_, i) => randomBytes([1, 64, 100, 1000, 4095, 4096, 5000][i % 7]!));
    const kept = plains.map((p) => openRollup(key, id, sealRollup(key, id, p))!);
    plains.forEach((p, i) => expect(Buffer.from(kept[i]!).equals(Buffer.from(p)), `row ${i}`).toBe(true));
    // a copy is a copy, not a view into the pool
    const copy = kept[1]!.slice();
    copy.fill(0);
    expect(Buffer.from(kept[1]!).equals(Buffer.from(plains[1]!))).toBe(true);
  });
});

describe('query merge over day packs (plaintext reference)', () => {
  const DAY = 24 * HOUR;
  const QUARTER = HOUR / 4;
  const start = Date.UTC(2026, 10, 2); // day 0; days 0 and 1 packed, day 2 not
  const countries = ['100', '101'];
  const series = countries.flatMap((c, i) => ['200', '201'].map((d, j) => ({ s: `${5000 + i * 2 + j}`, k: '7,8', t: `${c},${d}` })));
  const rnd = mulberry32(14);
  type Point = { t: number; s: number; v: number };
  const points: Point[] = [];
  // edges first (day and hour boundaries, the last millisecond of a day and of a quarter hour), then seeded times
  const edges = [0, 1, HOUR - 1, HOUR, 5 * HOUR + 30 * 60_000, 18 * HOUR + 15 * 60_000 - 1, 18 * HOUR + 15 * 60_000, DAY - 1, DAY, 2 * DAY - 1, 2 * DAY, 3 * DAY - 1];
  edges.forEach((e, i) => points.push({ t: start + e, s: i % series.length, v: [0, 1, 2.5, 1e6, 0.25][i % 5]! }));
  for (let i = 0; i < 3000; i++) points.push({ t: start + Math.floor(rnd() * 3 * DAY), s: Math.floor(rnd() * series.length), v: Math.round(Math.exp(rnd() * 8)) / 4 });
  const late = { t: start + DAY + 7 * HOUR + 5 * 60_000, s: 1, v: 33 }; // arrived after day 1 was packed: an hour (quarter) row beside the pack
  const all = [...points, late];

  const ident = (level: number, b: number, sr: (typeof series)[number], part: string) => ({
    accountId, level: level as 0, bucket: b, metric, series: sr.s, tagKeys: sr.k.split(','), tagValues: sr.t.split(','), keyVersion: 1, part,
  });
  const row = (level: number, b: number, si: number, part: string, plain: Uint8Array, list?: string[], stored: string[] = []): StoredRow => {
    const sr = series[si]!;
    return { l: level, b, v: 1, s: sr.s, a: sealRollup(key, ident(level, b, sr, part), plain, list), k: sr.k, t: sr.t, m: metric, p: part, u: stored };
  };
  const aggOf = (ps: Point[]): Uint8Array => {
    const a = emptyAggregate();
    for (const p of ps) addPoint(a, p.v, p.t);
    return encodeAggregate(a);
  };
  /** The stored rows of one kind (hour rows and hour packs, or quarter-hour rows and quarter packs). */
  function storedRows(pack: PackLevel, unpacked: (si: number, d: number) => boolean = (_si, d) => d === 2): StoredRow[] {
    const { of, slotMs } = PACKS[pack];
    const rows: StoredRow[] = [];
    for (let si = 0; si < series.length; si++) {
      const cells = new Map<number, Point[]>();
      for (const p of points.filter((p) => p.s === si)) {
        const b = p.t - (p.t % slotMs);
        cells.set(b, [...(cells.get(b) ?? []), p]);
      }
      for (let d = 0; d < 3; d++) {
        const day = start + d * DAY;
        const mine = [...cells].filter(([b]) => b >= day && b < day + DAY).sort((x, y) => x[0] - y[0]);
        if (unpacked(si, d)) {
          for (const [b, ps] of mine) rows.push(row(of, b, si, `h${si}_${b}`, aggOf(ps)));
          continue;
        }
        const slots = mine.map(([b, ps]) => ({ hour: (b - day) / slotMs, bytes: aggOf(ps) }));
        const list = mine.map(([b]) => `${(b - day) / slotMs}/h${si}_${b}`);
        // day 1: compaction not finished — the pack's stored list still names the rows it holds, and one of them is still stored
        rows.push(row(pack, day, si, `c:d:${si}_${d}`, encodeDayPack(slots, PACKS[pack].slots), list, d === 1 ? list : []));
        if (d === 1 && mine.length > 0) rows.push(row(of, mine[0]![0], si, `h${si}_${mine[0]![0]}`, aggOf(mine[0]![1])));
      }
    }
    const lb = late.t - (late.t % slotMs);
    rows.push(row(of, lb, late.s, 'late', aggOf([late])));
    return rows;
  }
  const hourRows = storedRows(LEVEL.dayPack);
  const quarterRows = storedRows(LEVEL.quarterPack);
  // Both kinds, as storage holds them while compaction has packed series 0's day 1 by hours
  // but not yet by quarter hours: a quarter-level query with quarterHours reads each (day,
  // series) from one kind only, whatever storage returns.
  const bothKinds = [...hourRows, ...storedRows(LEVEL.quarterPack, (si, d) => d === 2 || (si === 0 && d === 1))];

  /** The answer per country and bucket, as the engine finishes it, and the reference from the points. */
  function answer(interval: Interval, tz: string, from: number, to: number, aggregation: Aggregation, both = false) {
    const starts = buckets(from, to, interval, tz);
    const end = nextBucketStart(starts.at(-1)!, interval, tz);
    const level = sourceLevel(interval, tz, from, to);
    expect(level).not.toBe(LEVEL.minute);
    let quarterHours: number[] | undefined;
    if (both) {
      const q = parseQuery({ metric: 'orders', aggregation, interval, timezone: tz, from, to }, { quarterSince: 0 });
      expect([q.level, q.starts, q.end]).toEqual([LEVEL.quarter, starts, end]);
      quarterHours = q.quarterHours;
      expect(quarterHours?.length).toBeGreaterThan(0);
    }
    const stored = (both ? bothKinds : level === LEVEL.hour ? hourRows : quarterRows).filter((r) => r.l === LEVEL.dayPack || r.l === LEVEL.quarterPack || (r.b >= starts[0]! && r.b < end));
    const p: MergePlan = { ...plan(), level, starts, end, aggregation, ...(quarterHours ? { quarterHours } : {}), versions: [{ version: 1, dataKey: key, metric, groupKeys: ['7'], filters: [] }] };
    const m = mergeRows(p, [...stored].reverse());
    expect(m.failed).toBe(0);
    expect(m.tampered).toBe(0);
    const groups = [...m.groups.values()];
    const values = finishSeries(p, groups, groups.map((_, j) => j), groups.length);
    const got = Object.fromEntries(groups.map((g, j) => [g.values[0], values[j]]));
    const ref: Record<string, number[][]> = {};
    for (const pt of all) {
      if (pt.t < starts[0]! || pt.t >= end) continue;
      const i = starts.indexOf(bucketStart(pt.t, interval, tz));
      const c = series[pt.s]!.t.split(',')[0]!;
      ((ref[c] ??= starts.map(() => []))[i]!).push(pt.v);
    }
    return { got, ref, starts };
  }
  const cases: [Interval, string][] = [
    ['hour', 'UTC'],
    ['day', 'UTC'],
    ['hour', 'Asia/Kolkata'],
    ['hour', 'Asia/Kathmandu'],
    ['day', 'Asia/Kolkata'],
    ['day', 'Asia/Kathmandu'],
  ];
  const ranges = [
    [start, start + 3 * DAY],
    [start + 5 * HOUR, start + 2 * DAY + 20 * HOUR], // starts and ends inside packed and unpacked days
  ];

  // days in zones at :30 and :45 with quarterHours: hour data beside quarter-hour data, one kind per (day, series)
  const bothCases = cases.filter(([interval, tz]) => interval === 'day' && tz !== 'UTC').map(([i, tz]) => [i, tz, true] as const);

  it.each([...cases.map(([i, tz]) => [i, tz, false] as const), ...bothCases])('sums by %s in %s equal the points\' exactly, count and max too (hour rows beside quarter-hour rows: %s)', (interval, tz, both) => {
    for (const [from, to] of ranges) {
      for (const aggregation of ['sum', 'count', 'max'] as const) {
        const { got, ref } = answer(interval, tz, from!, to!, aggregation, both);
        expect(Object.keys(got).sort()).toEqual(countries);
        for (const c of countries) {
          const want = ref[c]!.map((vs) => (aggregation === 'sum' ? vs.reduce((a, b) => a + b, 0) : aggregation === 'count' ? vs.length : vs.length ? Math.max(...vs) : null));
          expect(got[c], `${aggregation} ${c}`).toEqual(want);
        }
      }
    }
  });

  it.each([...cases.map(([i, tz]) => [i, tz, false] as const), ...bothCases])('p95 by %s in %s is within the sketch\'s bound of the exact rank value (hour rows beside quarter-hour rows: %s)', (interval, tz, both) => {
    for (const [from, to] of ranges) {
      const { got, ref } = answer(interval, tz, from!, to!, 'p95', both);
      let cells = 0;
      for (const c of countries)
        ref[c]!.forEach((vs, i) => {
          const v = got[c]![i];
          if (vs.length === 0) return expect(v).toBeNull();
          const x = [...vs].sort((a, b) => a - b)[Math.floor(0.95 * (vs.length - 1))]!;
          expect(Math.abs(v! - x), `${c} bucket ${i}: ${v} vs ${x}`).toBeLessThanOrEqual(PERCENTILE_ERROR * Math.abs(x) + 1e-9);
          cells++;
        });
      expect(cells).toBeGreaterThanOrEqual(6);
    }
  });

  it('a copy of any stored row (a pack, the first row of its UTC day or a later one) moves no number and is counted', () => {
    const starts = buckets(start, start + 3 * DAY, 'hour', 'UTC');
    const p: MergePlan = { ...plan(), starts, end: start + 3 * DAY };
    const copies = hourRows.filter((_, i) => i % 3 !== 1).map((r) => ({ ...r }));
    expect(copies.some((r) => r.l === LEVEL.dayPack) && copies.some((r) => r.l === LEVEL.hour && r.b < start + 2 * DAY)).toBe(true);
    const once = mergeRows(p, hourRows);
    for (const rows of [[...hourRows, ...copies], [...copies, ...hourRows]]) {
      const twice = mergeRows(p, rows);
      expect(twice.tampered).toBe(copies.length);
      expect(twice.failed).toBe(0);
      const sums = (m: ReturnType<typeof mergeRows>) => [...m.groups.values()].map((g) => [g.values[0], Array.from(g.aggs, (a) => (a ? finalize(a, 'sum') : null))]).sort();
      expect(sums(twice)).toEqual(sums(once));
    }
  });

  it('a malformed pack counts the slots before its fault, and is counted as failed', () => {
    const day = start;
    const slots = [0, 1, 2].map((h) => ({ hour: h, bytes: aggOf([{ t: day + h * HOUR, s: 0, v: 10 + h }]) }));
    const good = encodeDayPack(slots);
    const truncated = good.subarray(0, good.length - 1); // the last slot's aggregate cut short
    const outOfOrder = Uint8Array.from(good);
    outOfOrder[3 + good[2]!] = 0; // the second slot's number (after version, slot 0, its length and aggregate) rewritten to 0: not after slot 0
    const p: MergePlan = { ...plan(), starts: [day, day + HOUR, day + 2 * HOUR], end: day + 3 * HOUR };
    for (const [bytes, want] of [
      [truncated, [10, 11, null]],
      [outOfOrder, [10, null, null]],
      [Uint8Array.of(9, ...good.subarray(1)), [null, null, null]], // unknown version
    ] as const) {
      const m = mergeRows(p, [row(LEVEL.dayPack, day, 0, 'c:d:bad', bytes, [])]);
      const sums = [...m.groups.values()][0]?.aggs.map((a: Aggregate | undefined) => (a ? finalize(a, 'sum') : null)) ?? [null, null, null];
      expect(Array.from({ length: 3 }, (_, i) => sums[i] ?? null)).toEqual(want);
      expect(m.failed).toBe(1);
    }
  });
});
