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
 *   kind (hours, quarter hours): compaction leaves one (an older pack is listed by the newer), a
 *   second is not trusted (`failed`);
 * - a day pack's slots are read with `hours`: a malformed pack counts its slots before the
 *   fault (like separate rows) and is counted in `failed`.
 *
 * The rows compaction wrote are opened first and held until every sealed list is known, then
 * each row that counts is yielded once by `RowReader.rows`.
 */
import { CollectorError } from '../errors.js';
import { openRollupJoined, openRollupRow, type OpenedRollup, type RollupIdentity } from '../at-rest/records.js';
import { forEachInDayPack } from './pack.js';
import type { StoredRow } from '../storage/queries.js';
import { LEVEL, PACKS, isPack, type RollupLevel } from './levels.js';
import { DAY_MS } from './days.js';
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

/** A row that counts: opened, not a copy, not replaced. */
export interface OpenedRow {
  row: StoredRow;
  /** The level it opened at. */
  level: RollupLevel;
  /** The metric pseudonym it opened under. */
  metric: string;
  /** Its aggregate (minute, hour, quarter-hour rows) or day pack (hour and quarter packs). */
  payload: Uint8Array;
}

export interface RowReaderOptions {
  accountId: string;
  /** The data key of a key version (undefined: the row fails). */
  dataKey(version: number): Uint8Array | undefined;
  /** The level a row opens at; 'skip' leaves it out uncounted, 'fail' counts it as failed. */
  level(row: StoredRow): RollupLevel | 'skip' | 'fail';
  /** The metric pseudonym a row opens under (default: as stored; undefined: the row fails). */
  metric?(row: StoredRow): string | undefined;
  /** Asked of each opened row that is not a copy: false counts it as failed (the engine: tags outside the filter). */
  accept?(row: StoredRow): boolean;
}

interface Held extends OpenedRow {
  h: RowHandle;
}

/** Reads the rows of one query (or listing): construct one per read. */
export class RowReader {
  /** Rows that did not open, or that a reader must not use. */
  failed = 0;
  private readonly supersession = new Supersession();
  private readonly packedDays = new Set<string>();
  private readonly identity: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>;

  constructor(private readonly o: RowReaderOptions) {
    this.identity = { accountId: o.accountId, level: LEVEL.minute, bucket: 0, metric: '', series: '', keyVersion: 0, part: '' };
  }

  /** Copies, replays and forged stored lists found (left out). */
  get tampered(): number {
    return this.supersession.tampered;
  }

  /** Each row of `stored` that counts, once. */
  *rows(stored: readonly StoredRow[]): Generator<OpenedRow> {
    const held: Held[] = [];
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

  /** Calls `each(slotStart, aggregateBytes)` for the slots (hours, quarter hours) of a day pack in [from, to). */
  hours(o: OpenedRow, from: number, to: number, each: (t: number, bytes: Uint8Array) => void): void {
    if (!isPack(o.level)) throw new Error('not a day pack');
    const { slotMs, slots } = PACKS[o.level];
    try {
      forEachInDayPack(o.payload, (h, bytes) => {
        const t = o.row.b + h * slotMs;
        if (t >= from && t < to) each(t, bytes);
      }, slots);
    } catch (e) {
      if (e instanceof CollectorError) throw e; // a refusal (too many series), not a fault of the pack
      this.failed++; // a malformed pack (its hours before the fault are counted, like separate rows)
    }
  }

  private open(row: StoredRow): Held | undefined {
    const level = this.o.level(row);
    if (level === 'skip') return undefined;
    const dataKey = this.o.dataKey(row.v);
    const metric = this.o.metric ? this.o.metric(row) : row.m;
    if (level === 'fail' || !dataKey || metric === undefined || (isPack(level) && row.b % DAY_MS !== 0)) {
      this.failed++;
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
      this.failed++;
      return undefined;
    }
    const h = this.supersession.add(row.p, level, row.b, metric, row.s, row.v, opened, row.u);
    if (!h) return undefined; // a copy (counted)
    if (this.o.accept && !this.o.accept(row)) {
      this.failed++;
      return undefined;
    }
    return { row, level, metric, payload: opened.payload, h };
  }

  /** Whether an opened row counts: not replaced, and the only pack of its day. */
  private counts(o: Held): boolean {
    if (this.supersession.replaced(o.h)) return false;
    if (!isPack(o.level)) return true;
    const day = `${o.level}\u0000${o.row.v}\u0000${o.metric}\u0000${o.row.s}\u0000${o.row.b}`;
    if (this.packedDays.has(day)) {
      this.failed++;
      return false;
    }
    this.packedDays.add(day);
    return true;
  }
}
