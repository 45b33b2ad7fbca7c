/**
 * The stored levels of the `rollups` table, by name: minute rows, hour rows, quarter-hour
 * (15-minute) rows for hourly buckets in zones at :30 and :45 (since schema version 7), two
 * kinds of day pack written by compaction for closed UTC days (rollup/days.ts): one row per
 * (UTC day, metric, series, key version) holding that day's hour aggregates (`dayPack`) or its
 * quarter-hour aggregates (`quarterPack`), and hour packs of minute rows (`minutePack`, since
 * schema version 13): one row per (UTC hour, metric, series, key version) holding that hour's
 * minute aggregates, written for derived hours. Code says `LEVEL.hour`, never `1`; SQL in
 * storage/ spells the numbers, next to a comment naming them.
 */
export const LEVEL = { minute: 0, hour: 1, dayPack: 2, quarter: 3, quarterPack: 4, minutePack: 5 } as const;

/** A stored level. */
export type RollupLevel = (typeof LEVEL)[keyof typeof LEVEL];

/** The levels a query reads its buckets from (day packs are read as the rows they hold). */
export type QueryLevel = typeof LEVEL.minute | typeof LEVEL.hour | typeof LEVEL.quarter;

/** A level compaction packs (hours and quarter hours by UTC day, minutes by UTC hour), and the pack level holding it. */
export type PackedLevel = typeof LEVEL.hour | typeof LEVEL.quarter | typeof LEVEL.minute;
export type PackLevel = typeof LEVEL.dayPack | typeof LEVEL.quarterPack | typeof LEVEL.minutePack;

const MINUTE_MS = 60_000;
const QUARTER_MS = 900_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/**
 * What a pack level holds: the rows of `of`, one slot of `slotMs` each, `slots` per unit of
 * `unitMs` (a UTC day, or a UTC hour for minute packs); a pack's bucket is its unit's start.
 */
export const PACKS: Readonly<Record<PackLevel, { of: PackedLevel; slotMs: number; slots: number; unitMs: number }>> = {
  [LEVEL.dayPack]: { of: LEVEL.hour, slotMs: HOUR_MS, slots: 24, unitMs: DAY_MS },
  [LEVEL.quarterPack]: { of: LEVEL.quarter, slotMs: QUARTER_MS, slots: 96, unitMs: DAY_MS },
  [LEVEL.minutePack]: { of: LEVEL.minute, slotMs: MINUTE_MS, slots: 60, unitMs: HOUR_MS },
};

/** Whether a level is a pack (a day pack of hours or of quarter hours, an hour pack of minutes). */
export const isPack = (level: number): level is PackLevel => level === LEVEL.dayPack || level === LEVEL.quarterPack || level === LEVEL.minutePack;

/** The pack level holding rows of `level` (hour: dayPack, quarter: quarterPack, minute: minutePack), else undefined. */
export const packOf = (level: number): PackLevel | undefined =>
  level === LEVEL.hour ? LEVEL.dayPack : level === LEVEL.quarter ? LEVEL.quarterPack : level === LEVEL.minute ? LEVEL.minutePack : undefined;

/** Start of the pack unit (UTC day or hour) holding `t` for rows of `level` or its pack (`level` must be packed or a pack). */
export function packUnitStart(level: number, t: number): number {
  const unit = PACKS[(isPack(level) ? level : packOf(level)!) as PackLevel].unitMs;
  return t - (((t % unit) + unit) % unit);
}

/**
 * Hour and quarter-hour rows derived from minute rows (compaction/derive.ts): a tick writes them
 * itself only for points of UTC hours that ended at least LATE_HOUR_MS before it (late data,
 * process/tick.ts), and minute rows only for the rest; a tick that is more than
 * TICK_COMMIT_MAX_MS old when it would write its processed markers fails and is retried
 * (process/processor.ts); compaction derives an hour once it ended DERIVE_LAG_MS ago — longer
 * than both together plus a clock allowance between nodes, so every minute row a tick wrote for
 * an hour without its hour rows was inserted before compaction reads that hour.
 */
export const LATE_HOUR_MS = 5 * 60_000;
export const TICK_COMMIT_MAX_MS = 5 * 60_000;
export const DERIVE_LAG_MS = LATE_HOUR_MS + TICK_COMMIT_MAX_MS + 60_000;
