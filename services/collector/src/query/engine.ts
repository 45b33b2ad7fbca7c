/**
 * The query engine. ClickHouse selects the rollup rows of one metric by pseudonyms and UTC
 * time (one SQL query, bound parameters only: account id, level, times, pseudonyms); this
 * process opens each row with the data key of its key version, merges the partial aggregates
 * per (time-zone bucket, group) and finalizes the requested statistic.
 *
 * Semantics (also in README.md):
 * - the range is widened to whole buckets of `interval` in `timezone`: from the bucket that
 *   contains `from` to the one that contains `to − 1`; every bucket is in the answer;
 * - an empty bucket is 0 for count and sum, null for every other aggregation;
 * - without groupBy the answer is exactly one series (tags {}), even with no data or an
 *   unknown metric; with groupBy, one series per group that has data in the range, where a
 *   point lacking a group-by tag counts in the group without that key;
 * - a row that fails to open (wrong key, moved, tampered, malformed) is never used; it is
 *   counted in `meta.failedRows`, logged and exported as a Prometheus counter;
 * - a row a merged row or day pack replaces (compaction) is left out here, from the list that
 *   row seals (query/supersedes.ts), never in SQL; a copy of a row, a row that came back after
 *   it was merged, or a stored `supersedes` list naming more than the sealed one is counted in
 *   `meta.tamperedRows`. The reads of `rollups` in one query see one snapshot of the table
 *   with ClickHouse's `enable_shared_storage_snapshot_in_query` (default since 25.12, chDB
 *   included; older servers: set it in the profile, else an hour-level query racing the insert
 *   of a day pack may, rarely, count it and its hour rows once each);
 * - hour-level queries read the day packs (level 2, query/days.ts) of the UTC days the range
 *   overlaps, keeping their hours inside the range, plus the hour rows no pack supersedes
 *   (today's, and late data for packed days); a (day, series, key version) is counted
 *   through at most one pack (an older one is replaced by the newer, which lists it);
 * - a row's group and filter match come from its tag pseudonym arrays, which its identity tag
 *   covers: storage rewriting `tag_values` makes the row fail to open (never regrouped).
 */
import { CollectorError } from '../errors.js';
import { openRollupJoined } from '../records.js';
import { compactedFirst, isCompacted, Supersession, type RowHandle } from './supersedes.js';
import { emptyAggregate, finalize, forEachInDayPack, mergeEncoded, mergeInto, type Aggregate } from '../rollup/index.js';
import type { Params, RollupLevel } from '../storage/types.js';
import { DAY_MS, HOUR_MS, dayOf, hourLevelSql } from './days.js';
import { RowBinaryReader } from '../storage/index.js';
import { accountContext, lookupDictionary, table, u64s, type AccountContext, type QueryDeps, type VersionKeys } from './context.js';
import { parseQuery, queryKey, type Query } from './request.js';

/** Most rollup rows one query may read (each is opened and merged here). */
export const MAX_ROWS = 500_000;
/** Most series in one answer. */
export const MAX_SERIES = 1000;

export type SeriesPoint = [epochMillis: number, value: number | null];

export interface Series {
  tags: Record<string, string>;
  points: SeriesPoint[];
}

export interface QueryResult {
  series: Series[];
  meta: {
    metric: string;
    aggregation: string;
    interval: string;
    timezone: string;
    /** Start of the first bucket and end of the last one (epoch ms; the range actually answered). */
    from: number;
    to: number;
    /** Stored rollup level read: minute or hour. */
    /** Stored level read: minute, hour (with day packs), or hour with minute rows in the hours holding a bucket edge. */
    level: 'minute' | 'hour' | 'hour+minute';
    /** Rollup rows read. */
    rows: number;
    /** Rows that failed to open or decode: left out of the answer. */
    failedRows: number;
    /**
     * Rows that opened but were tampered with, detected and left out (a copy, a row back after
     * compaction merged it), plus merged rows whose stored `supersedes` names more than they seal.
     */
    tamperedRows: number;
    /** Whether this answer came from the in-memory cache. */
    cached: boolean;
  };
}

export interface QueryStats {
  storageMs: number;
  mergeMs: number;
  rows: number;
  /** Times the merge gave the event loop back (every SLICE_ROWS rows). */
  slices?: number;
}

/** Rows opened and merged between two turns of the event loop (so /healthz and ingest stay served during a big query). */
export const SLICE_ROWS = 1000;

export interface Row {
  b: number;
  v: number;
  s: string;
  /** the sealed aggregate (a view into the query's output) */
  a: Uint8Array;
  /** tag_keys joined by ',' (bound into the row's identity tag) */
  k: string;
  /** tag_values joined by ',' (bound into the row's identity tag) */
  t: string;
  /** Stored level: the query's level, or 2 for a day pack (absent: the query's level). */
  l?: number;
  /** The metric pseudonym as stored (the engine opens rows under the pseudonym it asked for). */
  m?: string;
  /** The row's part (bound into its identity since record format 2; a second row with the same one is a copy). */
  p: string;
  /** The stored `supersedes` column (compaction's to-do list; only the sealed list decides). */
  u?: string[];
}

interface Group {
  /** group-by tag value pseudonyms, parallel to query.groupBy ('0' = tag absent) */
  values: string[];
  aggs: (Aggregate | undefined)[];
}

/**
 * Validates `body` and answers it for `account`, through the cache of `deps` when there is
 * one. Throws CollectorError (400 for bad queries, 410 when the account has no keys).
 */
export async function runQuery(deps: QueryDeps, account: { accountId: string }, body: unknown, stats?: QueryStats): Promise<QueryResult> {
  const q = parseQuery(body);
  const { cache } = deps;
  const key = cache ? `query\u0000${queryKey(q)}` : '';
  const hit = cache?.get<QueryResult>(account.accountId, key);
  if (hit) return { series: hit.series, meta: { ...hit.meta, cached: true } };
  const gen = cache?.generation(account.accountId) ?? 0;
  const result = await executeQuery(deps, account.accountId, q, stats);
  cache?.set(account.accountId, key, result, gen);
  return result;
}

/** Answers a parsed query (no result cache). */
export async function executeQuery(deps: QueryDeps, accountId: string, q: Query, stats?: QueryStats): Promise<QueryResult> {
  const ctx = await accountContext(deps, accountId);
  const t0 = performance.now();
  const { sql, params, metricOf } = buildSql(ctx, q, await table(deps.store, 'rollups'));
  const rows = await readRowsSliced(await deps.store.queryBinary(sql, params), stats);
  const t1 = performance.now();
  if (stats) stats.rows = rows.length; // charged to the token's budget even when refused below
  if (rows.length > MAX_ROWS) {
    throw new CollectorError(400, 'query_too_large', `more than ${MAX_ROWS} stored rows; shorten the range, use a longer interval or filter`);
  }
  deps.onMerge?.(1);
  let merged: Awaited<ReturnType<typeof mergeRowsSliced>>;
  try {
    merged = await mergeRowsSliced(ctx, q, rows, metricOf, MAX_SERIES * ctx.versions.length, stats);
  } finally {
    deps.onMerge?.(-1);
  }
  const { groups, failed, tampered } = merged;
  const series = await labelAndFinalize(deps, ctx, q, groups);
  const t2 = performance.now();
  if (stats) Object.assign(stats, { storageMs: t1 - t0, mergeMs: t2 - t1, rows: rows.length });
  if (failed > 0) {
    deps.log?.warn({ accountId, rows: rows.length, failedRows: failed }, 'query: rollup rows failed to open and were left out');
    deps.onFailedRows?.(failed);
  }
  if (tampered > 0) {
    deps.log?.warn({ accountId, rows: rows.length, tamperedRows: tampered }, 'query: tampered rollup rows detected and left out');
    deps.onTamperedRows?.(tampered);
  }
  return {
    series,
    meta: {
      metric: q.metric,
      aggregation: q.aggregation,
      interval: q.interval,
      timezone: q.timezone,
      from: q.starts[0]!,
      to: q.end,
      level: q.level === 0 ? 'minute' : q.minuteHours ? 'hour+minute' : 'hour',
      rows: rows.length,
      failedRows: failed,
      tamperedRows: tampered,
      cached: false,
    },
  };
}

/** The columns of a Row, in the order readRows reads them (RowBinary); the engine and the catalog read rollups through them. */
export const ROW_COLUMNS = `toUInt8(level) AS l, toFloat64(toUnixTimestamp64Milli(bucket)) AS b, key_version AS v, toString(series) AS s, agg AS a,
  arrayStringConcat(arrayMap(x -> toString(x), tag_keys), ',') AS k, arrayStringConcat(arrayMap(x -> toString(x), tag_values), ',') AS t,
  toString(metric) AS m, part AS p, supersedes AS u`;

const NONE: string[] = [];
const readList = (r: RowBinaryReader): string[] => {
  const n = r.arrayLength();
  if (n === 0) return NONE;
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(r.string());
  return out;
};
const readRow = (r: RowBinaryReader): Row => ({
  l: r.u8(), b: r.f64(), v: r.u32(), s: r.string(), a: r.bytes(), k: r.string(), t: r.string(), m: r.string(), p: r.string(), u: readList(r),
});

/** Rows of a `SELECT ${ROW_COLUMNS}` read with store.queryBinary. */
export function readRows(bytes: Uint8Array): Row[] {
  const r = new RowBinaryReader(bytes);
  const rows: Row[] = [];
  while (!r.done) rows.push(readRow(r));
  return rows;
}

/** readRows with a turn of the event loop every 5 × SLICE_ROWS rows (decoding is cheaper than opening). */
async function readRowsSliced(bytes: Uint8Array, stats?: QueryStats): Promise<Row[]> {
  const r = new RowBinaryReader(bytes);
  const rows: Row[] = [];
  while (!r.done) {
    rows.push(readRow(r));
    if (rows.length % (5 * SLICE_ROWS) === 0) await nextTurn(stats);
  }
  return rows;
}

/** Gives the event loop a turn (pending I/O first: setImmediate runs after the poll phase). */
async function nextTurn(stats?: QueryStats): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (stats) stats.slices = (stats.slices ?? 0) + 1;
}

const tooManySeries = () =>
  new CollectorError(400, 'too_many_series', `more than ${MAX_SERIES} series; group by fewer tags or add a filter`);

/**
 * One SELECT; only pseudonyms, times, the level and the account id are bound. ClickHouse
 * filters by tag pseudonyms; grouping happens here, from the tag arrays the identity tag
 * covers (and the filters are checked again on them), so storage cannot relabel a row.
 */
export function buildSql(ctx: AccountContext, q: Query, rollups: string): { sql: string; params: Params; metricOf: Map<number, string> } {
  const params: Params = { acc: ctx.accountId, lvl: q.level, from: q.starts[0]!, to: q.end, lim: MAX_ROWS + 1 };
  const metricOf = new Map<number, string>();
  const perVersion = ctx.versions.map((v, i) => {
    const m = v.pseudonyms.metric(q.metric);
    metricOf.set(v.version, m);
    params[`m${i}`] = m;
    params[`v${i}`] = v.version;
    const parts = [`key_version = {v${i}:UInt32}`, `metric = {m${i}:UInt64}`];
    q.filter.forEach(([k, values, missing], j) => {
      const name = `f${i}_${j}`;
      let part = '0';
      if (values.length === 1) {
        params[name] = v.pseudonyms.tagValue(k, values[0]!);
        part = `has(tag_values, {${name}:UInt64})`;
      } else if (values.length > 1) {
        params[name] = values.map((value) => v.pseudonyms.tagValue(k, value));
        part = `hasAny(tag_values, ${u64s(name)})`;
      }
      if (missing) {
        params[`${name}k`] = v.pseudonyms.tagKey(k);
        part = `(${part} OR NOT has(tag_keys, {${name}k:UInt64}))`;
      }
      parts.push(part);
    });
    return `(${parts.join(' AND ')})`;
  });
  // Rows compaction replaced are left out by the engine, from the lists merged rows seal
  // (query/supersedes.ts): the SELECT reads every row of the range.
  const metrics = `metric IN (${ctx.versions.map((_, i) => `{m${i}:UInt64}`).join(', ')})`;
  const range = `account_id = {acc:String} AND level = {lvl:UInt8} AND ${metrics}
  AND bucket >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND bucket < fromUnixTimestamp64Milli({to:Int64}, 'UTC')`;
  const cols = ROW_COLUMNS;
  const filters = perVersion.length === 1 ? perVersion[0]! : `(${perVersion.join(' OR ')})`;
  if (q.level !== 1) {
    const sql = `SELECT ${cols}
FROM ${rollups}
WHERE ${range}
  AND ${filters}
LIMIT {lim:UInt32}`;
    return { sql, params, metricOf };
  }
  // Hour rows plus the day packs (query/days.ts) of the UTC days the range overlaps, and the
  // minute rows of the UTC hours holding a bucket edge (q.minuteHours).
  params.dfrom = dayOf(q.starts[0]!);
  const base = `account_id = {acc:String} AND ${metrics}`;
  let minutes = '';
  if (q.minuteHours) {
    params.mh = q.minuteHours.map(String);
    const m = `account_id = {acc:String} AND level = 0 AND ${metrics}
  AND bucket >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND bucket < fromUnixTimestamp64Milli({to:Int64}, 'UTC')`;
    minutes = `
  UNION ALL
  SELECT ${cols} FROM ${rollups}
  WHERE ${m} AND intDiv(toUnixTimestamp64Milli(bucket), 3600000) * 3600000 IN arrayMap(x -> toInt64(x), {mh:Array(String)})
    AND ${filters}`;
  }
  const sql = `SELECT * FROM (
${hourLevelSql(rollups, cols, base, filters)}${minutes}
)
LIMIT {lim:UInt32}`;
  return { sql, params, metricOf };
}

/** Per key version: the group-by key pseudonyms and, per filter, the accepted value pseudonyms. */
interface VersionPlan {
  groupKeys: string[];
  /** Accepted value pseudonyms, and the key's pseudonym when points without the key pass too. */
  filters: { accepted: Set<string>; missingKey?: string }[];
}

function plans(ctx: AccountContext, q: Query): Map<number, VersionPlan> {
  const out = new Map<number, VersionPlan>();
  for (const v of ctx.versions) {
    out.set(v.version, {
      groupKeys: q.groupBy.map((k) => v.pseudonyms.tagKey(k)),
      filters: q.filter.map(([k, values, missing]) => ({
        accepted: new Set(values.map((value) => v.pseudonyms.tagValue(k, value))),
        ...(missing ? { missingKey: v.pseudonyms.tagKey(k) } : {}),
      })),
    });
  }
  return out;
}

/**
 * The group of a row from its verified tag arrays (joined by ','), or null when it does not
 * pass the filters. Like `tag_values[indexOf(tag_keys, k)]`: '0' when the key is absent.
 */
function groupOf(plan: VersionPlan, k: string, t: string): { key: string; values: string[] } | null {
  const keys = k === '' ? [] : k.split(',');
  const values = t === '' ? [] : t.split(',');
  for (const f of plan.filters) if (!values.some((x) => f.accepted.has(x)) && !(f.missingKey !== undefined && !keys.includes(f.missingKey))) return null;
  const g = plan.groupKeys.map((gk) => {
    const i = keys.indexOf(gk);
    return i < 0 ? '0' : values[i] ?? '0';
  });
  return { key: g.join('\u0000'), values: g };
}

type Merged = { groups: Map<string, Group>; failed: number; tampered: number };

/** Opens, decodes and merges rows per (bucket, group), in one go. */
export function mergeRows(
  ctx: AccountContext,
  q: Query,
  rows: Row[],
  metricOf: Map<number, string>,
  maxGroups = Infinity,
): Merged {
  const m = merger(ctx, q, metricOf, maxGroups);
  for (const row of compactedFirst(rows)) m.add(row);
  return m.result();
}

/**
 * mergeRows in slices of SLICE_ROWS rows with a turn of the event loop between them (setImmediate:
 * pending I/O — /healthz, ingest — is served first), so the heaviest legal query never holds the
 * process for more than one slice. Counts the slices in `stats.slices`.
 */
export async function mergeRowsSliced(
  ctx: AccountContext,
  q: Query,
  rows: Row[],
  metricOf: Map<number, string>,
  maxGroups = Infinity,
  stats?: QueryStats,
): Promise<Merged> {
  const m = merger(ctx, q, metricOf, maxGroups);
  const ordered = compactedFirst(rows);
  let r = 0;
  const step = async (): Promise<void> => {
    if (r > 0 && r % SLICE_ROWS === 0) await nextTurn(stats);
    m.add(ordered[r++]!);
  };
  while (r < ordered.length && isCompacted(ordered[r]!.p)) await step();
  // the rows compaction wrote, opened first, are counted once every list is known
  while (m.settle(SLICE_ROWS)) await nextTurn(stats);
  while (r < ordered.length) await step();
  return m.result();
}

/** A row opened, before it is counted. */
interface Opened {
  row: Row;
  h: RowHandle;
  payload: Uint8Array;
  grp: { key: string; values: string[] };
  /** bucket index (rows of levels 0 and 1) */
  i: number;
}

/**
 * The merge state of one query; `add` is the hot loop: keep it lean. Rows compaction wrote come
 * first (compactedFirst): they are opened and held until the first other row (or `settle`), so
 * every sealed `supersedes` list is known before a row is counted (query/supersedes.ts).
 */
function merger(
  ctx: AccountContext,
  q: Query,
  metricOf: Map<number, string>,
  maxGroups: number,
): { add: (row: Row) => void; settle: (max: number) => boolean; result: () => Merged } {
  const { starts } = q;
  const n = starts.length;
  const groups = new Map<string, Group>();
  const bucketIndex = new Map<number, number>();
  const byVersion = plans(ctx, q);
  // (version, tag arrays) → group; rows of one series share it. Keyed by what the tag verifies.
  const groupCache = new Map<string, { key: string; values: string[] } | null>();
  const identity: { accountId: string; level: RollupLevel; bucket: number; metric: string; series: string; keyVersion: number; part: string } =
    { accountId: ctx.accountId, level: q.level, bucket: 0, metric: '', series: '', keyVersion: 0, part: '' };
  // Copies (same level, bucket, metric, series, key version, part: the part is bound into the
  // identity, so it cannot be renamed) and rows compaction replaced are left out.
  const rows = new Supersession();
  const held: Opened[] = [];
  let settled = 0;
  const withSketch = q.aggregation[0] === 'p';
  let failed = 0;
  const add = (grp: { key: string; values: string[] }, i: number, bytes: Uint8Array): void => {
    let g = groups.get(grp.key);
    const cur = g?.aggs[i];
    try {
      if (cur) return mergeEncoded(cur, bytes, withSketch); // unchanged when it throws
      const agg = emptyAggregate();
      mergeEncoded(agg, bytes, withSketch);
      if (!g) {
        if (groups.size >= maxGroups) throw tooManySeries();
        g = { values: grp.values, aggs: new Array(n) };
        groups.set(grp.key, g);
      }
      g.aggs[i] = agg;
    } catch (e) {
      if (e instanceof CollectorError) throw e;
      failed++;
    }
  };
  /** Opens a row (counted as failed when it does not open, as tampered when it is a copy); notes what it replaces. */
  const open = (row: Row, keys: VersionKeys, plan: VersionPlan, metric: string, level: RollupLevel, i: number): Opened | undefined => {
    identity.level = level; // a level this query reads: a row sealed at another level does not open
    identity.bucket = row.b;
    identity.metric = metric;
    identity.series = row.s;
    identity.keyVersion = row.v;
    identity.part = row.p;
    const opened = openRollupJoined(keys.dataKey, identity, row.k, row.t, row.a);
    const compacted = isCompacted(row.p);
    // a sealed list on a row no compaction wrote, or met after other rows: not what compaction writes
    if (!opened || (opened.sealsList && (!compacted || settled > 0))) {
      failed++;
      return undefined;
    }
    const h = rows.add(row.p, level, row.b, metric, row.s, row.v, opened, row.u);
    if (!h) return undefined; // a copy (counted)
    const ck = `${row.v}\u0001${row.k}\u0001${row.t}`;
    let grp = groupCache.get(ck);
    if (grp === undefined) groupCache.set(ck, (grp = groupOf(plan, row.k, row.t)));
    if (grp === null) {
      failed++; // storage returned a row outside the filter
      return undefined;
    }
    return { row, h, payload: opened.payload, grp, i };
  };

  // A (day, series, key version) is counted through at most one day pack: compaction leaves
  // one (an older one is listed by the newer and left out); a second is not trusted.
  const packedDays = new Set<string>();
  const from = starts[0]!;
  const minuteHours = q.minuteHours ? new Set(q.minuteHours) : undefined;
  /** Counts an opened row unless a row compaction wrote replaces it. */
  const count = (o: Opened): void => {
    if (rows.replaced(o.h)) return;
    const { row } = o;
    if (row.l !== 2) return add(o.grp, o.i, o.payload);
    const dayKey = `${row.v}\u0000${row.s}\u0000${row.b}`;
    if (packedDays.has(dayKey)) {
      failed++;
      return;
    }
    packedDays.add(dayKey);
    try {
      forEachInDayPack(o.payload, (h, bytes) => {
        const t = row.b + h * HOUR_MS;
        if (t < from || t >= q.end || minuteHours?.has(t)) return; // only its hours inside the range, not read from minutes
        let i = bucketIndex.get(t);
        if (i === undefined) bucketIndex.set(t, (i = locate(starts, t)));
        add(o.grp, i, bytes);
      });
    } catch {
      failed++; // a malformed pack (its hours before the fault are counted, like separate rows)
    }
  };
  /** Counts up to `max` held rows; whether some are left. */
  const settle = (max: number): boolean => {
    const end = Math.min(held.length, settled + max);
    for (; settled < end; settled++) count(held[settled]!);
    if (settled < held.length) return true;
    held.length = 0;
    settled = Number.MAX_SAFE_INTEGER; // every list is known: later rows are counted at once
    return false;
  };
  const addRow = (row: Row): void => {
    const keys = ctx.byVersion.get(row.v);
    const metric = metricOf.get(row.v);
    const plan = byVersion.get(row.v);
    let opened: Opened | undefined;
    if (row.l === 2) {
      if (q.level !== 1 || row.b % DAY_MS !== 0 || !keys || metric === undefined || !plan) {
        failed++;
        return;
      }
      opened = open(row, keys, plan, metric, 2, -1);
    } else {
      // With minute hours: a minute row only inside them, an hour row only outside them.
      const level: RollupLevel = minuteHours && row.l === 0 ? 0 : q.level;
      if (minuteHours) {
        const inMinutes = minuteHours.has(row.b - (row.b % HOUR_MS));
        if (level === 1 && inMinutes) return; // selected by the range; these hours come from minute rows
        if (level === 0 && !inMinutes) {
          failed++;
          return;
        }
      }
      let i = bucketIndex.get(row.b);
      if (i === undefined) bucketIndex.set(row.b, (i = locate(starts, row.b)));
      if (!keys || metric === undefined || !plan || i < 0 || row.b >= q.end) {
        failed++;
        return;
      }
      opened = open(row, keys, plan, metric, level, i);
    }
    if (!opened) return;
    if (settled === 0 && isCompacted(row.p)) held.push(opened);
    else {
      while (settle(Infinity));
      count(opened);
    }
  };
  return {
    add: addRow,
    settle,
    result: () => {
      while (settle(Infinity));
      return { groups, failed, tampered: rows.tampered };
    },
  };
}

/** Index of the bucket containing t (greatest start ≤ t), or −1. */
function locate(starts: number[], t: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  if (hi < 0 || t < starts[0]!) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

const UNKNOWN_LABEL = '(unknown)';

/**
 * 15 significant digits: what float64 sums of decimal inputs support. Drops the binary tail
 * of an addition (19.99 + 179.4 = 199.39000000000001 → 199.39); any value a point carried
 * (≤ 15 digits) is unchanged.
 */
export const roundFloat = (v: number | null): number | null => (v === null || Number.isInteger(v) ? v : Number(v.toPrecision(15)));

async function labelAndFinalize(deps: QueryDeps, ctx: AccountContext, q: Query, groups: Map<string, Group>): Promise<Series[]> {
  const { starts, aggregation } = q;
  const empty = finalize(emptyAggregate(), aggregation);
  const points = (aggs: (Aggregate | undefined)[]): SeriesPoint[] =>
    starts.map((t, i) => {
      const a = aggs[i];
      return [t, a === undefined ? empty : roundFloat(finalize(a, aggregation))];
    });

  if (q.groupBy.length === 0) {
    return [{ tags: {}, points: points(groups.get('')?.aggs ?? []) }];
  }
  const pseudonyms = new Set<string>();
  for (const g of groups.values()) for (const p of g.values) pseudonyms.add(p);
  const { entries, failed } = await lookupDictionary(deps, ctx, 2, pseudonyms);
  if (failed) deps.log?.warn({ accountId: ctx.accountId, failed }, 'query: dictionary entries failed to open');

  // Label groups; groups of different key versions with the same labels are one series.
  const labelled = new Map<string, { tags: Record<string, string>; aggs: (Aggregate | undefined)[] }>();
  for (const g of groups.values()) {
    const tags: Record<string, string> = {};
    q.groupBy.forEach((k, j) => {
      const p = g.values[j]!;
      if (p === '0') return; // the tag is absent on these points
      const e = entries.get(p);
      tags[k] = e && e.extra === k ? e.text : UNKNOWN_LABEL;
    });
    const key = JSON.stringify(q.groupBy.map((k) => tags[k] ?? null));
    const same = labelled.get(key);
    if (!same) labelled.set(key, { tags, aggs: g.aggs });
    else {
      for (let i = 0; i < starts.length; i++) {
        const a = g.aggs[i];
        if (a === undefined) continue;
        const b = same.aggs[i];
        if (b === undefined) same.aggs[i] = a;
        else mergeInto(b, a);
      }
    }
  }
  if (labelled.size > MAX_SERIES) throw tooManySeries();
  return [...labelled.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, s]) => ({ tags: s.tags, points: points(s.aggs) }));
}
