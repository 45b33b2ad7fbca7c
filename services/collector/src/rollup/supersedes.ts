/**
 * Which stored rollup rows count, decided from what the rows themselves seal, never from SQL.
 *
 * Compaction (src/compaction/compactor.ts) replaces rows by a merged row or a day pack that lists them; it
 * seals that list inside the new row (record format 3, src/at-rest/records.ts) and also stores it in the
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
 * and bucket) or, for a day pack, a row of its day it holds (`<slot>/<part>`) or an older pack of
 * the same day and kind (`<part>`): a sealed list cannot name any other row. Rows written before format 3
 * seal no list: for those compaction wrote (merged rows and packs of earlier versions) the stored
 * column is taken as it is (README, "Guarantees and their exact bounds").
 */
import type { OpenedRollup } from '../at-rest/records.js';
import { COMPACTION_PART_PREFIX, type RollupLevel } from '../storage/types.js';
import { dayOf, entryRow } from './days.js';
import { LEVEL } from './levels.js';

/** Rows compaction wrote (merged rows, day packs): the only ones that may replace others. */
export const isCompacted = (part: string): boolean => part.startsWith(COMPACTION_PART_PREFIX);

/** The rows compaction wrote, then the others, each in their order (a list is known before the rows it names are met). */
export function compactedFirst<T extends { p: string }>(rows: readonly T[]): T[] {
  const first: T[] = [];
  const then: T[] = [];
  for (const r of rows) (isCompacted(r.p) ? first : then).push(r);
  return first.length === 0 ? (then.length === rows.length ? (rows as T[]) : then) : first.concat(then);
}

/** A row as far as replacing goes: its scope (the rows a list of its can name) and its place in it (level, bucket, part). */
export interface RowHandle {
  scope: string;
  level: RollupLevel;
  bucket: number;
  part: string;
}

/**
 * The scope of a row: a list can only name rows of its lister's scope. Minute rows: their group
 * (a merged row names rows of its group); hour rows and hour packs, and quarter-hour rows and
 * quarter packs: the UTC day of their series and key version (a merged row names rows of its
 * bucket, a pack the rows it holds and older packs of its day and kind).
 */
const scopeOf = (level: RollupLevel, bucket: number, metric: string, series: string, keyVersion: number): string =>
  level === LEVEL.minute
    ? `${level}\u0000${bucket}\u0000${metric}\u0000${series}\u0000${keyVersion}`
    : `${level === LEVEL.hour || level === LEVEL.dayPack ? 'd' : 'q'}\u0000${dayOf(bucket)}\u0000${metric}\u0000${series}\u0000${keyVersion}`;
const keyOf = (level: RollupLevel, bucket: number, part: string): string => `${level}\u0000${bucket}\u0000${part}`;

const NONE: readonly string[] = [];

interface Lister {
  part: string;
  level: RollupLevel;
  bucket: number;
  /** The sealed list (decoded when first needed); undefined: a row of an earlier format, whose stored list is taken as it is. */
  sealed: OpenedRollup;
  stored: readonly string[];
}

/**
 * The rows of one read. Rows compaction wrote are added first (with `add`), then `replaced` is
 * asked of each row. A list is decoded only where its scope holds another row (outside a
 * compaction's window, and without tampering, every scope holds one row compaction wrote and
 * the rows that came after it): a query over packed days decodes none.
 */
export class Supersession {
  /** Rows found tampered with: copies, replays, stored lists naming what the sealed one does not. */
  tampered = 0;
  private readonly seen = new Set<string>();
  private readonly listers = new Map<string, Lister[]>();
  /** Per scope with more than one row: key → whether a stored list names it too (a compaction not finished yet). */
  private readonly resolved = new Map<string, Map<string, boolean>>();

  /**
   * Adds an opened row; undefined when it is a copy of a row already added (counted as tampered).
   * `opened.supersedes` is its sealed list (undefined for earlier formats), `stored` its stored
   * `supersedes` column. A row no compaction wrote replaces nothing: a stored list on it is
   * counted as tampered; so is a stored entry the sealed list lacks (it is ignored).
   */
  add(
    part: string,
    level: RollupLevel,
    bucket: number,
    metric: string,
    series: string,
    keyVersion: number,
    opened: OpenedRollup,
    stored: readonly string[] = NONE,
  ): RowHandle | undefined {
    const scope = scopeOf(level, bucket, metric, series, keyVersion);
    // One string per row (the row's place, `keyOf`, is built only where a scope holds a list).
    const id = `${scope}\u0001${level}\u0000${bucket}\u0000${part}`;
    if (this.seen.has(id)) {
      this.tampered++;
      return undefined;
    }
    this.seen.add(id);
    if (!isCompacted(part)) {
      if (stored.length > 0) this.tampered++;
      return { scope, level, bucket, part };
    }
    if (stored.length > 0 && opened.sealsList) {
      const sealed = new Set(opened.supersedes);
      if (stored.some((e) => !sealed.has(e))) this.tampered++; // storage added to the stored list: ignored
    }
    if (opened.sealsList || stored.length > 0) {
      const lister: Lister = { part, level, bucket, sealed: opened, stored };
      const list = this.listers.get(scope);
      if (list) list.push(lister);
      else this.listers.set(scope, [lister]);
    }
    return { scope, level, bucket, part };
  }

  /** Whether a row is replaced by one added (leave it out); a replaced row no stored list names any more is counted as tampered. */
  replaced(row: RowHandle): boolean {
    const listers = this.listers.get(row.scope);
    if (!listers) return false;
    if (listers.length === 1) {
      const l = listers[0]!;
      if (l.part === row.part && l.level === row.level && l.bucket === row.bucket) return false;
    }
    let named = this.resolved.get(row.scope);
    if (!named) this.resolved.set(row.scope, (named = resolve(listers)));
    const pending = named.get(keyOf(row.level, row.bucket, row.part));
    if (pending === undefined) return false;
    if (!pending) this.tampered++;
    return true;
  }
}

/** key → pending, for every entry of these listers' lists. */
function resolve(listers: readonly Lister[]): Map<string, boolean> {
  const named = new Map<string, boolean>();
  for (const l of listers) {
    const list = l.sealed.supersedes ?? l.stored;
    const pending = l.stored.length === 0 ? undefined : new Set(l.stored);
    for (const e of list) {
      const r = entryRow(l.level, l.bucket, e);
      const key = keyOf(r.level as RollupLevel, r.bucket, r.part);
      named.set(key, named.get(key) === true || pending?.has(e) === true);
    }
  }
  return named;
}
