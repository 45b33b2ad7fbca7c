/**
 * The stored levels of the `rollups` table, by name: minute rows, hour rows, day packs (one
 * row per UTC day, metric, series and key version holding that day's hour aggregates, written
 * by compaction: rollup/days.ts) and quarter-hour (15-minute) rows, for hourly buckets in zones
 * at :30 and :45 (since schema version 7). Code says `LEVEL.hour`, never `1`; SQL in storage/
 * spells the numbers, next to a comment naming them.
 */
export const LEVEL = { minute: 0, hour: 1, dayPack: 2, quarter: 3 } as const;

/** A stored level. */
export type RollupLevel = (typeof LEVEL)[keyof typeof LEVEL];

/** The levels a query reads its buckets from (day packs are read as the hour rows they hold). */
export type QueryLevel = typeof LEVEL.minute | typeof LEVEL.hour | typeof LEVEL.quarter;
