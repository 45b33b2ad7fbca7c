/**
 * Which stored rollup rows count, decided from what the rows themselves seal, never from SQL.
 *
 * Compaction (src/compaction/compactor.ts) replaces rows by a merged row or a day pack that lists them; it
 * seals that list inside the new row (record format 3, in binary since format 4: src/at-rest/records.ts) and also stores it in the
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
 * and bucket) or, for a pack, a row of its day (a minute pack: hour) it holds (`<slot>/<part>`) or an older pack of
 * the same day (hour) and kind (`<part>`): a sealed list cannot name any other row. Rows written before format 3
 * seal no list: for those compaction wrote (merged rows and packs of earlier versions) the stored
 * column is taken as it is (README, "Guarantees and their exact bounds").
 */
import type { OpenedRollup } from '../at-rest/records.js';
import { COMPACTION_PART_PREFIX, type RollupLevel } from '../storage/types.js';
import { dayOf, entryRow, HOUR_MS } from './days.js';
import { LEVEL } from './levels.js';

const hourOf = (t: number): number => t - (((t % HOUR_MS) + HOUR_MS) % HOUR_MS);

/** Rows compaction wrote (merged rows, day packs): the only ones that may replace others. */
export const isCompacted = (part: string): boolean => part.startsWith(COMPACTION_PART_PREFIX);

/** The rows compaction wrote, then the others, each in their order (a list is known before the rows it names are met). */
export function compactedFirst<T extends { p: string }>(rows: readonly T[]): T[] {
  const first: T[] = [];
  const then: T[] = [];
  for (const r of rows) (isCompacted(r.p) ? first : then).push(r);
  return first.length === 0 ? (then.length === rows.length ? (rows as T[]) : then) : first.concat(then);
}

/**
 * The rows of one scope (a list can only name rows of its lister's scope). Minute rows and
 * minute packs: the UTC hour of their series and key version; hour rows and hour packs, and
 * quarter-hour rows and quarter packs: the UTC day (a merged row names rows of its bucket, a
 * pack the rows it holds and older packs of its hour or day and kind).
 */
interface Scope {
  /** 0: minute rows and minute packs (`at`: their UTC hour); 1: hour rows and hour packs, 2: quarter-hour rows and quarter packs (`at`: their UTC day). */
  kind: number;
  at: number;
  metric: string;
  keyVersion: number;
  /** The first row added (most scopes hold one row), then part → (level, bucket) pairs of the others: a second row with the same three is a copy. */
  part: string;
  level: RollupLevel;
  bucket: number;
  more: Map<string, number[]> | undefined;
  /** The rows here that list others (compaction wrote them). */
  listers: Lister[] | undefined;
  /** Once a row here is asked about while it holds another lister: key → whether a stored list names it too (a compaction not finished yet). */
  resolved: Map<string, boolean> | undefined;
  /** Whether a day pack of this scope was counted (RowReader: one pack per day and kind). */
  packed: boolean;
}

/** A row as far as replacing goes: its scope and its place in it (level, bucket, part). */
export interface RowHandle {
  scope: Scope;
  level: RollupLevel;
  bucket: number;
  part: string;
}

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
 * the rows that came after it): a query over packed days decodes none. A scope is found by
 * series, then time, then kind, metric and key version, and a copy by part within its scope:
 * no string is built per row (a query adds tens of thousands).
 */
export class Supersession {
  /** Rows found tampered with: copies, replays, stored lists naming what the sealed one does not. */
  tampered = 0;
  /** series → scope time → the scopes of that series and time (kinds, metrics, key versions: mostly one). */
  private readonly scopes = new Map<string, Map<number, Scope[]>>();

  /** The scope of a row, with the row added to it; undefined when it holds the row already (a copy). */
  private scopeOf(level: RollupLevel, bucket: number, metric: string, series: string, keyVersion: number, part: string): Scope | undefined {
    const kind = level === LEVEL.minute || level === LEVEL.minutePack ? 0 : level === LEVEL.hour || level === LEVEL.dayPack ? 1 : 2;
    const at = kind === 0 ? hourOf(bucket) : dayOf(bucket);
    let byTime = this.scopes.get(series);
    if (!byTime) this.scopes.set(series, (byTime = new Map()));
    const here = byTime.get(at);
    if (here) for (const sc of here) if (sc.kind === kind && sc.keyVersion === keyVersion && sc.metric === metric) return addRow(sc, level, bucket, part);
    const sc: Scope = { kind, at, metric, keyVersion, part, level, bucket, more: undefined, listers: undefined, resolved: undefined, packed: false };
    if (here) here.push(sc);
    else byTime.set(at, [sc]);
    return sc;
  }

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
    const scope = this.scopeOf(level, bucket, metric, series, keyVersion, part);
    if (!scope) {
      this.tampered++; // a copy
      return undefined;
    }
    if (!isCompacted(part)) {
      if (stored.length > 0) this.tampered++;
      return { scope, level, bucket, part };
    }
    if (stored.length > 0 && opened.sealsList) {
      const sealed = new Set(opened.supersedes);
      if (stored.some((e) => !sealed.has(e))) this.tampered++; // storage added to the stored list: ignored
    }
    if (opened.sealsList || stored.length > 0) (scope.listers ??= []).push({ part, level, bucket, sealed: opened, stored });
    return { scope, level, bucket, part };
  }

  /** Whether a row is replaced by one added (leave it out); a replaced row no stored list names any more is counted as tampered. */
  replaced(row: RowHandle): boolean {
    const scope = row.scope;
    const listers = scope.listers;
    if (!listers) return false;
    if (listers.length === 1) {
      const l = listers[0]!;
      if (l.part === row.part && l.level === row.level && l.bucket === row.bucket) return false;
    }
    const named = (scope.resolved ??= resolve(listers));
    const pending = named.get(keyOf(row.level, row.bucket, row.part));
    if (pending === undefined) return false;
    if (!pending) this.tampered++;
    return true;
  }

  /** Whether this is the first day pack of its UTC day and kind asked about (compaction leaves one; a second is not trusted). */
  firstPack(row: RowHandle): boolean {
    if (row.scope.packed) return false;
    row.scope.packed = true;
    return true;
  }
}

/** Adds a row to a scope it is not the first of: the scope, or undefined when it holds the row already. */
function addRow(sc: Scope, level: RollupLevel, bucket: number, part: string): Scope | undefined {
  if (sc.part === part && sc.level === level && sc.bucket === bucket) return undefined;
  const same = (sc.more ??= new Map()).get(part);
  if (!same) sc.more.set(part, [level, bucket]);
  else {
    for (let i = 0; i < same.length; i += 2) if (same[i] === level && same[i + 1] === bucket) return undefined;
    same.push(level, bucket);
  }
  return sc;
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
