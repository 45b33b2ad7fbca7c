/**
 * Day packs (rollup level 2): one row per (UTC day, metric, series, key version) holding that
 * day's hour aggregates in one ciphertext, written by compaction (src/compaction/compactor.ts) for closed
 * days. A pack is a merged row like any other: it lists in `supersedes` the rows it replaces,
 * compaction then deletes them and empties the list (the same crash-safe steps as merging
 * partial rows). So once a day is packed its hour rows are gone, and a query reads the pack
 * plus the hour rows that arrived later (late data). The pack also seals that list (record
 * format 3): readers leave out the rows it names from the sealed list (rollup/supersedes.ts).
 *
 * `supersedes` entries of a pack: `<hour>/<part>` for an hour row (level 1, bucket = day +
 * hour), a bare `<part>` for an older pack of the same day it replaces (repack after late
 * data). Parts never contain '/'. Every row compaction writes has its own random part, so an
 * entry names exactly one row.
 */
import type { RollupRef, SupersedingRollup } from '../storage/types.js';
import { COMPACTION_PART_PREFIX } from '../storage/types.js';
import { LEVEL } from './levels.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
/** Parts of day packs (compaction's prefix: recovery never deletes them). */
export const DAY_PART_PREFIX = `${COMPACTION_PART_PREFIX}d:`;

/** Start of the UTC day of `t` (epoch ms). */
export const dayOf = (t: number): number => t - (((t % DAY_MS) + DAY_MS) % DAY_MS);

/** A pack's `supersedes` entry for one of its hour rows. */
export const hourEntry = (bucket: number, part: string): string => `${Math.floor((bucket - dayOf(bucket)) / HOUR_MS)}/${part}`;

/** The rows a merged row or a day pack replaces, from its `supersedes` list. */
export function supersededRefs(r: SupersedingRollup): RollupRef[] {
  const base = { accountId: r.accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series };
  return r.supersedes.map((e) => {
    const slash = r.level === LEVEL.dayPack ? e.indexOf('/') : -1;
    if (slash < 0) return { ...base, part: e };
    return { ...base, level: LEVEL.hour, bucket: r.bucket + Number(e.slice(0, slash)) * HOUR_MS, part: e.slice(slash + 1) };
  });
}
