import { describe, expect, it } from 'vitest';
import { RollupError } from '../src/rollup/errors.js';
import {
  type Interval,
  bucketStart,
  buckets,
  isValidTimeZone,
  nextBucketStart,
  sourceLevel,
} from '../src/rollup/time.js';
import { LEVEL } from '../src/rollup/levels.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';


const MIN = 60_000;
const H = 3_600_000;
const D = 86_400_000;
const utc = (s: string): number => Date.parse(s);
const hours = (ms: number): number => ms / H;

/** Independent reference: the zone's wall clock via a fresh Intl formatter. */
const fmts = new Map<string, Intl.DateTimeFormat>();
function wall(ms: number, tz: string): { date: string; h: number; m: number; s: number } {
  let f = fmts.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: tz, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
    fmts.set(tz, f);
  }
  const p = Object.fromEntries(f.formatToParts(ms).map((x) => [x.type, x.value]));
  return { date: `${p.year}-${p.month}-${p.day}`, h: Number(p.hour), m: Number(p.minute), s: Number(p.second) };
}
/** The wall-clock unit an instant falls in, as a comparable key. */
function unitKey(ms: number, interval: Interval, tz: string): string {
  const w = wall(ms, tz);
  if (interval === 'month') return w.date.slice(0, 7);
  if (interval === 'week') {
    // the date of that wall date's Monday (ISO weeks start on Monday)
    const d = new Date(`${w.date}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    return d.toISOString().slice(0, 10);
  }
  return interval === 'day' ? w.date : interval === 'hour' ? `${w.date} ${w.h}` : `${w.date} ${w.h}:${w.m}`;
}

/** Checks buckets() against the reference wall clock. */
function checkBuckets(from: number, to: number, interval: Interval, tz: string, rnd: () => number): number[] {
  const list = buckets(from, to, interval, tz);
  expect(list.length).toBeGreaterThan(0);
  expect(list[0]!).toBeLessThanOrEqual(from);
  expect(list[list.length - 1]!).toBeLessThan(to);
  const ends = [...list.slice(1), nextBucketStart(list[list.length - 1]!, interval, tz)];
  expect(ends[ends.length - 1]!).toBeGreaterThanOrEqual(to);
  const probe = interval === 'minute' ? 15_000 : interval === 'hour' ? 15 * MIN : H;
  list.forEach((b, i) => {
    const end = ends[i]!;
    expect(end).toBeGreaterThan(b);
    expect(bucketStart(b, interval, tz)).toBe(b);
    expect(bucketStart(end - 1, interval, tz)).toBe(b);
    // a boundary is where the wall-clock unit changes, or where the clock falls back
    // onto an aligned time (the repeated hour); the unit is constant inside a bucket
    const w = wall(b, tz);
    const aligned = w.s === 0 && (interval === 'minute' || (w.m === 0 && (interval === 'hour' || (w.h === 0 && interval === 'day'))));
    expect(unitKey(b - 1, interval, tz) !== unitKey(b, interval, tz) || aligned).toBe(true);
    const key = unitKey(b, interval, tz);
    for (let t = b; t < end; t += probe) expect(unitKey(t, interval, tz)).toBe(key);
    expect(unitKey(end - 1, interval, tz)).toBe(key);
  });
  for (let k = 0; k < 200; k++) {
    const ms = from + Math.floor(rnd() * (to - from));
    const expected = list.filter((b) => b <= ms).pop();
    expect(bucketStart(ms, interval, tz)).toBe(expected);
  }
  return list;
}

describe('bucketStart / buckets', () => {
  it('UTC is plain flooring', () => {
    const t = utc('2026-06-15T13:47:29.123Z');
    expect(bucketStart(t, 'minute', 'UTC')).toBe(utc('2026-06-15T13:47:00Z'));
    expect(bucketStart(t, 'hour', 'UTC')).toBe(utc('2026-06-15T13:00:00Z'));
    expect(bucketStart(t, 'day', 'UTC')).toBe(utc('2026-06-15T00:00:00Z'));
    expect(bucketStart(-1, 'day', 'Etc/UTC')).toBe(-D);
    expect(buckets(utc('2026-06-01T00:00Z'), utc('2026-06-03T00:00Z'), 'day', 'UTC')).toEqual([utc('2026-06-01T00:00Z'), utc('2026-06-02T00:00Z')]);
    expect(buckets(5, 5, 'hour', 'UTC')).toEqual([]);
    expect(buckets(utc('2026-06-01T00:30Z'), utc('2026-06-01T02:00:00.001Z'), 'hour', 'UTC')).toHaveLength(3);
  });

  it('Europe/Berlin: 2026-03-29 has 23 hours, 2026-10-25 has 25', () => {
    const days = buckets(utc('2026-03-28T12:00Z'), utc('2026-03-30T12:00Z'), 'day', 'Europe/Berlin');
    expect(days).toEqual([utc('2026-03-27T23:00Z'), utc('2026-03-28T23:00Z'), utc('2026-03-29T22:00Z')]);
    expect(hours(days[2]! - days[1]!)).toBe(23);
    const fall = utc('2026-10-25T12:00Z');
    const start = bucketStart(fall, 'day', 'Europe/Berlin');
    expect(start).toBe(utc('2026-10-24T22:00Z'));
    expect(hours(nextBucketStart(fall, 'day', 'Europe/Berlin') - start)).toBe(25);
    // hour buckets of those days: 23 and 25 real hours, each starting on a UTC hour
    expect(buckets(utc('2026-03-28T23:00Z'), utc('2026-03-29T22:00Z'), 'hour', 'Europe/Berlin')).toHaveLength(23);
    expect(buckets(utc('2026-10-24T22:00Z'), utc('2026-10-25T23:00Z'), 'hour', 'Europe/Berlin')).toHaveLength(25);
    // 01:30 CET and 03:30 CEST are consecutive hour buckets
    expect(bucketStart(utc('2026-03-29T00:30Z'), 'hour', 'Europe/Berlin')).toBe(utc('2026-03-29T00:00Z'));
    expect(bucketStart(utc('2026-03-29T01:30Z'), 'hour', 'Europe/Berlin')).toBe(utc('2026-03-29T01:00Z'));
  });

  it('America/New_York: 2026-03-08 has 23 hours, 2026-11-01 has 25, repeated 01:00 is two hour buckets', () => {
    const tz = 'America/New_York';
    expect(bucketStart(utc('2026-03-08T20:00Z'), 'day', tz)).toBe(utc('2026-03-08T05:00Z'));
    expect(nextBucketStart(utc('2026-03-08T20:00Z'), 'day', tz)).toBe(utc('2026-03-09T04:00Z'));
    expect(bucketStart(utc('2026-11-01T20:00Z'), 'day', tz)).toBe(utc('2026-11-01T04:00Z'));
    expect(nextBucketStart(utc('2026-11-01T20:00Z'), 'day', tz)).toBe(utc('2026-11-02T05:00Z'));
    // 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST
    expect(buckets(utc('2026-11-01T04:00Z'), utc('2026-11-01T08:00Z'), 'hour', tz)).toEqual(
      ['04', '05', '06', '07'].map((h) => utc(`2026-11-01T${h}:00Z`)),
    );
    expect(bucketStart(utc('2026-11-01T06:30Z'), 'hour', tz)).toBe(utc('2026-11-01T06:00Z'));
  });

  it('Asia/Kolkata (+05:30) and Asia/Kathmandu (+05:45) hours start at local :00', () => {
    const t = utc('2026-01-01T10:10Z'); // 15:40 IST, 15:55 NPT
    expect(bucketStart(t, 'hour', 'Asia/Kolkata')).toBe(utc('2026-01-01T09:30Z'));
    expect(bucketStart(t, 'hour', 'Asia/Kathmandu')).toBe(utc('2026-01-01T09:15Z'));
    expect(bucketStart(t, 'day', 'Asia/Kolkata')).toBe(utc('2025-12-31T18:30Z'));
    expect(bucketStart(t, 'day', 'Asia/Kathmandu')).toBe(utc('2025-12-31T18:15Z'));
    expect(bucketStart(t, 'minute', 'Asia/Kathmandu')).toBe(utc('2026-01-01T10:10Z'));
    const hs = buckets(utc('2026-01-01T00:00Z'), utc('2026-01-02T00:00Z'), 'hour', 'Asia/Kolkata');
    expect(hs).toHaveLength(25);
    expect(hs.every((b) => b % H === 30 * MIN)).toBe(true);
  });

  it('America/Santiago skips midnight: 2026-09-06 starts at 01:00 local', () => {
    const tz = 'America/Santiago';
    expect(bucketStart(utc('2026-09-06T15:00Z'), 'day', tz)).toBe(utc('2026-09-06T04:00Z'));
    expect(nextBucketStart(utc('2026-09-06T15:00Z'), 'day', tz)).toBe(utc('2026-09-07T03:00Z'));
    expect(nextBucketStart(utc('2026-09-05T15:00Z'), 'day', tz)).toBe(utc('2026-09-06T04:00Z'));
  });

  it('Australia/Lord_Howe 30-minute DST: 90- and 30-minute hour buckets', () => {
    const tz = 'Australia/Lord_Howe';
    expect(bucketStart(utc('2026-04-04T15:20Z'), 'hour', tz)).toBe(utc('2026-04-04T14:00Z'));
    expect(nextBucketStart(utc('2026-04-04T14:00Z'), 'hour', tz)).toBe(utc('2026-04-04T15:30Z'));
    expect(bucketStart(utc('2026-10-03T15:45Z'), 'hour', tz)).toBe(utc('2026-10-03T15:30Z'));
    expect(nextBucketStart(utc('2026-10-03T15:30Z'), 'hour', tz)).toBe(utc('2026-10-03T16:00Z'));
  });

  it('matches the reference wall clock around transitions in many zones', () => {
    const rnd = mulberry32(3);
    const zones = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Asia/Kathmandu', 'America/Santiago', 'Australia/Lord_Howe', 'Europe/London', 'Pacific/Chatham', 'America/St_Johns'];
    for (const tz of zones) {
      checkBuckets(utc('2026-01-01T00:00Z'), utc('2027-01-01T00:00Z'), 'day', tz, rnd);
      for (const month of ['03', '04', '09', '10', '11']) {
        checkBuckets(utc(`2026-${month}-01T00:00Z`), utc(`2026-${month}-10T00:00Z`), 'hour', tz, rnd);
      }
      checkBuckets(utc('2026-03-29T00:00Z'), utc('2026-03-29T03:00Z'), 'minute', tz, rnd);
    }
    // historical: 1996 Europe/London, 1900s pre-standard-time offsets, a day Samoa skipped
    checkBuckets(utc('1996-03-25T00:00Z'), utc('1996-04-05T00:00Z'), 'hour', 'Europe/London', rnd);
    checkBuckets(utc('1930-01-01T00:00Z'), utc('1938-01-01T00:00Z'), 'day', 'Europe/Amsterdam', rnd);
    const apia = checkBuckets(utc('2011-12-28T00:00Z'), utc('2012-01-02T00:00Z'), 'day', 'Pacific/Apia', rnd);
    expect(apia.map((b) => wall(b, 'Pacific/Apia').date)).not.toContain('2011-12-30');
  });
});

describe('week and month buckets', () => {
  const rnd = mulberry32(12);
  it('start at local midnight of the Monday / the 1st, across DST: 167/169-hour weeks, 28–31-day months', () => {
    const tz = 'Europe/Berlin';
    const weeks = checkBuckets(utc('2026-03-18T00:00Z'), utc('2026-04-08T00:00Z'), 'week', tz, rnd);
    expect(weeks.map((b) => new Date(b).toISOString())).toEqual(['2026-03-15T23:00:00.000Z', '2026-03-22T23:00:00.000Z', '2026-03-29T22:00:00.000Z', '2026-04-05T22:00:00.000Z']);
    expect(hours(weeks[2]! - weeks[1]!)).toBe(167); // 2026-03-29: 23 h
    const fall = bucketStart(utc('2026-10-22T12:00Z'), 'week', tz);
    expect(hours(nextBucketStart(fall, 'week', tz) - fall)).toBe(169); // 2026-10-25: 25 h
    const ny = bucketStart(utc('2026-11-01T12:00Z'), 'week', 'America/New_York');
    expect(new Date(ny).toISOString()).toBe('2026-10-26T04:00:00.000Z');
    expect(hours(nextBucketStart(ny, 'week', 'America/New_York') - ny)).toBe(169);
    const months = checkBuckets(utc('2026-01-15T00:00Z'), utc('2027-01-15T00:00Z'), 'month', tz, rnd);
    expect(months).toHaveLength(13);
    expect(months.map((b) => wall(b, tz))).toEqual(months.map((b) => ({ date: wall(b, tz).date.slice(0, 8) + '01', h: 0, m: 0, s: 0 })));
    const lengths = months.map((b, i) => hours((months[i + 1] ?? nextBucketStart(b, 'month', tz)) - b) / 24);
    expect(lengths.slice(0, 12)).toEqual([31, 28, 31 - 1 / 24, 30, 31, 30, 31, 31, 30, 31 + 1 / 24, 30, 31]);
  });

  it('ISO week 1 starting in the previous December; month and week in UTC', () => {
    // 2026-01-01 is a Thursday: ISO week 1 of 2026 starts Monday 2025-12-29
    expect(bucketStart(utc('2026-01-01T10:00Z'), 'week', 'UTC')).toBe(utc('2025-12-29T00:00Z'));
    expect(bucketStart(utc('2025-12-31T23:59:59.999Z'), 'month', 'UTC')).toBe(utc('2025-12-01T00:00Z'));
    expect(bucketStart(utc('2026-01-01T00:00Z'), 'month', 'UTC')).toBe(utc('2026-01-01T00:00Z'));
    expect(bucketStart(utc('2025-12-29T00:00Z') - 1, 'week', 'UTC')).toBe(utc('2025-12-22T00:00Z'));
    checkBuckets(utc('2025-11-20T00:00Z'), utc('2026-02-10T00:00Z'), 'week', 'UTC', rnd);
    checkBuckets(utc('2024-01-01T00:00Z'), utc('2026-01-01T00:00Z'), 'month', 'UTC', rnd); // 2024: 29 Feb
  });

  it('matches the reference wall clock in many zones, and a week with a day Samoa skipped', () => {
    const zones = ['America/New_York', 'Asia/Kolkata', 'Asia/Kathmandu', 'America/Santiago', 'Australia/Lord_Howe', 'Pacific/Chatham', 'America/St_Johns'];
    for (const tz of zones) {
      checkBuckets(utc('2026-01-01T00:00Z'), utc('2027-01-01T00:00Z'), 'week', tz, rnd);
      checkBuckets(utc('2026-01-01T00:00Z'), utc('2027-01-01T00:00Z'), 'month', tz, rnd);
    }
    const apia = checkBuckets(utc('2011-12-20T00:00Z'), utc('2012-01-10T00:00Z'), 'week', 'Pacific/Apia', rnd);
    expect(apia.map((b) => wall(b, 'Pacific/Apia').date)).toEqual(['2011-12-19', '2011-12-26', '2012-01-02', '2012-01-09']);
    expect(hours(apia[2]! - apia[1]!)).toBe(6 * 24); // 2011-12-30 never happened there
  });
});

describe('sourceLevel', () => {
  const from = utc('2026-03-01T00:00Z');
  const to = utc('2026-11-30T00:00Z');
  const cases: [Interval, string, number][] = [
    // hour level when every boundary is a UTC hour
    ['hour', 'UTC', LEVEL.hour],
    ['day', 'UTC', LEVEL.hour],
    ['day', 'Europe/Berlin', LEVEL.hour],
    ['week', 'Europe/Berlin', LEVEL.hour],
    ['month', 'America/New_York', LEVEL.hour],
    ['hour', 'America/New_York', LEVEL.hour],
    // quarter-hour level for :30/:45 zones and 30-minute DST
    ['hour', 'Asia/Kolkata', LEVEL.quarter],
    ['day', 'Asia/Kolkata', LEVEL.quarter],
    ['hour', 'Asia/Kathmandu', LEVEL.quarter],
    ['day', 'Asia/Kathmandu', LEVEL.quarter],
    ['month', 'Asia/Kolkata', LEVEL.quarter],
    ['hour', 'Australia/Lord_Howe', LEVEL.quarter],
    ['hour', 'America/St_Johns', LEVEL.quarter],
    ['day', 'Australia/Lord_Howe', LEVEL.quarter], // +10:30 / +11: midnights never on a UTC hour, always on a quarter
    // minute level for minute buckets, in every zone
    ['minute', 'UTC', LEVEL.minute],
    ['minute', 'Asia/Kathmandu', LEVEL.minute],
  ];
  it.each(cases)('%s buckets in %s: level %i', (interval, zone, level) => {
    expect(sourceLevel(interval, zone, from, to)).toBe(level);
  });
});

describe('validation', () => {
  it('time zones', () => {
    expect(isValidTimeZone('Europe/Berlin')).toBe(true);
    expect(isValidTimeZone('europe/berlin')).toBe(true);
    expect(isValidTimeZone('UTC')).toBe(true);
    for (const bad of ['Mars/Olympus', '', 'x'.repeat(100), 42, null, undefined]) expect(isValidTimeZone(bad)).toBe(false);
    expect(() => bucketStart(0, 'day', 'Mars/Olympus')).toThrow(expect.objectContaining({ code: 'invalid_time_zone' }));
  });
  it('bad arguments and limits', () => {
    expect(() => bucketStart(NaN, 'day', 'UTC')).toThrow(RollupError);
    expect(() => bucketStart(9e15, 'day', 'UTC')).toThrow(RollupError);
    expect(() => bucketStart(0, 'year' as never, 'UTC')).toThrow(RollupError);
    expect(() => bucketStart(0, 'toString' as never, 'UTC')).toThrow(RollupError);
    expect(() => buckets(0, 400 * D, 'minute', 'UTC')).toThrow(expect.objectContaining({ code: 'too_many_buckets' }));
    expect(buckets(0, 10 * D, 'minute', 'UTC', 20_000)).toHaveLength(14_400);
  });
});

