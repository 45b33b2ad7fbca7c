/**
 * Day packs (rollup level 2): one row per (UTC day, metric, series, key version) holding that
 * day's hour aggregates in one ciphertext, written by compaction (src/compactor.ts). They are
 * derived and replaceable: the hour rows stay the source of truth.
 *
 * A day row's `part` is a label of exactly the hour rows it packs: `c:d:` + the first 128 bits
 * of SHA-256 over the sorted `<hour>:<part>` of those rows. A reader uses a day row only when
 * the label of the hour rows stored now (superseded rows left out, as everywhere) equals it,
 * and then leaves those hour rows out, in one SQL query; late data, a compaction or a recovery
 * changes the set and so the label, and the day is read from its hour rows again until
 * compaction repacks it. The engine also enforces in this process that a (day, series, key
 * version) is counted through at most one day row and never also through hour rows.
 */
import { createHash } from 'node:crypto';
import { COMPACTION_PART_PREFIX } from '../storage/types.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
/** Day rows are written by compaction: their parts carry its prefix (recovery never deletes them). */
export const DAY_PART_PREFIX = `${COMPACTION_PART_PREFIX}d:`;

/** UTC day number of a row's bucket. */
export const DAY_SQL = 'intDiv(toUnixTimestamp64Milli(bucket), 86400000)';
/** The label of the hour rows aggregated (GROUP BY day, metric, series, key_version). */
export const PACK_LABEL_SQL = `concat('${DAY_PART_PREFIX}', substring(hex(SHA256(arrayStringConcat(arraySort(groupArray(concat(toString(intDiv(toUnixTimestamp64Milli(bucket) % 86400000, 3600000)), ':', part))), ','))), 1, 32))`;

/** The same label computed here, from the (bucket, part) of the hour rows packed. */
export function packLabel(rows: { bucket: number; part: string }[]): string {
  const items = rows.map((r) => `${Math.floor((((r.bucket % DAY_MS) + DAY_MS) % DAY_MS) / HOUR_MS)}:${r.part}`).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `${DAY_PART_PREFIX}${createHash('sha256').update(items.join(',')).digest('hex').slice(0, 32).toUpperCase()}`;
}

/** Rows of `range` that no merged row of their group supersedes (compaction). */
export const notSupersededSql = (rollups: string, range: string): string =>
  `(metric, bucket, series, part) NOT IN (SELECT metric, bucket, series, arrayJoin(supersedes) FROM ${rollups} WHERE ${range} AND notEmpty(supersedes))`;
