/**
 * Day packs: one row per (UTC day, metric, series, key version) holding that day's hour
 * aggregates (level 2) or quarter-hour aggregates (level 4) in one ciphertext, written by
 * compaction (src/compaction/day-packs.ts) for closed days; and minute packs, the same for the
 * minute rows of one derived UTC hour (level 5: the unit is the hour, not the day; below, "day"
 * reads "hour" for them). A pack is a merged row like any other: it lists in `supersedes` the rows it replaces,
 * compaction then deletes them and empties the list (the same crash-safe steps as merging
 * partial rows). So once a day is packed its hour (quarter-hour) rows are gone, and a query reads
 * the pack plus the rows that arrived later (late data). The pack also seals that list (record
 * format 4, in binary; format 3 rows, the list as text, still open): readers leave out the rows it
 * names from the sealed list (rollup/supersedes.ts).
 *
 * `supersedes` entries of a pack: `<slot>/<part>` for a row it holds (an hour pack: the hour
 * row of bucket day + slot hours; a quarter pack: the quarter-hour row of bucket day + slot
 * quarter hours; a minute pack: the minute row of bucket hour + slot minutes), a bare `<part>` for an older pack of the same day and kind it replaces
 * (repack after late data). Parts never contain '/'. Every row compaction writes has its own random part, so an
 * entry names exactly one row.
 */
import type { RollupRef, SupersedingRollup } from '../storage/types.js';
import { COMPACTION_PART_PREFIX } from '../storage/types.js';
import { PACKS, isPack, packUnitStart, type PackLevel } from './levels.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
/** Parts of day packs (compaction's prefix: recovery never deletes them). */
export const DAY_PART_PREFIX = `${COMPACTION_PART_PREFIX}d:`;

/** Start of the UTC day of `t` (epoch ms). */
export const dayOf = (t: number): number => t - (((t % DAY_MS) + DAY_MS) % DAY_MS);

/** A pack's `supersedes` entry for one of the rows it holds. */
export const slotEntry = (pack: PackLevel, bucket: number, part: string): string => `${Math.floor((bucket - packUnitStart(pack, bucket)) / PACKS[pack].slotMs)}/${part}`;

/**
 * What a `supersedes` entry of a row of `level` at `bucket` names: a row of its own group (a bare
 * part), or, for a pack, a row it holds (`<slot>/<part>`: that slot's level and bucket).
 */
export function entryRow(level: number, bucket: number, entry: string): { level: number; bucket: number; part: string } {
  const slash = isPack(level) ? entry.indexOf('/') : -1;
  if (slash < 0) return { level, bucket, part: entry };
  const pack = PACKS[level as PackLevel];
  return { level: pack.of, bucket: bucket + Number(entry.slice(0, slash)) * pack.slotMs, part: entry.slice(slash + 1) };
}

/** The rows a merged row or a day pack replaces, from its `supersedes` list. */
export function supersededRefs(r: SupersedingRollup): RollupRef[] {
  return r.supersedes.map((e) => {
    const { level, bucket, part } = entryRow(r.level, r.bucket, e);
    // a literal, not a spread: a pass builds these for every entry of every pack it finishes (96 per quarter pack)
    return { accountId: r.accountId, level: level as RollupRef['level'], bucket, metric: r.metric, series: r.series, part };
  });
}
