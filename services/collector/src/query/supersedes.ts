/**
 * Which stored rollup rows count, decided from what the rows themselves seal, never from SQL.
 *
 * Compaction (src/compactor.ts) replaces rows by a merged row or a day pack that lists them; it
 * seals that list inside the new row (record format 3, src/records.ts) and also stores it in the
 * `supersedes` column, its to-do list, emptied once the listed rows are deleted. A reader opens
 * the rows compaction wrote first (their parts start with `c:`), takes their sealed lists, and
 * then leaves out every row one of them names, whatever the stored columns say:
 *
 * - a row listed only in a stored column (storage added it there) still counts; the listing row
 *   is counted as tampered;
 * - a row a sealed list names while the listing row's stored list does not name it (it was
 *   emptied once the row was deleted: the row came back, a replay) is left out and counted as
 *   tampered; while the stored list names it too (a compaction between its insert and its
 *   deletes) it is left out silently;
 * - a second row with the identity of a row already read (a copy) is left out and counted.
 *
 * An entry names a row of the lister's group (same account, metric, series, key version, level
 * and bucket) or, for a day pack, an hour row of its day (`<hour>/<part>`) or an older pack of
 * the same day (`<part>`): a sealed list cannot name any other row. Rows written before format 3
 * seal no list: for those compaction wrote (merged rows and packs of earlier versions) the stored
 * column is taken as it is (README, "Guarantees and their exact bounds").
 */
import { COMPACTION_PART_PREFIX, type RollupLevel } from '../storage/types.js';
import { HOUR_MS } from './days.js';

/** Rows compaction wrote (merged rows, day packs): the only ones that may replace others. */
export const isCompacted = (part: string): boolean => part.startsWith(COMPACTION_PART_PREFIX);

/** The rows compaction wrote, then the others, each in their order (a list is known before the rows it names are met). */
export function compactedFirst<T extends { p: string }>(rows: readonly T[]): T[] {
  const first: T[] = [];
  const then: T[] = [];
  for (const r of rows) (isCompacted(r.p) ? first : then).push(r);
  return first.length === 0 ? (then.length === rows.length ? (rows as T[]) : then) : first.concat(then);
}

/** A row's identity as far as replacing goes (the metric as stored: one per key version). */
export const rowRef = (level: RollupLevel, bucket: number, metric: string, series: string, keyVersion: number, part: string): string =>
  `${level}\u0000${bucket}\u0000${metric}\u0000${series}\u0000${keyVersion}\u0000${part}`;

const NONE: readonly string[] = [];

export class Supersession {
  /** ref → whether a stored list names it too (a compaction not finished yet). */
  private readonly listed = new Map<string, boolean>();
  /** Rows found tampered with: copies, replays, stored lists naming what the sealed one does not. */
  tampered = 0;
  /** Identities read so far (copies). */
  private readonly seen = new Set<string>();

  /** Whether `ref` was read already (then counted as tampered: a copy is left out). */
  copy(ref: string): boolean {
    if (!this.seen.has(ref)) {
      this.seen.add(ref);
      return false;
    }
    this.tampered++;
    return true;
  }

  /**
   * Notes what an opened row replaces: `sealed` is its sealed list (undefined: a row of an
   * earlier format, whose `stored` list is taken as it is when compaction wrote the row). A row
   * no compaction wrote replaces nothing: a stored list on it is counted as tampered.
   */
  note(part: string, level: RollupLevel, bucket: number, metric: string, series: string, keyVersion: number, sealed: readonly string[] | undefined, stored: readonly string[] = NONE): void {
    if (!isCompacted(part)) {
      if (stored.length > 0) this.tampered++;
      return;
    }
    const list = sealed ?? stored;
    if (list.length === 0) return;
    const pending = stored.length === 0 ? undefined : new Set(stored);
    if (sealed && pending && stored.some((e) => !sealed.includes(e))) this.tampered++; // storage added to the stored list: ignored
    for (const e of list) {
      let ref: string;
      const slash = level === 2 ? e.indexOf('/') : -1;
      if (slash < 0) ref = rowRef(level, bucket, metric, series, keyVersion, e);
      else ref = rowRef(1, bucket + Number(e.slice(0, slash)) * HOUR_MS, metric, series, keyVersion, e.slice(slash + 1));
      this.listed.set(ref, this.listed.get(ref) === true || pending?.has(e) === true);
    }
  }

  /** Whether a row is replaced by one noted (leave it out); a replaced row no stored list names any more is counted as tampered. */
  replaced(ref: string): boolean {
    const pending = this.listed.get(ref);
    if (pending === undefined) return false;
    if (!pending) this.tampered++;
    return true;
  }
}
