/**
 * Opening stored rollup rows: the one path every reader of rollup ciphertext goes through — the
 * query engine and `GET /v1/metrics` (RowReader), compaction's merges and day packs and its
 * check of unfinished lists (`openRow`), `verify` (`decryptsUnder`). What a reader may count,
 * decided here once:
 *
 * - a row opens only under its identity (records.ts: account, level, bucket, metric, series,
 *   tag pseudonyms, key version, part) and the data key of its key version; one that does not
 *   is counted in `failed` and never used;
 * - a sealed `supersedes` list opens only on a row compaction wrote (part `c:`);
 * - a copy of a row already read, and a row a merged row or day pack replaces, are left out
 *   from the sealed lists (supersedes.ts), copies and replays counted in `tampered`;
 * - a (UTC day, metric, series, key version) is counted through at most one day pack of each
 *   kind (hours, quarter hours), a (UTC hour, metric, series, key version) through at most one
 *   minute pack: compaction leaves one (an older pack is listed by the newer), a second is not
 *   trusted (`failed`);
 * - a day pack's slots are read with `cells`: a malformed pack counts its slots before the
 *   fault (like separate rows) and is counted in `failed`.
 *
 * The rows compaction wrote are opened first and held until every sealed list is known, then
 * each row that counts is yielded once by `RowReader.rows` (or its aggregates, a day pack's
 * slots one by one, by `RowReader.cells`); compaction is also told which rows were replaced
 * (it deletes them) and which failed.
 */
import { joinPseudonyms, openRollupJoined, openRollupRow, type OpenedRollup, type RollupIdentity } from '../at-rest/records.js';
import { PackSlots } from './pack.js';
import { RollupError } from './errors.js';
import type { StoredRow } from '../storage/queries.js';
import type { StoredRollup } from '../storage/types.js';
import { LEVEL, PACKS, isPack, type RollupLevel } from './levels.js';
import { compactedFirst, isCompacted, Supersession, type RowHandle } from './supersedes.js';

export { LEVEL, type RollupLevel } from './levels.js';

/** A stored row as the query side selects it, and its reader (storage/queries.ts). */
export { countStoredRows as countRows, readStoredRows as readRows, type StoredRow } from '../storage/queries.js';

/** A row opened that may be used: a sealed list only on a row compaction wrote (else not what compaction writes). */
const usable = (o: OpenedRollup | null, part: string): OpenedRollup | null => (o && (!o.sealsList || isCompacted(part)) ? o : null);

/**
 * Opens one stored rollup row under its identity and the data key of its key version: its
 * payload (aggregate or day pack) and sealed list. Null when it does not open (wrong key, moved,
 * tampered, malformed) or seals a list without being a row compaction wrote.
 */
export const openRow = (dataKey: Uint8Array, id: RollupIdentity, sealed: Uint8Array): OpenedRollup | null =>
  usable(openRollupRow(dataKey, id, sealed), id.part);

/**
 * Whether `key` decrypts a stored row under its identity at all, whatever a reader would make of
 * it (`verify` after a shred: authenticated, so never a false positive).
 */
export const decryptsUnder = (key: Uint8Array, id: RollupIdentity, sealed: Uint8Array): boolean => openRollupRow(key, id, sealed) !== null;

/** A row compaction read (storage/rollups.ts) as the reader takes it, with the row itself (`r`). */
export interface CompactionRow extends StoredRow {
  r: StoredRollup;
}
export const compactionRow = (r: StoredRollup): CompactionRow => ({
  l: r.level, b: r.bucket, v: r.keyVersion, s: r.series, a: r.agg, k: joinPseudonyms(r.tagKeys), t: joinPseudonyms(r.tagValues), m: r.metric, p: r.part, u: r.supersedes, r,
});

/** A row that counts: opened, not a copy, not replaced. */
export interface OpenedRow<R extends StoredRow = StoredRow> {
  row: R;
  /** The level it opened at. */
  level: RollupLevel;
  /** The metric pseudonym it opened under. */
  metric: string;
  /** Its aggregate (minute, hour, quarter-hour rows) or day pack (hour and quarter packs). */
  payload: Uint8Array;
}

/** One aggregate that counts: a row's own (at its bucket), or one slot of a day pack (at the slot's start). */
export interface Cell<R extends StoredRow = StoredRow> {
  o: OpenedRow<R>;
  t: number;
  bytes: Uint8Array;
}

/** Told of one cell by `RowReader.eachCell`: its row, its time, and its aggregate `bytes[start, end)`. */
export type CellVisitor<R extends StoredRow = StoredRow> = (o: OpenedRow<R>, t: number, bytes: Uint8Array, start: number, end: number) => void;

export interface RowReaderOptions<R extends StoredRow = StoredRow> {
  accountId: string;
  /** The data key of a key version (undefined: the row fails). */
  dataKey(version: number): Uint8Array | undefined;
  /** The level a row opens at; 'skip' leaves it out uncounted, 'fail' counts it as failed. */
  level(row: R): RollupLevel | 'skip' | 'fail';
  /** The metric pseudonym a row opens under (default: as stored; undefined: the row fails). */
  metric?(row: R): string | undefined;
  /** Asked of each opened row that is not a copy: false counts it as failed (the engine: tags outside the filter). */
  accept?(row: R): boolean;
  /** Told of each row counted in `failed` (compaction leaves a day whose pack failed as it is). */
  failed?(row: R): void;
  /** Told of each row left out because a row read replaces it (compaction lists it with the rows it merges, and deletes it). */
  replaced?(row: R): void;
}

interface Held<R extends StoredRow> extends OpenedRow<R> {
  h: RowHandle;
}

/**
 * Reads the rows of one query, listing or compaction step: construct one per read. The only
 * iterator over stored rollup rows: the engine (query/merge.ts), the 24-hour volume
 * (query/catalog.ts) and compaction's merges and day packs (compaction/merge.ts, day-packs.ts)
 * all take the rows that count, and the day packs' slots, from here.
 */
export class RowReader<R extends StoredRow = StoredRow> {
  /** Rows that did not open, or that a reader must not use. */
  failed = 0;
  private readonly supersession = new Supersession();
  private readonly identity: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>;

  constructor(private readonly o: RowReaderOptions<R>) {
    this.identity = { accountId: o.accountId, level: LEVEL.minute, bucket: 0, metric: '', series: '', keyVersion: 0, part: '' };
  }

  /** Copies, replays and forged stored lists found (left out). */
  get tampered(): number {
    return this.supersession.tampered;
  }

  /** Each row of `stored` that counts, once (a day pack whole). */
  *rows(stored: readonly R[]): Generator<OpenedRow<R>> {
    const held: Held<R>[] = [];
    let holding = true;
    for (const row of compactedFirst(stored)) {
      const opened = this.open(row);
      if (!opened) continue;
      if (holding && isCompacted(row.p)) {
        held.push(opened);
        continue;
      }
      if (holding) {
        holding = false;
        for (const o of held) if (this.counts(o)) yield o;
        held.length = 0;
      }
      if (this.counts(opened)) yield opened;
    }
    for (const o of held) if (this.counts(o)) yield o;
  }

  /**
   * Each aggregate of `stored` that counts, once: a row's own, and each slot (hour, quarter
   * hour) of a day pack inside [from, to). A malformed pack yields its slots before the fault
   * (like separate rows) and is counted in `failed`.
   */
  *cells(stored: readonly R[], from = -Infinity, to = Infinity): Generator<Cell<R>> {
    const cells: Cell<R>[] = [];
    // the cells of one row at a time: collected by eachCell, yielded in order
    for (const o of this.rows(stored)) {
      this.rowCells(o, from, to, (o, t, bytes, start, end) => cells.push({ o, t, bytes: start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end) }));
      yield* cells;
      cells.length = 0;
    }
  }

  /**
   * `cells` without an object or a view per cell, for the query engine's hot loop: `visit` is
   * called with each cell's row, time and aggregate `bytes[start, end)` (a day pack's slot is a
   * range of its payload). A RollupError thrown by `visit` is its own (never counted here).
   */
  eachCell(stored: readonly R[], from: number, to: number, visit: CellVisitor<R>): void {
    for (const o of this.rows(stored)) this.rowCells(o, from, to, visit);
  }

  private readonly slotWalk = new PackSlots();

  private rowCells(o: OpenedRow<R>, from: number, to: number, visit: CellVisitor<R>): void {
    if (!isPack(o.level)) {
      visit(o, o.row.b, o.payload, 0, o.payload.length);
      return;
    }
    const { slotMs, slots } = PACKS[o.level];
    const walk = this.slotWalk;
    const pack = o.payload;
    walk.reset(pack, slots);
    for (;;) {
      try {
        if (!walk.next()) return;
      } catch (e) {
        if (!(e instanceof RollupError)) throw e;
        this.fail(o.row); // a malformed pack
        return;
      }
      const t = o.row.b + walk.slot * slotMs;
      if (t >= from && t < to) visit(o, t, pack, walk.start, walk.end);
    }
  }

  private fail(row: R): void {
    this.failed++;
    this.o.failed?.(row);
  }

  private open(row: R): Held<R> | undefined {
    const level = this.o.level(row);
    if (level === 'skip') return undefined;
    const dataKey = this.o.dataKey(row.v);
    const metric = this.o.metric ? this.o.metric(row) : row.m;
    if (level === 'fail' || !dataKey || metric === undefined || (isPack(level) && row.b % PACKS[level].unitMs !== 0)) {
      this.fail(row);
      return undefined;
    }
    const id = this.identity;
    id.level = level; // a level this reader reads: a row sealed at another level does not open
    id.bucket = row.b;
    id.metric = metric;
    id.series = row.s;
    id.keyVersion = row.v;
    id.part = row.p;
    const opened = usable(openRollupJoined(dataKey, id, row.k, row.t, row.a), row.p);
    if (!opened) {
      this.fail(row);
      return undefined;
    }
    const h = this.supersession.add(row.p, level, row.b, metric, row.s, row.v, opened, row.u);
    if (!h) return undefined; // a copy (counted)
    if (this.o.accept && !this.o.accept(row)) {
      this.fail(row);
      return undefined;
    }
    return { row, level, metric, payload: opened.payload, h };
  }

  /** Whether an opened row counts: not replaced, and the only pack of its kind for its day. */
  private counts(o: Held<R>): boolean {
    if (this.supersession.replaced(o.h)) {
      this.o.replaced?.(o.row);
      return false;
    }
    if (!isPack(o.level) || this.supersession.firstPack(o.h)) return true;
    this.fail(o.row); // a second pack neither of which replaces the other: not what compaction leaves
    return false;
  }
}
