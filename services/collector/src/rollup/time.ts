/**
 * Time-zone-aware bucketing with Intl only.
 *
 * A bucket starts where the zone's wall clock reaches a minute / hour / local-midnight
 * boundary, or where a DST jump moves the clock into a new unit (a day whose midnight
 * is skipped starts at the transition). Consequences: a DST day lasts 23 or 25 hours;
 * hour buckets are the real hours starting at local :00 (so in Asia/Kolkata they start
 * at UTC :30, and the repeated hour of a fall-back is two buckets); a 30-minute DST
 * shift (Australia/Lord_Howe) gives a 30- or 90-minute hour bucket. Buckets are named
 * by their start instant in epoch ms, and a bucket runs until the next one starts.
 *
 * Week (ISO: Monday) and month buckets are calendar units made of day buckets: one starts
 * where the day bucket of its first local date (a Monday, the 1st) starts, so it lasts
 * 167/169 hours across a DST change, and months 28–31 days. A first date the zone skipped
 * (Pacific/Apia, 2011-12-30) starts the unit at the next day that exists.
 */
import { RollupError, invalid } from './errors.js';
import { LEVEL, type QueryLevel } from './levels.js';

export type Interval = 'minute' | 'hour' | 'day' | 'week' | 'month';
export const INTERVALS: readonly Interval[] = ['minute', 'hour', 'day', 'week', 'month'];

const MINUTE = 60_000;
const QUARTER = 900_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Fixed wall-clock units; week and month are calendar units of days (CALENDAR). */
const UNIT: Record<string, number> = { minute: MINUTE, hour: HOUR, day: DAY };
const CALENDAR = new Set<string>(['week', 'month']);
/** Instants we accept: the ECMAScript Date range minus a margin for look-behind (a month). */
const MAX_TIME = 8.64e15 - 40 * DAY;
const DEFAULT_BUCKET_LIMIT = 100_000;

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/**
 * Offsets of one hour of UTC: `before` until instant `at`, `after` from it on
 * (before === after when the hour has no transition). Assumes at most one offset
 * change per hour, true for every zone in tzdata.
 */
interface HourInfo {
  before: number;
  after: number;
  at: number;
}

class Zone {
  private readonly hours = new Map<number, HourInfo>();
  private lastKey = NaN;
  private lastInfo: HourInfo = { before: 0, after: 0, at: 0 };

  /** fmt null: a fixed zero offset (UTC), no Intl calls at all. */
  constructor(private readonly fmt: Intl.DateTimeFormat | null) {}

  /** local − UTC in ms at instant `ms`. */
  offset(ms: number): number {
    if (this.fmt === null) return 0;
    const info = this.hour(Math.floor(ms / HOUR));
    return ms < info.at ? info.before : info.after;
  }

  /** The latest transition instant t with lo < t ≤ hi, or null. */
  lastTransition(lo: number, hi: number): number | null {
    if (this.fmt === null) return null;
    for (let h = Math.floor(hi / HOUR); h >= Math.floor(lo / HOUR); h--) {
      const info = this.hour(h);
      if (info.before !== info.after && info.at > lo && info.at <= hi) return info.at;
    }
    return null;
  }

  private hour(h: number): HourInfo {
    if (h === this.lastKey) return this.lastInfo;
    let info = this.hours.get(h);
    if (info === undefined) {
      info = this.computeHour(h);
      if (this.hours.size >= 200_000) this.hours.clear();
      this.hours.set(h, info);
    }
    this.lastKey = h;
    this.lastInfo = info;
    return info;
  }

  /**
   * Intl resolves to whole seconds, so compare the last second before the hour with
   * its last second; if they differ, binary-search the first second with the new
   * offset (≤ 12 Intl calls, once per transition).
   */
  private computeHour(h: number): HourInfo {
    let lo = h * HOUR - 1000; // offset here: before
    let hi = (h + 1) * HOUR - 1000; // offset here: after
    const before = this.raw(lo);
    const after = this.raw(hi);
    if (before === after) return { before, after, at: h * HOUR };
    while (hi - lo > 1000) {
      const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
      if (this.raw(mid) === before) lo = mid;
      else hi = mid;
    }
    return { before, after, at: hi };
  }

  /** Offset at a whole second t, from the zone's wall clock. */
  private raw(t: number): number {
    const f = { year: 0, month: 1, day: 1, hour: 0, minute: 0, second: 0 };
    let bc = false;
    for (const p of this.fmt!.formatToParts(t)) {
      if (p.type === 'era') bc = p.value === 'BC' || p.value === 'B';
      else if (p.type in f) f[p.type as keyof typeof f] = Number(p.value);
    }
    const d = new Date(0);
    d.setUTCFullYear(bc ? 1 - f.year : f.year, f.month - 1, f.day);
    d.setUTCHours(f.hour, f.minute, f.second, 0);
    return d.getTime() - t;
  }
}

const zones = new Map<string, Zone>(); // by canonical name
const aliases = new Map<string, Zone>(); // by the name the caller used
const UTC_NAMES = new Set(['UTC', 'Etc/UTC', 'Etc/GMT', 'GMT', 'Etc/Universal', 'Etc/Zulu', 'Etc/UCT', 'Etc/Greenwich']);

function zoneOrNull(timeZone: unknown): Zone | null {
  if (typeof timeZone !== 'string' || timeZone.length === 0 || timeZone.length > 64) return null;
  const hit = aliases.get(timeZone);
  if (hit) return hit;
  let fmt: Intl.DateTimeFormat;
  try {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      era: 'short',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch {
    return null;
  }
  const canonical = fmt.resolvedOptions().timeZone;
  let zone = zones.get(canonical);
  if (!zone) {
    zone = new Zone(UTC_NAMES.has(canonical) ? null : fmt);
    zones.set(canonical, zone);
  }
  if (aliases.size >= 1000) aliases.clear(); // case variants are valid names too: keep this bounded
  aliases.set(timeZone, zone);
  return zone;
}

function zoneOf(timeZone: string): Zone {
  const z = zoneOrNull(timeZone);
  if (!z) throw new RollupError('invalid_time_zone', `unknown time zone: ${String(timeZone).slice(0, 64)}`);
  return z;
}

function unitOf(interval: Interval): number {
  if (Object.hasOwn(UNIT, interval)) return UNIT[interval]!;
  if (CALENDAR.has(interval)) return DAY;
  throw invalid(`unknown interval: ${String(interval)}`);
}

function checkTime(ms: number): void {
  if (!Number.isFinite(ms) || Math.abs(ms) > MAX_TIME) throw invalid('time out of range');
}

export function isValidTimeZone(tz: unknown): boolean {
  return zoneOrNull(tz) !== null;
}

/**
 * Start of the bucket containing `ms`. Step back from ms to the local unit boundary
 * assuming a constant offset; if a transition lies in between, either the unit began
 * at the transition (the clock jumped into it) or it began before, and we continue
 * from just before the transition.
 */
function startOf(z: Zone, ms: number, unit: number): number {
  for (let guard = 0; guard < 8; guard++) {
    const off = z.offset(ms);
    const local = ms + off;
    const floor = local - mod(local, unit);
    const c = ms - (local - floor);
    if (z.offset(c) === off) return c;
    const t = z.lastTransition(c, ms);
    if (t === null) return c;
    const prevLocal = t - 1 + z.offset(t - 1);
    if (prevLocal - mod(prevLocal, unit) !== floor) return t;
    ms = t - 1;
  }
  throw new Error('bucketStart did not converge'); // would need > 7 transitions in one unit
}

/** Start of the bucket after the one starting at `s`. */
function nextOf(z: Zone, s: number, unit: number): number {
  const step = Math.min(unit, 15 * MINUTE);
  let t = s + unit;
  // bucket longer than nominal (25-hour day): walk forward
  for (let guard = 0; startOf(z, t, unit) <= s; guard++) {
    if (guard > 1000) throw new Error('bucket did not end');
    t += step;
  }
  // bucket shorter than nominal could hide one in between: walk back to the first start after s
  let b = startOf(z, t, unit);
  for (let p = startOf(z, b - 1, unit); p > s; p = startOf(z, b - 1, unit)) b = p;
  return b;
}

/** Local date (days since 1970-01-01 on the zone's wall clock) at instant t. */
const localDay = (z: Zone, t: number): number => Math.floor((t + z.offset(t)) / DAY);

/** First local date of the week (Monday) or month holding local date `d`. */
function calendarFirst(d: number, interval: Interval): number {
  if (interval === 'week') return d - mod(d + 3, 7); // 1970-01-01 was a Thursday
  const date = new Date(d * DAY);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1) / DAY;
}

/** First local date of the next week or month after the one holding local date `d`. */
function calendarNext(d: number, interval: Interval): number {
  if (interval === 'week') return calendarFirst(d, interval) + 7;
  const date = new Date(d * DAY);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1) / DAY;
}

/** Start of the day bucket of local date `d`, or of the first local date after it that exists. */
function dayStart(z: Zone, d: number): number {
  const noon = d * DAY + 12 * HOUR;
  let c = startOf(z, noon - z.offset(noon - z.offset(noon)), DAY);
  for (let guard = 0; localDay(z, c) < d; guard++) {
    if (guard > 3) throw new Error('day start did not converge');
    c = nextOf(z, c, DAY);
  }
  // a date can hold two day buckets (a fall-back onto midnight): the unit starts at the first
  for (let guard = 0; guard < 4; guard++) {
    const prev = startOf(z, c - 1, DAY);
    if (localDay(z, prev) < d) break;
    c = prev;
  }
  return c;
}

/** startOf for any interval. */
function startIn(z: Zone, ms: number, interval: Interval): number {
  if (!CALENDAR.has(interval)) return startOf(z, ms, unitOf(interval));
  return dayStart(z, calendarFirst(localDay(z, startOf(z, ms, DAY)), interval));
}

/** nextOf for any interval. */
function nextIn(z: Zone, s: number, interval: Interval): number {
  if (!CALENDAR.has(interval)) return nextOf(z, s, unitOf(interval));
  let d = localDay(z, s);
  for (let guard = 0; guard < 3; guard++) {
    const n = dayStart(z, calendarNext(d, interval));
    if (n > s) return n;
    d = calendarNext(d, interval);
  }
  throw new Error('bucket did not end');
}

/** Start (epoch ms) of the `interval` bucket containing `ms` in `timeZone`. */
export function bucketStart(ms: number, interval: Interval, timeZone: string): number {
  unitOf(interval);
  const z = zoneOf(timeZone);
  checkTime(ms);
  return startIn(z, ms, interval);
}

/** Start of the bucket following the one containing `ms` (= end of that bucket). */
export function nextBucketStart(ms: number, interval: Interval, timeZone: string): number {
  unitOf(interval);
  const z = zoneOf(timeZone);
  checkTime(ms);
  return nextIn(z, startIn(z, ms, interval), interval);
}

/**
 * All bucket starts covering [from, to): the first is the bucket containing `from`,
 * the last the one containing to − 1. Empty when to ≤ from. Throws
 * RollupError('too_many_buckets') past `limit`.
 */
export function buckets(from: number, to: number, interval: Interval, timeZone: string, limit = DEFAULT_BUCKET_LIMIT): number[] {
  unitOf(interval);
  const z = zoneOf(timeZone);
  checkTime(from);
  checkTime(to);
  const out: number[] = [];
  for (let b = to > from ? startIn(z, from, interval) : to; b < to; b = nextIn(z, b, interval)) {
    if (out.length >= limit) throw new RollupError('too_many_buckets', `more than ${limit} buckets`);
    out.push(b);
  }
  return out;
}

/**
 * Which stored level answers a query exactly, assuming whole buckets are aggregated
 * (bucket b covers [b, next start), as returned by buckets()): LEVEL.hour when every
 * bucket boundary in range, including the end of the last bucket, is on a UTC hour,
 * else LEVEL.quarter when every one is on a UTC quarter hour (zones at :30 and :45:
 * Asia/Kolkata, Asia/Kathmandu, Australia/Adelaide, America/St_Johns), else LEVEL.minute.
 * Minute-level rollups align with local minutes in every zone whose offsets are whole
 * minutes (all of them since 1972).
 */
export function sourceLevel(interval: Interval, timeZone: string, from: number, to: number): QueryLevel {
  unitOf(interval);
  if (interval === 'minute') return LEVEL.minute;
  const starts = buckets(from, to, interval, timeZone);
  const last = starts[starts.length - 1];
  if (last === undefined) return LEVEL.hour;
  starts.push(nextBucketStart(last, interval, timeZone));
  if (starts.every((b) => mod(b, HOUR) === 0)) return LEVEL.hour;
  return starts.every((b) => mod(b, QUARTER) === 0) ? LEVEL.quarter : LEVEL.minute;
}
