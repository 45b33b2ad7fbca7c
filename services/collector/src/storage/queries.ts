/**
 * What the query role reads: the rollup rows of a query (and of the 24-hour volume of
 * `GET /v1/metrics`) as RowBinary for the row model to open (rollup/rows.ts), the tag
 * pseudonyms a metric occurs with, and dictionary entries by pseudonym. Only pseudonyms,
 * times, levels, key versions and the account id are bound; ClickHouse filters by tag
 * pseudonyms, and which rows count (copies, replaced rows, one pack per day) is decided by
 * the reader from what the rows seal, never here.
 */
import { dayOf, HOUR_MS } from '../rollup/days.js';

const hourOf = (t: number): number => t - (((t % HOUR_MS) + HOUR_MS) % HOUR_MS);
import { RowBinaryReader } from './rowbinary.js';
import type { DictRow, Params, QueryStore, RollupSelection } from './types.js';
import { at, fromBase64, num, type Db } from './sql.js';

/** A stored rollup row as the query side selects it (rowColumns, in this order). */
export interface StoredRow {
  /** Stored level (absent: the reader's level). */
  l?: number;
  /** Bucket (epoch ms, UTC; a day pack: its UTC day; a minute pack: its UTC hour). */
  b: number;
  /** Key version. */
  v: number;
  /** Series pseudonym. */
  s: string;
  /** The sealed aggregate or pack. */
  a: Uint8Array;
  /** tag_keys joined by ',' (bound into the row's identity). */
  k: string;
  /** tag_values joined by ',' (bound into the row's identity). */
  t: string;
  /** The metric pseudonym as stored; '' when the selection names its metrics (`versions`: the reader takes the metric from there). */
  m?: string;
  /** The row's part (bound into its identity since record format 2; a second row with the same one is a copy). */
  p: string;
  /** The stored `supersedes` column (compaction's to-do list; only the sealed list decides). */
  u?: string[];
}

/**
 * The columns of a StoredRow, in the order readStoredRows reads them (RowBinary). A selection
 * that names its metrics (`versions`) gets '' for `m`: its reader opens every row under the
 * metric of the row's key version, never the stored one, and the text cost chDB ~1 ms per
 * 20,000 rows (bench query's kept 2M-point state, 24 h minute p95). `arrayStringConcat` turns the
 * tag pseudonyms into text itself (the same text as through `arrayMap(toString)`, without the lambda).
 */
const rowColumns = (sel: { versions?: unknown }): string =>
  `toUInt8(level) AS l, toFloat64(toUnixTimestamp64Milli(bucket)) AS b, key_version AS v, toString(series) AS s, agg AS a,
  arrayStringConcat(tag_keys, ',') AS k, arrayStringConcat(tag_values, ',') AS t,
  ${sel.versions ? "''" : 'toString(metric)'} AS m, part AS p, supersedes AS u`;

const NONE: string[] = [];
const readList = (r: RowBinaryReader): string[] => {
  const n = r.arrayLength();
  if (n === 0) return NONE;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r.string());
  return out;
};

/** The rows of `QueryStore.selectRollups`' answer (String columns are zero-copy views of `bytes`). */
export function readStoredRows(bytes: Uint8Array): StoredRow[] {
  const r = new RowBinaryReader(bytes);
  const rows: StoredRow[] = [];
  while (!r.done) {
    rows.push({ l: r.u8(), b: r.f64(), v: r.u32(), s: r.string(), a: r.bytes(), k: r.string(), t: r.string(), m: r.string(), p: r.string(), u: readList(r) });
  }
  return rows;
}

/** Skips a `selectRollups` row's columns after its bucket: v UInt32, s, a, k, t, m, p String, u Array(String). */
function skipAfterBucket(r: RowBinaryReader): void {
  r.skip(4);
  for (let i = 0; i < 6; i++) r.skipString();
  for (let n = r.arrayLength(); n > 0; n--) r.skipString();
}

/** How many rows a `selectRollups` answer holds, from the lengths alone (nothing decoded). */
export function countStoredRows(bytes: Uint8Array): number {
  const r = new RowBinaryReader(bytes);
  let rows = 0;
  while (!r.done) {
    r.skip(9); // l UInt8, b Float64
    skipAfterBucket(r);
    rows++;
  }
  return rows;
}

/**
 * A `selectRollups` answer cut into at most `parts` answers of about equal size, each holding
 * the whole rows of consecutive units (`unitOf(bucket)`: e.g. the UTC day; every row of a unit
 * lands in the same answer), in unit order; empty answers are left out. Rows are copied, not
 * decoded.
 */
export function splitStoredRows(bytes: Uint8Array, unitOf: (bucket: number) => number, parts: number): Uint8Array[] {
  const r = new RowBinaryReader(bytes);
  const ends: number[] = [];
  const units: number[] = [];
  const sizes = new Map<number, number>();
  for (let start = 0; !r.done; ) {
    r.skip(1); // l
    const unit = unitOf(r.f64());
    skipAfterBucket(r);
    const end = bytes.length - r.remaining;
    ends.push(end);
    units.push(unit);
    sizes.set(unit, (sizes.get(unit) ?? 0) + end - start);
    start = end;
  }
  if (parts <= 1 || sizes.size <= 1) return bytes.length ? [bytes] : [];
  // consecutive units into parts of about bytes / parts each
  const partOf = new Map<number, number>();
  const target = bytes.length / Math.min(parts, sizes.size);
  let part = 0;
  let filled = 0;
  for (const unit of [...sizes.keys()].sort((a, b) => a - b)) {
    const size = sizes.get(unit)!;
    if (filled > 0 && filled + size / 2 > target * (part + 1) && part < parts - 1) part++;
    partOf.set(unit, part);
    filled += size;
  }
  const lengths = new Array<number>(part + 1).fill(0);
  ends.forEach((end, i) => (lengths[partOf.get(units[i]!)!]! += end - (i ? ends[i - 1]! : 0)));
  const out = lengths.map((n) => new Uint8Array(n));
  const at = new Array<number>(part + 1).fill(0);
  // consecutive rows of one part are copied together (a series' days lie side by side)
  let runStart = 0;
  let runPart = -1;
  const flush = (end: number): void => {
    if (runPart < 0) return;
    out[runPart]!.set(bytes.subarray(runStart, end), at[runPart]);
    at[runPart]! += end - runStart;
  };
  for (let i = 0; i < ends.length; i++) {
    const p = partOf.get(units[i]!)!;
    if (p === runPart) continue;
    const start = i ? ends[i - 1]! : 0;
    flush(start);
    runStart = start;
    runPart = p;
  }
  flush(bytes.length);
  return out.filter((b) => b.length > 0);
}

/** Array(UInt64) from decimal strings: bound as Array(String), converted in SQL (portable across adapters). */
const u64s = (param: string): string => `arrayMap(x -> toUInt64(x), {${param}:Array(String)})`;
const inRange = (from: string, to: string) => `bucket >= ${at(from)} AND bucket < ${at(to)}`;

/** The WHERE clause of a selection's metrics and tag filters (one disjunct per key version); '1' for every metric. */
function metricFilters(sel: Omit<RollupSelection, 'limit'>, params: Params): { metrics: string; filters: string } {
  if (!sel.versions) return { metrics: '1', filters: '1' };
  const perVersion = sel.versions.map((v, i) => {
    params[`m${i}`] = v.metric;
    params[`v${i}`] = v.version;
    const parts = [`key_version = {v${i}:UInt32}`, `metric = {m${i}:UInt64}`];
    v.filters.forEach(({ accepted, missingKey }, j) => {
      const name = `f${i}_${j}`;
      let part = '0';
      if (accepted.length === 1) {
        params[name] = accepted[0]!;
        part = `has(tag_values, {${name}:UInt64})`;
      } else if (accepted.length > 1) {
        params[name] = accepted;
        part = `hasAny(tag_values, ${u64s(name)})`;
      }
      if (missingKey !== undefined) {
        params[`${name}k`] = missingKey;
        part = `(${part} OR NOT has(tag_keys, {${name}k:UInt64}))`;
      }
      parts.push(part);
    });
    return `(${parts.join(' AND ')})`;
  });
  return {
    // One version's conjunct already holds `metric = …` for the primary key; several need the IN
    // beside their disjunction (a condition more costs chDB's analysis of every statement).
    metrics: perVersion.length === 1 ? '1' : `metric IN (${sel.versions.map((_, i) => `{m${i}:UInt64}`).join(', ')})`,
    filters: perVersion.length === 1 ? perVersion[0]! : `(${perVersion.join(' OR ')})`,
  };
}

/**
 * A quarter-hour selection with `quarterHours` (RollupSelection), as selectionSql: per (UTC
 * day, series, key version) with a quarter pack (4) in the range, the pack and its quarter-hour
 * rows (3), as without `quarterHours`; else its hour pack (2), and quarter-hour rows only at the
 * hours of the day `quarterHours` fall on (a superset for weeks and months). Hour rows (1) of
 * the range whatever the day (a packed day holds only late ones), and minute rows (0) from
 * `minuteFrom` on. One statement, one snapshot, one scan (measured faster than a branch per
 * level with the exact hours): the reader picks one kind per day from the packs it gets and
 * skips the rest (query/merge.ts).
 *
 * Whether a (day, series, key version) has a quarter pack is a window over the scan's own rows
 * (`quarter_packed`: the partition holds a level-4 row), not an IN subquery on level 4: the
 * subquery was a second read of the table, ~10 ms of the statement's ~30 ms engine CPU in the
 * packed state (100,000 points). The window reads the quarter-hour rows of every hour before
 * deciding (the subquery's PREWHERE dropped those outside `quarterHours` first): the unpacked
 * state (a compaction backlog) pays a few ms more. Same rows either way.
 */
function quartersAtEdges(rollups: string, sel: Omit<RollupSelection, 'limit'>, params: Params, base: string, filters: string, columns: string): string {
  params.qh = [...new Set(sel.quarterHours!.map((h) => new Date(h).getUTCHours()))];
  const day = 'intDiv(toUnixTimestamp64Milli(bucket), 86400000)';
  let minutes = '';
  if (sel.minuteFrom !== undefined && sel.minuteFrom < sel.to) {
    params.mfrom = sel.minuteFrom;
    // minute packs (5) only if storage moved the watermark back (only derived hours are packed)
    minutes = `
        OR (level = 0 AND bucket >= ${at('from')} AND bucket >= ${at('mfrom')}) OR (level = 5 AND bucket >= ${at('mfrom')})`;
  }
  return `SELECT ${columns} FROM (
    SELECT level, bucket, key_version, series, agg, tag_keys, tag_values, metric, part, supersedes,
      max(level = 4) OVER (PARTITION BY series, key_version, ${day}) AS quarter_packed
    FROM ${rollups}
    WHERE ${base} AND level IN (${minutes ? '0, 5, ' : ''}1, 2, 3, 4) AND ${inRange('dfrom', 'to')} AND ${filters}
      AND (level IN (2, 4) OR (level IN (1, 3) AND bucket >= ${at('from')})${minutes})
  )
  WHERE level IN (0, 1, 4, 5) OR (level = 2 AND NOT quarter_packed) OR (level = 3 AND (toHour(bucket) IN {qh:Array(UInt8)} OR quarter_packed))`;
}

/**
 * The SELECT (no LIMIT) of a selection's rows with `columns`: minute rows of the range, or at
 * levels 1 and 3 the level's rows, its packs and the minute rows asked for, in one scan.
 */
function selectionSql(rollups: string, sel: Omit<RollupSelection, 'limit'>, params: Params, columns: string): string {
  Object.assign(params, { acc: sel.accountId, from: sel.from, to: sel.to });
  const { metrics, filters } = metricFilters(sel, params);
  const base = metrics === '1' ? 'account_id = {acc:String}' : `account_id = {acc:String} AND ${metrics}`;
  if (sel.level === 0) {
    // minute (0) rows of the range and the minute packs (5) of the UTC hours it overlaps (the
    // reader keeps only the packs' slots inside the range)
    params.hfrom = hourOf(sel.from);
    return `SELECT ${columns} FROM ${rollups}
WHERE ${base} AND level IN (0, 5) AND ${inRange('hfrom', 'to')}
  AND ${filters} AND (level = 5 OR bucket >= ${at('from')})`;
  }
  // Hour rows (1) of the range and the hour packs (2) of the UTC days it overlaps, or
  // quarter-hour rows (3) and quarter packs (4) (the reader keeps only the packs' slots
  // inside the range), and the minute rows (0) of the UTC hours in `minuteHours` and from
  // `minuteFrom` on (hours whose hour rows are not derived yet: the reader leaves out the
  // other levels there).
  const [rowLevel, packLevel] = sel.level === 3 ? [3, 4] : [1, 2];
  params.dfrom = dayOf(sel.from);
  if (sel.level === 3 && sel.quarterHours?.length) return quartersAtEdges(rollups, sel, params, base, filters, columns);
  const inMinutes: string[] = [];
  if (sel.minuteHours?.length) {
    params.mh = sel.minuteHours.map(String);
    inMinutes.push(`intDiv(toUnixTimestamp64Milli(bucket), 3600000) * 3600000 IN arrayMap(x -> toInt64(x), {mh:Array(String)})`);
  }
  if (sel.minuteFrom !== undefined && sel.minuteFrom < sel.to) {
    params.mfrom = sel.minuteFrom;
    inMinutes.push(`bucket >= ${at('mfrom')}`);
  }
  // One scan of the levels: a UTC hour read from minute data is its minute rows (0) and its
  // minute pack (5: at the hour's start, so not cut by `from`; only derived hours are packed,
  // so from the watermark on none but after storage moved it back). A UNION ALL branch per
  // level cost chDB a read of its own (bench's kept packed state, in-process CPU per 24-hour
  // query 23-24 -> 19-20 ms).
  const minutes = inMinutes.length ? ` OR (level = 0 AND (${inMinutes.join(' OR ')}))` : '';
  const minutePacks = inMinutes.length ? ` OR (level = 5 AND (${inMinutes.join(' OR ')}))` : '';
  return `SELECT ${columns} FROM ${rollups}
  WHERE ${base} AND level IN (${minutes ? '0, 5, ' : ''}${rowLevel}, ${packLevel}) AND ${inRange('dfrom', 'to')} AND ${filters}
    AND (level = ${packLevel}${minutePacks} OR (bucket >= ${at('from')} AND (level = ${rowLevel}${minutes})))`;
}

/**
 * The read settings of `selectRollups`. Column files of 1 MiB or more are read through mmap
 * instead of pread into buffers on a thread pool. Such a statement reads whole granules of the
 * sealed `agg` column (up to 10 MiB each) to return a few MB of them; through mmap the engine
 * filters the page cache's bytes without copying them first. Bench query's kept 2M-point state,
 * the statement alone, interleaved, median of 15: 30 d hourly sum 13.8 -> 12.1 ms, Kathmandu
 * daily 29.7 -> 25.6, 90 d daily 14.3 -> 12.8, every shape 0.4-4 ms less, same bytes. Smaller
 * files (a fresh part's columns) stay on pread: an mmap per small file costs more than it saves.
 * And the PREWHERE the engine moves the key conditions into is one read step, not one per
 * condition: per part, each step is a read of its own, and a table under ingest has many parts.
 * The kept state's rows in 31 parts (25 + 6, merges off) instead of one per month, interleaved,
 * median of 15: 30 d hourly sum 31.8 -> 26.3 ms, Kolkata sum 31.8 -> 28.8, Kathmandu daily
 * 40.0 -> 34.5, 90 d daily 27.5 -> 23.5; in one part each shape within 1.3 ms either way.
 * Query-level settings of the reading engine: a server (or cluster) takes them too.
 */
const READ_SETTINGS = "SETTINGS local_filesystem_read_method = 'mmap', min_bytes_to_use_mmap_io = 1048576, enable_multiple_prewhere_read_steps = 0";

export function queryRepository(db: Db): QueryStore {
  return {
    async selectRollups(sel, onWait) {
      const params: Params = { lim: sel.limit };
      const rows = selectionSql(db.t('rollups'), sel, params, rowColumns(sel));
      // The LIMIT on the selection itself: a `SELECT * FROM (…)` around it (from when levels were
      // UNION ALL branches) cost chDB ~1 ms more analysis per statement.
      return db.conn.queryBinary(`${rows}\nLIMIT {lim:UInt32} ${READ_SETTINGS}`, params, onWait);
    },

    async countRollups(sel, slotMs) {
      const params: Params = { slot: slotMs };
      const rows = selectionSql(db.t('rollups'), sel, params, 'toUnixTimestamp64Milli(bucket) AS b');
      const out = await db.conn.query<{ at: number | string; n: number | string }>(
        `SELECT intDiv(b, {slot:Int64}) * {slot:Int64} AS at, count() AS n FROM (
  ${rows}
)
GROUP BY at ORDER BY at`,
        params,
      );
      return out.map((r) => ({ at: num(r.at), rows: num(r.n) }));
    },

    async tagValueCounts({ accountId, since, listed, minuteFrom }) {
      const rows = await db.conn.query<{ m: string; k: string; n: number | string; vs: string[] }>(
        `SELECT toString(metric) AS m, toString(kv.1) AS k, uniqExact(kv.2) AS n,
           arrayMap(x -> toString(x), groupUniqArray(${Math.floor(listed) + 1})(kv.2)) AS vs
         FROM ${db.t('rollups')} ARRAY JOIN arrayZip(tag_keys, tag_values) AS kv
         WHERE account_id = {acc:String} AND bucket >= ${at('since')}
           AND (level IN (1, 2)${minuteFrom === undefined ? '' : ` OR (level IN (0, 5) AND bucket >= ${at('mfrom')})`})
         GROUP BY metric, kv.1`,
        { acc: accountId, since, ...(minuteFrom === undefined ? {} : { mfrom: minuteFrom }) },
      );
      return rows.map((r) => ({ metric: r.m, key: r.k, distinct: num(r.n), values: r.vs }));
    },

    async dictionaryEntries(accountId, kind, pseudonyms) {
      const out: DictRow[] = [];
      for (const run of db.chunks(pseudonyms, (p) => p)) {
        const rows = await db.conn.query<{ v: number; p: string; c: string; f: number | string }>(
          `SELECT key_version AS v, toString(pseudonym) AS p, base64Encode(ciphertext) AS c, toUnixTimestamp64Milli(first_seen) AS f
           FROM ${db.t('dictionary')} FINAL
           WHERE account_id = {acc:String} AND kind = {kind:UInt8} AND pseudonym IN (SELECT arrayJoin(${u64s('ps')}))`,
          { acc: accountId, kind, ps: run },
        );
        for (const r of rows) out.push({ accountId, kind, pseudonym: r.p, keyVersion: num(r.v), ciphertext: fromBase64(r.c), firstSeen: num(r.f) });
      }
      return out;
    },
  };
}
