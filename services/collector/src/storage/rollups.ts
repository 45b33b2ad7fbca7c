/**
 * Rollup rows: what processing writes, what compaction finds, merges, packs and deletes, and
 * what recovery removes after a crashed tick. Rows are ciphertext; only their identity
 * (account, level, bucket, pseudonyms, part) is visible here.
 */
import { bytes, str, strArray, time, TsvWriter, u64, u64Array, uint } from './tsv.js';
import type { DayToPack, EncodedRollups, HourToDerive, Params, RollupGroupKey, RollupLevel, RollupRef, RollupRow, RollupStore, StoredRollup } from './types.js';
import { COMPACTION_PART_PREFIX, partitionParams, partitionSql } from './types.js';
import { at, fromBase64, ms, num, unique, type Db, type Raw } from './sql.js';
import { liveMarker } from './fences.js';

const since = at('since');
// written_at last: an encoded insert stamps it in place, at the end of each row (stampWrittenAt).
const ROLLUP_COLUMNS = [
  'account_id', 'level', 'bucket', 'metric', 'series', 'tag_keys', 'tag_values', 'key_version', 'part', 'supersedes', 'agg', 'epoch', 'expires_at', 'written_at',
] as const;
const rollupFields = (r: RollupRow): (string | Buffer)[] => [
  str(r.accountId), uint(r.level, 5), time(r.bucket), u64(r.metric), u64(r.series), u64Array(r.tagKeys), u64Array(r.tagValues),
  uint(r.keyVersion), str(r.part), r.supersedes?.length ? strArray(r.supersedes) : '[]', bytes(r.agg), uint(r.epoch ?? 0), time(r.expiresAt), time(r.writtenAt),
];
/** `YYYY-MM-DD hh:mm:ss.mmm`: the fixed width of a time field (years 1900..2299). */
const TIME_WIDTH = 23;

/**
 * Rollup rows as one insert body, built where they are sealed (the tick worker), so the thread
 * that serves ingest only hands bytes to the engine. Pure: no connection needed. `written_at`
 * is each row's last field, restamped at write time by stampWrittenAt (periodic recovery
 * judges unmarked parts by it, so it must be the time of the write, not of the computation).
 */
export function encodeRollups(rows: readonly RollupRow[]): EncodedRollups {
  const w = new TsvWriter();
  const ends = new Uint32Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    w.row(rollupFields(rows[i]!));
    ends[i] = w.length;
    if (i === 0 && rows.length > 1) w.reserve(Math.ceil(w.length * rows.length * 1.25) - w.length);
  }
  return { body: w.bytes(), rowEnds: ends };
}

/** Sets every row's `written_at` of an encoded insert to `ms`, in place. */
export function stampWrittenAt(e: EncodedRollups, ms: number): EncodedRollups {
  const t = time(ms);
  const body = Buffer.from(e.body.buffer, e.body.byteOffset, e.body.byteLength);
  for (const end of e.rowEnds) body.write(t, end - 1 - TIME_WIDTH, TIME_WIDTH, 'latin1');
  return e;
}
// One rollup group / row of an account as one string, in SQL and here: exact matches through a
// hash set (`IN`) instead of a linear has(arrayZip(...)) per row.
const GROUP_KEY_SQL = `concat(account_id, '|', toString(level), '|', toString(metric), '|', toString(toUnixTimestamp64Milli(bucket)), '|', toString(series))`;
const REF_KEY_SQL = `concat(${GROUP_KEY_SQL}, '|', part)`;
const groupKey = (g: RollupGroupKey): string => `${g.accountId}|${g.level}|${g.metric}|${g.bucket}|${g.series}`;
const refKey = (r: RollupRef): string => `${groupKey(r)}|${r.part}`;
/**
 * Coarse filters on the sorting key (accounts, metrics, bucket range) so exact key matches read few
 * granules. The metric list is a CAST, which the engine folds into one constant set: the
 * `arrayMap(x -> toUInt64(x), …)` it replaced was evaluated again for every row, converting the
 * whole list each time — wherever the filter ran before the exact key match (always in a
 * mutation: compaction's deletes and list updates, 2.3 s of engine CPU for 4,000 rows of a
 * 10,000-shop table where the CAST takes 0.9 s).
 */
function refRange(rows: RollupGroupKey[]): { accs: string[]; ms: string[]; bmin: number; bmax: number } {
  let bmin = Infinity;
  let bmax = -Infinity;
  for (const r of rows) {
    if (r.bucket < bmin) bmin = r.bucket;
    if (r.bucket > bmax) bmax = r.bucket;
  }
  return { accs: unique(rows.map((r) => r.accountId)), ms: unique(rows.map((r) => r.metric)), bmin, bmax };
}
const RANGE_SQL = `account_id IN {accs:Array(String)} AND metric IN CAST({ms:Array(String)}, 'Array(UInt64)')
  AND bucket >= fromUnixTimestamp64Milli({bmin:Int64}, 'UTC') AND bucket <= fromUnixTimestamp64Milli({bmax:Int64}, 'UTC')`;

export function rollupRepository(db: Db): RollupStore {
  /**
   * The rows of the (account, metric, span, series…) keys in `items`, of any accounts, one read
   * (one snapshot) per run of `db.chunks`, each run read over its items' accounts and span:
   * `keySql` is the key of a stored row as `key` writes it, matched through a hash set. (One
   * statement per account before: a derivation page at storefront scale, 2,000 series-hours of
   * ~190 shops, took ~190 statements of ~50 ms each, most of a pass's CPU after every hour.)
   */
  async function rowsOfRuns<T extends { accountId: string }>(items: T[], key: (t: T) => string, startOf: (t: T) => number, spanMs: number, keySql: string): Promise<StoredRollup[]> {
    const out: StoredRollup[] = [];
    for (const run of db.chunks(items, key)) {
      let from = Infinity;
      let to = -Infinity;
      for (const t of run) {
        from = Math.min(from, startOf(t));
        to = Math.max(to, startOf(t) + spanMs);
      }
      const range = `account_id IN {accs:Array(String)} AND bucket >= ${at('from')} AND bucket < ${at('to')} AND ${keySql} IN {ks:Array(String)}`;
      const rows = await storedRows(db, range, { accs: unique(run.map((t) => t.accountId)), from, to, ks: run.map(key) });
      for (const r of rows) out.push(r); // not push(...rows): a spread of ~100k rows overflows the call stack
    }
    return out;
  }
  return {
    insertRollups: (rows) => db.insert('rollups', ROLLUP_COLUMNS, rows, rollupFields),
    insertEncodedRollups: (e) => db.insertBody('rollups', ROLLUP_COLUMNS, e.body),

    async rollupGroupsToCompact({ since: sinceMs, after, limit }) {
      const key = '(account_id, level, metric, bucket, series)';
      const params: Params = { limit };
      let cursor = '';
      if (after) {
        cursor = ` AND ${key} > ({ca:String}, {cl:UInt8}, {cm:UInt64}, fromUnixTimestamp64Milli({cb:Int64}, 'UTC'), {cs:UInt64})`;
        Object.assign(params, { ca: after.accountId, cl: after.level, cm: after.metric, cb: after.bucket, cs: after.series });
      }
      let recent = '';
      if (sinceMs !== undefined) {
        recent = ` AND ${key} IN (SELECT account_id, level, metric, bucket, series FROM ${db.t('rollups')} WHERE written_at >= ${since}${cursor})`;
        params.since = sinceMs;
      }
      const rows = await db.conn.query<{ a: string; l: number; m: string; b: number | string; s: string; n: number | string }>(
        `SELECT account_id AS a, level AS l, toString(metric) AS m, toUnixTimestamp64Milli(bucket) AS b, toString(series) AS s, count() AS n
         FROM ${db.t('rollups')}
         WHERE 1${cursor}${recent}
         GROUP BY account_id, level, metric, bucket, series
         HAVING n > 1 AND countIf(notEmpty(supersedes)) = 0
         ORDER BY account_id, level, metric, bucket, series
         LIMIT {limit:UInt32}
         SETTINGS optimize_aggregation_in_order = 1`,
        params,
      );
      return rows.map((r) => ({ accountId: r.a, level: num(r.l) as RollupLevel, metric: r.m, bucket: num(r.b), series: r.s, rows: num(r.n) }));
    },

    async rollupsOfGroups(groups, perGroup) {
      const out: StoredRollup[] = [];
      for (const part of db.chunks(groups, groupKey)) {
        const where = `${RANGE_SQL} AND ${GROUP_KEY_SQL} IN {keys:Array(String)}`;
        const rows = await db.conn.query<Raw>(
          `SELECT account_id AS acc, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s,
             tag_keys AS tk, tag_values AS tv, key_version AS v, part AS p, supersedes AS sup, base64Encode(agg) AS a,
             ${ms('written_at', 'w')}, ${ms('expires_at', 'e')},
             (account_id, part) IN (SELECT account_id, part FROM ${db.t('processed')} WHERE account_id IN {accs:Array(String)} AND ${liveMarker(db)}
                AND (account_id, part) IN (SELECT account_id, part FROM ${db.t('rollups')} WHERE ${where})) AS marked
           FROM ${db.t('rollups')}
           WHERE ${where}
           ORDER BY account_id, level, metric, bucket, series, written_at, part
           LIMIT {per:UInt32} BY account_id, level, metric, bucket, series`,
          { ...refRange(part), keys: part.map(groupKey), per: perGroup },
        );
        for (const r of rows) {
          out.push({
            accountId: String(r.acc),
            level: num(r.l) as RollupLevel,
            bucket: num(r.b),
            metric: String(r.m),
            series: String(r.s),
            tagKeys: (r.tk as unknown[]).map(String),
            tagValues: (r.tv as unknown[]).map(String),
            keyVersion: num(r.v),
            part: String(r.p),
            supersedes: (r.sup as unknown[]).map(String),
            agg: fromBase64(r.a),
            writtenAt: num(r.w),
            expiresAt: num(r.e),
            marked: r.marked === true || r.marked === 1 || r.marked === '1',
          });
        }
      }
      return out;
    },

    async supersedingRollups(limit) {
      const rows = await db.conn.query<{ a: string; l: number; b: number | string; m: string; s: string; p: string; sup: string[]; tk: unknown[]; tv: unknown[]; v: number | string; g: string }>(
        `SELECT account_id AS a, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, part AS p, supersedes AS sup,
           tag_keys AS tk, tag_values AS tv, key_version AS v, base64Encode(agg) AS g
         FROM ${db.t('rollups')} WHERE notEmpty(supersedes)
         ORDER BY account_id, written_at, part
         LIMIT {limit:UInt32}`,
        { limit },
      );
      return rows.map((r) => ({
        accountId: r.a, level: num(r.l) as RollupLevel, bucket: num(r.b), metric: r.m, series: r.s, part: r.p, supersedes: r.sup,
        tagKeys: r.tk.map(String), tagValues: r.tv.map(String), keyVersion: num(r.v), agg: fromBase64(r.g),
      }));
    },

    // Mutations, queued or waited for (every replica); the exact row keys go through a hash
    // set, the account/metric/bucket/part filters let ClickHouse skip parts and granules.
    async deleteRollups(rows, opts) {
      for (const part of db.chunks(rows, refKey)) {
        await db.conn.exec(
          `DELETE FROM ${db.t('rollups')}
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           SETTINGS lightweight_deletes_sync = ${opts?.wait ? 2 : 0}`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
      }
    },

    async clearSupersedes(rows, opts) {
      for (const part of db.chunks(rows, refKey)) {
        await db.conn.exec(
          `ALTER TABLE ${db.t('rollups')} UPDATE supersedes = []
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           SETTINGS mutations_sync = ${opts?.wait ? 2 : 0}`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
      }
    },


    async findRollups(rows) {
      const out: { accountId: string; level: RollupLevel; bucket: number; metric: string; series: string; part: string; supersedes: string[] }[] = [];
      for (const part of db.chunks(rows, refKey)) {
        const found = await db.conn.query<{ a: string; l: number; b: number | string; m: string; s: string; p: string; sup: string[] }>(
          `SELECT account_id AS a, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, part AS p, supersedes AS sup
           FROM ${db.t('rollups')}
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           ORDER BY account_id, level, metric, bucket, series, part`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
        for (const r of found) out.push({ accountId: r.a, level: num(r.l) as RollupLevel, bucket: num(r.b), metric: r.m, series: r.s, part: r.p, supersedes: r.sup });
      }
      return out;
    },

    async orphanParts({ since: sinceMs, writtenBefore, epochBelow, partition }) {
      const rows = await db.conn.query<{ part: string }>(
        `SELECT part FROM ${db.t('rollups')} WHERE written_at >= ${since}
         AND NOT startsWith(part, {compacted:String})${partition ? ` AND ${partitionSql('account_id')}` : ''}
         AND part NOT IN (SELECT part FROM ${db.t('processed')} WHERE processed_at >= ${since} AND ${liveMarker(db)})
         GROUP BY part HAVING max(written_at) < ${at('cutoff')} OR max(epoch) < {below:UInt32}`,
        { since: sinceMs, compacted: COMPACTION_PART_PREFIX, cutoff: writtenBefore, below: epochBelow ?? 0, ...(partition ? partitionParams(partition) : {}) },
      );
      return rows.map((r) => r.part);
    },

    async deleteRollupParts(parts) {
      for (const run of db.chunks(parts, (p) => p)) {
        await db.conn.exec(`DELETE FROM ${db.t('rollups')} WHERE part IN {parts:Array(String)}`, { parts: run });
      }
    },

    async daysToPack({ closed, after, limit, level = 1 }) {
      const rollups = db.t('rollups');
      const { pack, unitMs, unitSql } = packing(level);
      const hours = `level = ${level} AND bucket < ${at('closed')}`;
      const cursor = after
        ? ` AND (account_id, metric, ${unitSql}, series, key_version) > ({pa:String}, {pm:UInt64}, {pd:Int64}, {ps:UInt64}, {pv:UInt32})`
        : '';
      const rows = await db.conn.query<{ a: string; m: string; d: number | string; s: string; v: number | string }>(
        `SELECT account_id AS a, toString(metric) AS m, ${unitSql} AS d, toString(series) AS s, key_version AS v
         FROM ${rollups}
         WHERE level IN (${level}, ${pack}) AND bucket < ${at('closed')}${cursor}
           AND (account_id, metric, ${unitSql}, series) IN (SELECT account_id, metric, ${unitSql}, series FROM ${rollups} WHERE ${hours})
         GROUP BY account_id, metric, d, series, key_version
         HAVING countIf(notEmpty(supersedes)) = 0 AND countIf(level = ${level} AND ${marked(db, hours)}) > 0
         ORDER BY account_id, metric, d, series, key_version
         LIMIT {lim:UInt32}`,
        {
          closed,
          lim: limit,
          ...(after ? { pa: after.accountId, pm: after.metric, pd: after.day / unitMs, ps: after.series, pv: after.keyVersion } : {}),
        },
      );
      return rows.map((r) => ({ accountId: r.a, metric: r.m, day: num(r.d) * unitMs, series: r.s, keyVersion: num(r.v) }));
    },

    async rollupLevelSince(level) {
      const [r] = await db.conn.query<Raw>(
        `SELECT toFloat64(toUnixTimestamp64Milli(min(since))) AS s, count() AS n FROM ${db.t('rollup_levels')} WHERE level = {l:UInt8}`,
        { l: level },
      );
      return r && num(r.n) > 0 ? num(r.s) : Infinity;
    },

    async derivedUntil() {
      const [r] = await db.conn.query<Raw>(`SELECT toFloat64(toUnixTimestamp64Milli(max(until))) AS u, count() AS n FROM ${db.t('derived')}`);
      return r && num(r.n) > 0 ? num(r.u) : 0;
    },

    setDerivedUntil: (until) => db.insert('derived', ['until'], [until], (u) => [time(u)]),

    async hoursToDerive({ from, to, after, limit }) {
      const cursor = after
        ? ` AND (account_id, metric, ${HOUR_SQL}, series) > ({ca:String}, {cm:UInt64}, {ch:Int64}, {cs:UInt64})`
        : '';
      // minute rows (0)
      const rows = await db.conn.query<{ a: string; m: string; h: number | string; s: string }>(
        `SELECT account_id AS a, toString(metric) AS m, ${HOUR_SQL} AS h, toString(series) AS s
         FROM ${db.t('rollups')}
         WHERE level = 0 AND bucket >= ${at('from')} AND bucket < ${at('to')}${cursor}
         GROUP BY account_id, metric, h, series
         ORDER BY account_id, metric, h, series
         LIMIT {lim:UInt32}`,
        { from, to, lim: limit, ...(after ? { ca: after.accountId, cm: after.metric, ch: after.hour / HOUR_MS, cs: after.series } : {}) },
      );
      return rows.map((r) => ({ accountId: r.a, metric: r.m, hour: num(r.h) * HOUR_MS, series: r.s }));
    },

    async rollupsOfHours(hours) {
      const hourKey = (h: HourToDerive) => `${h.accountId}|${h.metric}|${h.hour / HOUR_MS}|${h.series}`;
      // minute (0), hour (1) and quarter-hour (3) rows, and minute packs (5: the hour was derived
      // already, derive.ts leaves it alone)
      return rowsOfRuns(hours, hourKey, (h) => h.hour, HOUR_MS, `level IN (0, 1, 3, 5)
          AND concat(account_id, '|', toString(metric), '|', toString(${HOUR_SQL}), '|', toString(series))`);
    },

    async rollupsOfDays(days, level = 1) {
      const { pack, unitMs, unitSql } = packing(level);
      const dayKey = (d: DayToPack) => `${d.accountId}|${d.metric}|${d.day / unitMs}|${d.series}|${d.keyVersion}`;
      // One read (one snapshot) per run: a pack holds exactly the rows it lists.
      return rowsOfRuns(days, dayKey, (d) => d.day, unitMs, `level IN (${level}, ${pack})
          AND concat(account_id, '|', toString(metric), '|', toString(${unitSql}), '|', toString(series), '|', toString(key_version))`);
    },
  };
}

const DAY_MS = 86_400_000;
const HOUR_MS = 3_600_000;
/** UTC hour number of a row's bucket. */
const HOUR_SQL = 'intDiv(toUnixTimestamp64Milli(bucket), 3600000)';
/** UTC day number of a row's bucket. */
const DAY_SQL = 'intDiv(toUnixTimestamp64Milli(bucket), 86400000)';
/**
 * The pack level of rows of `level` and its unit: hour rows (1) and hour packs (2), quarter-hour
 * rows (3) and quarter packs (4) by UTC day; minute rows (0) and minute packs (5) by UTC hour.
 */
const packing = (level: number): { pack: number; unitMs: number; unitSql: string } =>
  level === 0 ? { pack: 5, unitMs: HOUR_MS, unitSql: HOUR_SQL } : { pack: level === 1 ? 2 : 4, unitMs: DAY_MS, unitSql: DAY_SQL };
/** Rows (selected by `where`) whose tick finished (a processed marker names the part) or that compaction wrote. */
const marked = (db: Db, where: string) => `(startsWith(part, '${COMPACTION_PART_PREFIX}') OR (account_id, part) IN (
  SELECT account_id, part FROM ${db.t('processed')} WHERE ${liveMarker(db)} AND (account_id, part) IN (SELECT account_id, part FROM ${db.t('rollups')} WHERE ${where})))`;

/** The rows selected by `range` (one statement: one snapshot), each with whether it is finished. */
async function storedRows(db: Db, range: string, params: Params): Promise<StoredRollup[]> {
  const rows = await db.conn.query<Raw>(
    `SELECT account_id AS acc, toUInt8(level) AS l, toFloat64(toUnixTimestamp64Milli(bucket)) AS b, toString(metric) AS m, toString(series) AS s, key_version AS v, part AS p,
       supersedes AS sup, arrayMap(x -> toString(x), tag_keys) AS k, arrayMap(x -> toString(x), tag_values) AS t, base64Encode(agg) AS a,
       toFloat64(toUnixTimestamp64Milli(written_at)) AS w, toFloat64(toUnixTimestamp64Milli(expires_at)) AS e, toUInt8(${marked(db, range)}) AS ok
     FROM ${db.t('rollups')}
     WHERE ${range}`,
    params,
  );
  return rows.map((r) => ({
    accountId: String(r.acc),
    level: num(r.l) as RollupLevel,
    bucket: num(r.b),
    metric: String(r.m),
    series: String(r.s),
    tagKeys: r.k as string[],
    tagValues: r.t as string[],
    keyVersion: num(r.v),
    part: String(r.p),
    supersedes: r.sup as string[],
    agg: fromBase64(r.a),
    writtenAt: num(r.w),
    expiresAt: num(r.e),
    marked: num(r.ok) === 1,
  }));
}
