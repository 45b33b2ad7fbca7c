/**
 * Pack format 2 (rollup/pack.ts): the day's total (and, as the format allows, a quarter pack's
 * hour totals) before the slots, merged by the encoder from the slots it writes; version 1 packs still read; the walk's
 * faults; and which readers use a total — the query merge where a span's slots all fall in one
 * bucket inside the range and none is read from other data, never the slot walk (compaction's
 * repack, the volume).
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { sealRollup } from '../src/at-rest/records.js';
import { encodePack } from '../src/compaction/day-packs.js';

const QUARTER_SPAN = 4; // hour totals of a quarter pack: format 2 allows them (read here), compaction does not write them
import { mergeRows, type MergePlan } from '../src/query/merge.js';
import { addPoint, daySlots, decodeAggregate, emptyAggregate, encodeAggregate, encodeDayPack, encodeTotalsPack, finalize, mergeAggregates, type Aggregate } from '../src/rollup/index.js';
import { LEVEL, PACKS, type PackLevel } from '../src/rollup/levels.js';
import { PackSlots } from '../src/rollup/pack.js';
import { RowReader, type StoredRow } from '../src/rollup/rows.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';

const HOUR = 3_600_000;
const QUARTER = HOUR / 4;
const DAY = 24 * HOUR;
const day = Date.UTC(2026, 10, 2);
const key = randomBytes(32);
const accountId = 'acct_pack';
const metric = '42';

const aggOf = (values: number[], t: number): Aggregate => {
  const a = emptyAggregate();
  for (const v of values) addPoint(a, v, t);
  return a;
};
/** Every entry of a pack: [slot, width, bytes]. */
function entries(pack: Uint8Array, slots: number): [number, number, Uint8Array][] {
  const w = new PackSlots().reset(pack, slots);
  const out: [number, number, Uint8Array][] = [];
  while (w.next()) out.push([w.slot, w.width, pack.slice(w.start, w.end)]);
  return out;
}
const row = (level: PackLevel, plain: Uint8Array, part = 'c:d:1'): StoredRow => {
  const id = { accountId, level, bucket: day, metric, series: '5000', tagKeys: ['7'], tagValues: ['100'], keyVersion: 1, part };
  return { l: level, b: day, v: 1, s: '5000', a: sealRollup(key, id, plain, []), k: '7', t: '100', m: metric, p: part, u: [] };
};
const sums = (p: MergePlan, rows: StoredRow[]): (number | null)[] => {
  const m = mergeRows(p, rows);
  expect(m.failed).toBe(0);
  return Array.from([...m.groups.values()][0]!.aggs, (a) => (a ? finalize(a, 'sum') : null));
};
const planOf = (level: MergePlan['level'], starts: number[], end: number, extra: Partial<MergePlan> = {}): MergePlan => ({
  accountId, level, starts, end, aggregation: 'sum', maxRows: 1000, maxGroups: 1000, versions: [{ version: 1, dataKey: key, metric, groupKeys: ['7'], filters: [] }], ...extra,
});

describe('pack format 2', () => {
  it('has a fixed layout: version 2, span width, the total, span totals, then the slots as in version 1', () => {
    const a = aggOf([1], day);
    const b = aggOf([2], day + HOUR);
    const hex = (x: Aggregate) => Buffer.from(encodeAggregate(x)).toString('hex');
    const total = mergeAggregates(a, b);
    const pack = encodeTotalsPack([{ slot: 1, agg: b }, { slot: 0, agg: a }], 24);
    const len = (x: Aggregate) => encodeAggregate(x).length.toString(16).padStart(2, '0');
    expect(Buffer.from(pack).toString('hex')).toBe(`0200ff${len(total)}${hex(total)}00${len(a)}${hex(a)}01${len(b)}${hex(b)}`);
    expect(Buffer.from(pack).toString('hex')).toBe('0200ff0c03024420406080e594ce9934000a030107208088b9cc9934010a0301074080e594ce9934');
    // quarter packs: the pack's total, then one per hour of two or more quarter hours (hour 0: slots 0 and 3; hour 2: slot 9 alone)
    const q = [0, 3, 9].map((slot) => ({ slot, agg: aggOf([slot + 1], day + slot * QUARTER) }));
    const e = entries(encodeTotalsPack(q, 96, QUARTER_SPAN), 96);
    expect(e.map(([slot, width]) => [slot, width])).toEqual([[0, 96], [0, 4], [0, 1], [3, 1], [9, 1]]);
    expect(decodeAggregate(e[0]![2]).sum).toBe(1 + 4 + 10);
    expect(decodeAggregate(e[1]![2]).sum).toBe(1 + 4);
    // one slot: no total (the slot is its own)
    expect(entries(encodeTotalsPack([q[0]!], 96, QUARTER_SPAN), 96).map(([s, w]) => [s, w])).toEqual([[0, 1]]);
    // the slot walk leaves totals out
    expect([...daySlots(encodeTotalsPack(q, 96, QUARTER_SPAN), 96)].map(([s]) => s)).toEqual([0, 3, 9]);
  });

  it('reads version 1 packs as before', () => {
    const v1 = encodeDayPack([{ hour: 59, bytes: Uint8Array.of(3) }, { hour: 0, bytes: Uint8Array.of(1, 2) }], 60);
    expect(Buffer.from(v1).toString('hex')).toBe('01000201023b0103');
    expect(entries(v1, 60)).toEqual([[0, 1, Uint8Array.of(1, 2)], [59, 1, Uint8Array.of(3)]]);
  });

  it('totals are merged from the slots by the encoder: never given, never disagreeing (seeded packs of every kind)', () => {
    const rnd = mulberry32(16);
    for (let n = 0; n < 40; n++) {
      const level = ([LEVEL.dayPack, LEVEL.quarterPack] as const)[n % 2]!;
      const { slots, slotMs } = PACKS[level];
      const slotAggs = new Map<number, Aggregate>();
      for (let s = 0; s < slots; s++) {
        if (rnd() < 0.4) continue;
        const values = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => Math.round(Math.exp(rnd() * 8)) / 4);
        slotAggs.set(s, aggOf(values, day + s * slotMs + Math.floor(rnd() * slotMs)));
      }
      const width = level === LEVEL.quarterPack ? QUARTER_SPAN : 0;
      const pack = level === LEVEL.dayPack ? encodePack(level, slotAggs) : encodeTotalsPack([...slotAggs].map(([slot, agg]) => ({ slot, agg })), slots, width);
      const all = entries(pack, slots);
      const bySlot = new Map(all.filter(([, w]) => w === 1).map(([s, , b]) => [s, b]));
      expect([...bySlot.keys()]).toEqual([...slotAggs.keys()].sort((x, y) => x - y));
      for (const [s, b] of bySlot) expect(b).toEqual(encodeAggregate(slotAggs.get(s)!));
      for (const [first, w, bytes] of all.filter(([, w]) => w > 1)) {
        expect(w === slots || (w === width && first % w === 0)).toBe(true);
        const covered = [...slotAggs].filter(([s]) => s >= first && s < first + w).sort((x, y) => x[0] - y[0]);
        expect(covered.length).toBeGreaterThanOrEqual(2);
        const want = covered.slice(1).reduce((acc, [, a]) => mergeAggregates(acc, a), covered[0]![1]);
        expect(bytes).toEqual(encodeAggregate(want));
      }
      // every span of two or more slots has its total
      const spans = width ? new Set([...slotAggs.keys()].map((s) => Math.floor(s / width))) : new Set<number>();
      const want = [...spans].filter((sp) => [...slotAggs.keys()].filter((s) => Math.floor(s / width) === sp).length >= 2).length + (slotAggs.size >= 2 ? 1 : 0);
      expect(all.filter(([, w]) => w > 1).length).toBe(want);
    }
    // compaction writes hour packs in version 2, quarter and minute packs in version 1
    const two = new Map([[3, aggOf([1], day)], [4, aggOf([2], day)]]);
    expect([LEVEL.dayPack, LEVEL.quarterPack, LEVEL.minutePack].map((l) => encodePack(l, two)[0])).toEqual([2, 1, 1]);
  });

  it('a malformed version 2 pack is a fault of the walk', () => {
    const a = encodeAggregate(aggOf([1], day));
    const entry = (code: number) => [code, a.length, ...a];
    const walk = (bytes: number[], slots = 96) => () => entries(Uint8Array.from(bytes), slots);
    expect(walk([2, 4, ...entry(0xff), ...entry(0x80), ...entry(0)])).not.toThrow();
    expect(walk([2, 4, ...entry(0x80), ...entry(0xff)])).toThrow(/totals out of order/); // the pack's total first
    expect(walk([2, 4, ...entry(0x81), ...entry(0x80)])).toThrow(/totals out of order/);
    expect(walk([2, 4, ...entry(0), ...entry(0x80)])).toThrow(/totals out of order/); // totals before the slots
    expect(walk([2, 0, ...entry(0x80)], 24)).toThrow(/totals out of order/); // no spans
    expect(walk([2, 4, ...entry(0x80 + 24)])).toThrow(/totals out of order/); // hour 24 of a day
    expect(walk([2, 5, ...entry(0)])).toThrow(/span width/);
    expect(walk([2])).toThrow(/unknown version/);
    expect(() => encodeTotalsPack([{ slot: 1, agg: aggOf([1], day) }, { slot: 1, agg: aggOf([2], day) }], 24)).toThrow(/slot out of range/);
    expect(() => encodeTotalsPack([{ slot: 24, agg: aggOf([1], day) }], 24)).toThrow(/slot out of range/);
    expect(() => encodeTotalsPack([], 96, 3)).not.toThrow();
    expect(() => encodeTotalsPack([], 96, 5)).toThrow(/span width/);
    // a malformed pack is counted as failed by the query merge
    const m = mergeRows(planOf(LEVEL.hour, [day], day + DAY), [row(LEVEL.dayPack, Uint8Array.from([2, 0, ...entry(0x80)]))]);
    expect(m.failed).toBe(1);
  });

  it('the query merge reads a total only where its whole span is one bucket inside the range, read from the pack', () => {
    // A pack whose total (1000) is not its slots' (1 + 2 at hours 0 and 23): only crafted bytes
    // can make one; it shows which path each reader takes.
    const slotsOnly = encodeDayPack([{ hour: 0, bytes: encodeAggregate(aggOf([1], day)) }, { hour: 23, bytes: encodeAggregate(aggOf([2], day + 23 * HOUR)) }]);
    const t = encodeAggregate(aggOf([1000], day));
    const crafted = Uint8Array.from([2, 0, 0xff, t.length, ...t, ...slotsOnly.subarray(1)]);
    const r = row(LEVEL.dayPack, crafted);
    expect(sums(planOf(LEVEL.hour, [day], day + DAY), [r])).toEqual([1000]); // a daily bucket: the total
    expect(sums(planOf(LEVEL.hour, [day - DAY, day, day + DAY], day + 2 * DAY), [r])).toEqual([null, 1000, null]);
    expect(sums(planOf(LEVEL.hour, [day, day + 12 * HOUR], day + DAY), [r])).toEqual([1, 2]); // an edge inside the day: slots
    expect(sums(planOf(LEVEL.hour, [day], day + 23 * HOUR), [r]).slice(0, 1)).toEqual([1]); // the range ends inside the day
    expect(sums(planOf(LEVEL.hour, [day], day + DAY, { minuteHours: [day + 23 * HOUR] }), [r])).toEqual([1]); // an hour read from minute rows
    expect(sums(planOf(LEVEL.hour, [day], day + DAY, { minuteFrom: day + 23 * HOUR }), [r])).toEqual([1]);
    expect(sums(planOf(LEVEL.quarter, [day], day + DAY, { quarterHours: [day + 23 * HOUR] }), [r])).toEqual([1]); // an hour read from quarter-hour rows
    // the slot walk (compaction's repack, the 24-hour volume) never reads a total
    const reader = new RowReader({ accountId, dataKey: () => key, level: () => LEVEL.dayPack });
    expect([...reader.cells([r])].map((c) => decodeAggregate(c.bytes).sum)).toEqual([1, 2]);

    // a quarter pack: an hour total (1000 for hour 18, slots 72 and 75) read in an hourly bucket
    // holding that whole hour; the day split at 18:15 (Asia/Kathmandu) reads slot 72 and 75 alone
    const q = encodeDayPack([72, 75].map((s) => ({ hour: s, bytes: encodeAggregate(aggOf([s], day + s * QUARTER)) })), 96);
    const qc = Uint8Array.from([2, 4, 0x80 + 18, t.length, ...t, ...q.subarray(1)]);
    const qr = row(LEVEL.quarterPack, qc);
    expect(sums(planOf(LEVEL.quarter, [day], day + DAY), [qr])).toEqual([1000]);
    expect(sums(planOf(LEVEL.quarter, [day, day + 18 * HOUR + QUARTER], day + DAY), [qr])).toEqual([72, 75]);
  });
});
