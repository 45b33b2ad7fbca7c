/**
 * The query engine. ClickHouse selects the rollup rows of one metric by pseudonyms and UTC
 * time (one SQL query, bound parameters only: account id, level, times, pseudonyms); this
 * process opens each row with the data key of its key version (rows.ts), merges the partial
 * aggregates per (time-zone bucket, group) and finalizes the requested statistic (merge.ts) —
 * in a query worker thread for all but small reads (mergers.ts), so the main thread only does
 * the I/O: storage, the dictionary, JSON.
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
 *   row seals (rollup/supersedes.ts), never in SQL; a copy of a row, a row that came back after
 *   it was merged, or a stored `supersedes` list naming more than the sealed one is counted in
 *   `meta.tamperedRows`. A heavy query is read in several statements over consecutive UTC
 *   days (hour level) or minutes (readInStatements), so every day's (or bucket's) rows come
 *   from one statement; the reads of `rollups` in one statement see one snapshot of the table
 *   with ClickHouse's `enable_shared_storage_snapshot_in_query` (default since 25.12, chDB
 *   included; older servers: set it in the profile, else an hour-level query racing the insert
 *   of a day pack may, rarely, count it and its hour rows once each);
 * - hour-level queries read the day packs (level 2, rollup/days.ts) of the UTC days the range
 *   overlaps, keeping their hours inside the range, plus the hour rows no pack supersedes
 *   (today's, and late data for packed days); quarter-hour queries likewise the quarter packs
 *   (level 4) and quarter-hour rows; a (day, series, key version) is counted through at most
 *   one pack of each kind (an older one is replaced by the newer, which lists it);
 * - quarter-hour queries whose bucket edges fall in few UTC hours (days in Asia/Kathmandu) read
 *   a (day, series, key version) without a quarter pack from its hour rows and hour pack, and
 *   quarter-hour rows only in the hours holding an edge (`quarterHours`); one with a quarter
 *   pack as before; merge.ts decides per (day, series, key version), never both for one hour;
 * - hour and quarter-hour queries read minute rows for the UTC hours from the derivation
 *   watermark on (their hour rows are not derived yet: compaction/derive.ts) and leave out the
 *   hour-level rows and pack slots there, never counting both for one hour;
 * - a row's group and filter match come from its tag pseudonym arrays, which its identity tag
 *   covers: storage rewriting `tag_values` makes the row fail to open (never regrouped).
 */
import { CollectorError } from '../errors.js';
import type { RollupSelection, Store, WaitObserver } from '../storage/types.js';
import { accountContext, lookupDictionary, type AccountContext, type QueryDeps } from './context.js';
import { MAX_SERIES, tooManySeries, type MergePlan } from './merge.js';
import { inlineMergers, type MergeSession, type Merging } from './mergers.js';
import { parseQuery, queryKey, type Query } from './request.js';
import { LEVEL } from '../rollup/levels.js';
import { DAY_MS, HOUR_MS } from '../rollup/days.js';
import { countRows } from '../rollup/rows.js';
import { buckets, type Interval } from '../rollup/time.js';
import { FifoMap } from '../fifo-map.js';

export { MAX_SERIES, roundFloat } from './merge.js';

/** `map`'s entry for `store`, made by `make` the first time (state this process keeps per store). */
function perStore<T>(map: WeakMap<Store, T>, store: Store, make: () => T): T {
  let v = map.get(store);
  if (v === undefined) map.set(store, (v = make()));
  return v;
}

const quarterSince = new WeakMap<Store, Promise<number>>();
/** From when every point has quarter-hour rows (read once per store; a failed read is retried next time). */
function quarterLevelSince(store: Store): Promise<number> {
  let p = quarterSince.get(store);
  if (!p) {
    p = store.rollupLevelSince(LEVEL.quarter);
    p.catch(() => quarterSince.delete(store));
    quarterSince.set(store, p);
  }
  return p;
}

/** How long this process reuses a read of the derivation watermark for later queries (the query routes; QueryDeps.watermarkTtlMs). */
export const WATERMARK_TTL_MS = 1000;

const derivedReads = new WeakMap<Store, { p: Promise<number>; until: number }>();
/**
 * The derivation watermark; queries that arrive while a read of it is under way share that read,
 * and for `ttlMs` after it answered (one statement fewer each under concurrent queries; storage
 * runs one at a time). It only grows: a value read a moment earlier costs more minute rows,
 * never another answer.
 */
function derivedUntil(store: Store, ttlMs: number): Promise<number> {
  const hit = derivedReads.get(store);
  if (hit && performance.now() < hit.until) return hit.p;
  const p = store.derivedUntil();
  const entry = { p, until: Infinity }; // in flight: shared
  derivedReads.set(store, entry);
  p.then(
    () => {
      if (ttlMs > 0) entry.until = performance.now() + ttlMs;
      else if (derivedReads.get(store) === entry) derivedReads.delete(store);
    },
    () => void (derivedReads.get(store) === entry && derivedReads.delete(store)),
  );
  return p;
}

/** Most rollup rows one query may read (each is opened and merged). */
export const MAX_ROWS = 500_000;

export type SeriesPoint = [epochMillis: number, value: number | null];

export interface Series {
  tags: Record<string, string>;
  points: SeriesPoint[];
}

/** Where a series the engine answered keeps its bucket starts and values (not enumerable: not part of the answer). */
const COLUMNS = Symbol('columns');
interface Columns {
  starts: readonly number[];
  values: readonly (number | null)[];
}

/**
 * A series of the engine's answer: `points` are made when first read (the points form,
 * Prometheus, tests), from the values and the query's bucket starts, which the columns writer
 * reads directly. A dashboard's 24-hour minute p95 by a 20-value tag is 28,800 `[start, value]`
 * arrays the columns form never needed, kept by the result cache (and promoted, then collected
 * by the main thread's full GCs) once made.
 */
function answerSeries(tags: Record<string, string>, starts: readonly number[], values: readonly (number | null)[]): Series {
  let points: SeriesPoint[] | undefined;
  const s = { tags } as Series;
  Object.defineProperty(s, 'points', { enumerable: true, get: () => (points ??= values.map((v, i) => [starts[i]!, v])) });
  Object.defineProperty(s, COLUMNS, { value: { starts, values } satisfies Columns });
  return s;
}

/** A series' bucket starts and values when the engine made it (answerSeries), else undefined. */
const columnsOf = (s: Series): Columns | undefined => (s as Series & { [COLUMNS]?: Columns })[COLUMNS];

/** The bucket starts every series of an answer shares when the engine made them all (answerSeries), else undefined: the writers then write from the values, without making points. */
function sharedStarts(series: readonly Series[]): readonly number[] | undefined {
  const starts = series.length ? columnsOf(series[0]!)?.starts : undefined;
  return starts !== undefined && series.every((x) => columnsOf(x)?.starts === starts) ? starts : undefined;
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
    /** Stored level read: minute, quarter (15 minutes), hour (with day packs), or hour with minute rows in the hours holding a bucket edge. */
    level: 'minute' | 'quarter' | 'hour' | 'hour+minute';
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

/**
 * `JSON.stringify(result)`, the same text, about twice as fast for the answers a dashboard asks
 * (20 series × 720 hours, or × 1,440 minutes: 14,400-28,800 points): the series of an answer
 * share their bucket starts, so each bucket's `[start,` is written once and reused, and no
 * generic walk visits every point's array. Values the engine never makes (NaN, ±Infinity) are
 * `null`, as JSON.stringify writes them.
 */
export function queryResultJson(result: QueryResult): string {
  const { series } = result;
  const shared = sharedStarts(series);
  const direct = shared !== undefined;
  const starts = shared ?? (series[0]?.points ?? []).map((p) => p[0]);
  const prefixes = starts.map((t) => `[${t},`);
  let out = '{"series":[';
  for (let s = 0; s < series.length; s++) {
    const x = series[s]!;
    out += `${s ? ',' : ''}{"tags":${JSON.stringify(x.tags)},"points":[`;
    if (direct) {
      const { values } = columnsOf(x)!;
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        out += `${i ? ',' : ''}${prefixes[i]}${v === null || !Number.isFinite(v) ? 'null' : v}]`;
      }
    } else {
      const { points } = x;
      for (let i = 0; i < points.length; i++) {
        const [t, v] = points[i]!;
        out += `${i ? ',' : ''}${starts[i] === t ? prefixes[i] : `[${JSON.stringify(t)},`}${v === null || !Number.isFinite(v) ? 'null' : v}]`;
      }
    }
    out += ']}';
  }
  return `${out}],"meta":${JSON.stringify(result.meta)}}`;
}

/**
 * The answer in the `columns` form (request.ts QUERY_FORMATS):
 * `{"buckets":[t0,t1,…],"series":[{"tags":{…},"values":[v0,v1,…]}],"meta":{…}}` — every bucket
 * start once, each series' values in bucket order: the same numbers and nulls as
 * queryResultJson's points, in 20-54 % of the bytes for a dashboard's grouped answers (the
 * bucket starts are most of the points form). No series: the buckets of `meta`'s range all the same.
 */
export function queryResultColumnsJson(result: QueryResult): string {
  const { series, meta } = result;
  const shared = sharedStarts(series);
  const direct = shared !== undefined;
  const starts = shared ?? (series.length ? series[0]!.points.map((p) => p[0]) : buckets(meta.from, meta.to, meta.interval as Interval, meta.timezone));
  let out = `{"buckets":[${starts.join(',')}],"series":[`;
  for (let s = 0; s < series.length; s++) {
    const x = series[s]!;
    out += `${s ? ',' : ''}{"tags":${JSON.stringify(x.tags)},"values":[`;
    if (direct) {
      const { values } = columnsOf(x)!;
      if (values.length !== starts.length) throw new Error(`query answer: series ${s} has ${values.length} values for ${starts.length} buckets`);
      for (let i = 0; i < values.length; i++) {
        const v = values[i]!;
        out += `${i ? ',' : ''}${v === null || !Number.isFinite(v) ? 'null' : v}`;
      }
    } else {
      const { points } = x;
      if (points.length !== starts.length) throw new Error(`query answer: series ${s} has ${points.length} points for ${starts.length} buckets`);
      for (let i = 0; i < points.length; i++) {
        const [t, v] = points[i]!;
        if (t !== starts[i]) throw new Error(`query answer: series ${s} point ${i} is not at its bucket start`);
        out += `${i ? ',' : ''}${v === null || !Number.isFinite(v) ? 'null' : v}`;
      }
    }
    out += ']}';
  }
  return `${out}],"meta":${JSON.stringify(meta)}}`;
}

/**
 * The phases of one query as it runs, in order (routes.ts writes them as the answer's
 * `Server-Timing` and counts them in cipherstat_query_phase_seconds_total): each is the wall
 * time from the end of the one before, so together they are the request's time in the handler.
 * auth: the read token; body: reading and parsing the body; context: the derivation watermark,
 * the request's checks, the account's keys and pseudonyms, the selection; wait: statements
 * waiting for the engine's lane (embedded chDB runs one at a time); count: the statement sizing a
 * long range; statement: the reads of rows (the engine, and its answer back on this thread);
 * handoff: this thread handing each statement's rows to the merge (cut and posted to the query
 * workers); merge: waiting for the workers to open and merge the rest once the last statement
 * answered; labels: the groups' labels (the dictionary); finish: the workers finalizing the
 * cells into series; json: writing the answer; shared: waiting for an identical query's answer;
 * cache: an answer from the cache.
 */
export const QUERY_PHASES = ['auth', 'body', 'context', 'wait', 'count', 'statement', 'handoff', 'merge', 'labels', 'finish', 'json', 'shared', 'cache'] as const;
export type QueryPhase = (typeof QUERY_PHASES)[number];

/** Where one query's time goes (QUERY_PHASES); `mark` charges the time since the last mark to a phase. */
export class QueryTiming {
  readonly ms: Partial<Record<QueryPhase, number>> = {};
  /** Open and merge of the rows, summed over the threads that did it (query workers, or this thread for a small read): not a phase of the wall, it overlaps `statement`, `handoff` and `merge`. */
  openMs = 0;
  private last: number;
  readonly started: number;

  constructor(now = performance.now()) {
    this.started = this.last = now;
  }

  mark(phase: QueryPhase): void {
    const now = performance.now();
    this.ms[phase] = (this.ms[phase] ?? 0) + (now - this.last);
    this.last = now;
  }

  /** ms from the start to the last mark. */
  get totalMs(): number {
    return this.last - this.started;
  }

  /** The `Server-Timing` header's value: the phases that ran, `open`, and `total` (ms, 0.1 ms). */
  header(): string {
    const parts = QUERY_PHASES.filter((p) => this.ms[p] !== undefined).map((p) => `${p};dur=${this.ms[p]!.toFixed(1)}`);
    if (this.openMs > 0) parts.push(`open;dur=${this.openMs.toFixed(1)}`);
    parts.push(`total;dur=${this.totalMs.toFixed(1)}`);
    return parts.join(', ');
  }
}

export interface QueryStats {
  /** The query's phases (routes.ts: Server-Timing), marked as it runs. */
  timing?: QueryTiming;
  /** Until storage answered the last statement (the count first; the merge of the earlier statements runs meanwhile). */
  storageMs: number;
  /** From then until the answer (the rest of the merge, labels, finalizing). */
  mergeMs: number;
  rows: number;
  /** The answer of an identical query that was waiting for storage (sharedQuery): these figures are that query's. */
  shared?: boolean;
}

/**
 * Validates `body` and answers it for `account`, through the cache of `deps` when there is
 * one. Throws CollectorError (400 for bad queries, 410 when the account has no keys).
 */
export async function runQuery(deps: QueryDeps, account: { accountId: string }, body: unknown, stats?: QueryStats): Promise<QueryResult> {
  // The derivation watermark, read per query (one small statement, shared by queries arriving
  // while it runs or within deps.watermarkTtlMs after): hours from it on are read from minute
  // rows. It only grows; an older one costs more rows, never another answer.
  const watermark = derivedUntil(deps.store, deps.watermarkTtlMs ?? 0);
  const q = parseQuery(body, { quarterSince: await quarterLevelSince(deps.store), derivedUntil: await watermark });
  stats?.timing?.mark('context');
  const { cache } = deps;
  const key = cache ? `query\u0000${queryKey(q)}` : '';
  const hit = cache?.get<QueryResult>(account.accountId, key);
  if (hit) {
    stats?.timing?.mark('cache');
    return { series: hit.series, meta: { ...hit.meta, cached: true } };
  }
  const gen = cache?.generation(account.accountId) ?? 0;
  const result = await sharedQuery(deps, account.accountId, q, stats);
  cache?.set(account.accountId, key, result, gen);
  return result;
}

/** A query whose first read still waits for the engine, which identical queries arriving meanwhile share. */
interface Waiting {
  answer: Promise<QueryResult>;
  stats: QueryStats;
}
const waitingByStore = new WeakMap<Store, Map<string, Waiting>>();

/**
 * Answers a parsed query, or shares the answer of an identical one (same account, key versions
 * and queryKey) whose first read of rows has not started yet: it is still before that read or
 * the read waits for the engine (embedded chDB's lane: QueryStore.selectRollups' `onWait`). That
 * read takes the engine's snapshot after this query arrived, so the shared answer is one this
 * query could have computed itself, never an older one. Once the read runs, later queries read
 * for themselves. Under concurrent dashboards (one statement at a time, ~10-30 ms each) the
 * identical queries queued behind one another are read and merged once. A server runs a read
 * at once (it never says it waits): there only queries arriving before the read is sent share.
 */
async function sharedQuery(deps: QueryDeps, accountId: string, q: Query, stats?: QueryStats): Promise<QueryResult> {
  const ctx = await accountContext(deps, accountId);
  const key = `${accountId}\u0000${ctx.versions.map((v) => v.version).join(',')}\u0000${queryKey(q)}`;
  const waiting = perStore(waitingByStore, deps.store, () => new Map<string, Waiting>());
  const shared = waiting.get(key);
  if (shared) {
    stats?.timing?.mark('context');
    const result = await shared.answer;
    if (stats) Object.assign(stats, shared.stats, { shared: true, timing: stats.timing });
    stats?.timing?.mark('shared');
    return { series: result.series, meta: { ...result.meta } };
  }
  // Shared from now until its first read of rows runs (`answer` is set before a joiner can read it).
  const entry: Waiting = { answer: undefined as unknown as Promise<QueryResult>, stats: { storageMs: 0, mergeMs: 0, rows: 0, ...(stats?.timing ? { timing: stats.timing } : {}) } };
  waiting.set(key, entry);
  const stop = (): void => void (waiting.get(key) === entry && waiting.delete(key));
  entry.answer = executeQuery(deps, accountId, q, entry.stats, ctx, (isWaiting) => isWaiting || stop());
  try {
    return await entry.answer;
  } finally {
    stop();
    if (stats) Object.assign(stats, entry.stats);
  }
}

/** Answers a parsed query (no result cache); `onWait` is told when its first read of rows waits for the engine and when it runs. */
export async function executeQuery(
  deps: QueryDeps,
  accountId: string,
  q: Query,
  stats?: QueryStats,
  context?: AccountContext,
  onWait?: WaitObserver,
): Promise<QueryResult> {
  const ctx = context ?? (await accountContext(deps, accountId));
  const timing = stats?.timing;
  const t0 = performance.now();
  const { selection, metricOf } = rowSelection(ctx, q);
  let t1 = t0;
  deps.onMerge?.(1);
  let merging: Merging;
  try {
    // Each statement is merged (by the query workers) while the next is read.
    const session = (deps.mergers ?? inlineMergers).begin(mergePlan(ctx, q, metricOf));
    timing?.mark('context');
    try {
      await readInStatements(deps, selection, session, onWait, timing);
    } catch (e) {
      session.abort();
      throw e;
    }
    t1 = performance.now();
    merging = await session.end();
    timing?.mark('merge');
    if (timing) timing.openMs += merging.openMs ?? 0;
  } finally {
    deps.onMerge?.(-1);
  }
  const { rows, failed, tampered } = merging;
  let series: Series[];
  try {
    if (stats) stats.rows = rows; // charged to the token's budget even when refused below
    if (merging.tooLarge) {
      throw new CollectorError(400, 'query_too_large', `more than ${MAX_ROWS} stored rows; shorten the range, use a longer interval or filter`);
    }
    series = await labelAndFinalize(deps, ctx, q, merging, timing);
  } finally {
    merging.drop();
  }
  const t2 = performance.now();
  if (stats) Object.assign(stats, { storageMs: t1 - t0, mergeMs: t2 - t1, rows });
  if (failed > 0) {
    deps.log?.warn({ accountId, rows, failedRows: failed }, 'query: rollup rows failed to open and were left out');
    deps.onFailedRows?.(failed);
  }
  if (tampered > 0) {
    deps.log?.warn({ accountId, rows, tamperedRows: tampered }, 'query: tampered rollup rows detected and left out');
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
      level: q.level === LEVEL.minute ? 'minute' : q.level === LEVEL.quarter ? 'quarter' : q.minuteHours ? 'hour+minute' : 'hour',
      rows,
      failedRows: failed,
      tamperedRows: tampered,
      cached: false,
    },
  };
}

/** Rows one statement of a query's read holds at most (unless one UTC day, or hour at minute level, holds more). */
export const STATEMENT_ROWS = 20_000;

/** A range up to this long is first read in one statement (most fit; see readInStatements). */
export const READ_WHOLE_MS = 2 * DAY_MS;

/**
 * What the last read of a selection found: its rows, and when it was read in several statements,
 * the ends of those statements' ranges and the rows the count gave each (the next read uses
 * them without counting again, until a statement holds more than its bound).
 */
interface SelectionSize {
  rows: number;
  /** The statements' ranges (with `counted`, and the bound `most` they were cut for). */
  ends?: number[];
  counted?: number[];
  most?: number;
}
const sizesByStore = new WeakMap<Store, FifoMap<string, SelectionSize>>();
/** What the last read of a selection found (by its JSON, limit left out), for the most recent selections. */
const selectionSizes = (store: Store): FifoMap<string, SelectionSize> => perStore(sizesByStore, store, () => new FifoMap(1000));

/** A read of rows that has not started yet, which identical reads arriving meanwhile share; told to `observers` when it starts. */
interface WaitingRead {
  bytes: Promise<Uint8Array>;
  observers: WaitObserver[];
  sharers: number;
}
const readsByStore = new WeakMap<Store, Map<string, WaitingRead>>();

/**
 * `store.selectRollups(sel)`, or the answer of an identical read (the same selection, limit
 * included: another query may group or finalize the same rows differently — a dashboard's
 * "orders" and "orders by country") that has not started yet: it waits for the engine, so its
 * snapshot is taken after this read was asked for. Each sharer gets its own copy of the bytes
 * (a merge moves them to a worker). `onWait` (the query's first read) is told when the read it
 * gets runs; a store that does not say, when the call is made, that it waits (a server, a
 * wrapper) is taken to run it at once: nothing shares it.
 */
function sharedRead(store: Store, sel: RollupSelection, onWait?: WaitObserver): Promise<Uint8Array> {
  const reads = perStore(readsByStore, store, () => new Map<string, WaitingRead>());
  const key = JSON.stringify(sel);
  const shared = reads.get(key);
  if (shared) {
    shared.sharers++;
    if (onWait) shared.observers.push(onWait);
    return shared.bytes.then((b) => new Uint8Array(b));
  }
  const entry: WaitingRead = { bytes: undefined as unknown as Promise<Uint8Array>, observers: onWait ? [onWait] : [], sharers: 0 };
  const started = (): void => {
    if (reads.get(key) === entry) reads.delete(key);
    const told = entry.observers.splice(0);
    for (const o of told) o(false);
  };
  let waits = false;
  reads.set(key, entry);
  entry.bytes = store.selectRollups(sel, (waiting) => {
    if (waiting) waits = true;
    else started();
  });
  if (!waits) started();
  entry.bytes.then(started, started); // a read abandoned while it waited: no longer shared either
  // the sharers (all known once it answers) copy before anyone moves the bytes
  return entry.bytes.then((b) => (entry.sharers > 0 ? new Uint8Array(b) : b));
}

/**
 * Reads a query's rows in statements over consecutive time ranges of at most STATEMENT_ROWS
 * rows each. A range of at most READ_WHOLE_MS (a dashboard's "last 24 hours") is first read
 * whole with a limit of STATEMENT_ROWS + 1 rows: if it holds more, those rows are dropped and
 * it is read as a longer one (not again while the last read of the same selection found more).
 * A longer range is sized from one statement first counting the
 * rows per UTC day (hour at minute level) without reading them: chDB runs one statement at a
 * time, so a heavy query read in one statement would hold back every insert (acknowledgements,
 * processing writes) for its whole read, while each statement costs the engine a fixed
 * ~5–10 ms however few rows it returns (most queries fit one). A longer range whose last read
 * (the same selection: a dashboard's ranges are whole buckets) held at most STATEMENT_ROWS
 * rows is read whole first like a short one, without the count; one that needed several
 * statements is read again in the ranges of its last count, without counting, until a statement
 * outgrows its bound (more than STATEMENT_ROWS rows, or than its one unit held when counted:
 * then the next read counts again). Ranges are split at UTC days
 * (hour and quarter-hour levels: a day's rows and its day pack, the scope of a sealed
 * `supersedes` list, are read by one statement) or UTC hours (minute level: an hour's minute
 * rows and its minute pack), so what supersedes.ts decides per scope comes from one statement, which sees one
 * snapshot; the count may see another (it only sizes the ranges). At most MAX_ROWS + 1 rows in
 * all (more: the merge answers query_too_large). Each statement's rows go to `session` as they
 * arrive, so the workers merge while storage reads the next.
 */
async function readInStatements(deps: QueryDeps, selection: RollupSelection, session: MergeSession, onWait?: WaitObserver, timing?: QueryTiming): Promise<void> {
  const unit = selection.level === LEVEL.minute ? HOUR_MS : DAY_MS;
  const most = deps.statementRows ?? STATEMENT_ROWS;
  // `onWait` hears about the first read only; a store that does not tell, when the call is made,
  // that it waits (a server, a wrapper) is taken to run it at once.
  const read = async (sel: RollupSelection): Promise<Uint8Array> => {
    const first = onWait;
    onWait = undefined;
    const observe: WaitObserver | undefined = timing ? (waiting) => (waiting || timing.mark('wait'), first?.(waiting)) : first;
    const bytes = await sharedRead(deps.store, sel, observe);
    timing?.mark('statement');
    return bytes;
  };
  const add = (bytes: Uint8Array, n: number): void => {
    session.add(bytes, n);
    timing?.mark('handoff');
  };
  const sizes = selectionSizes(deps.store);
  const key = JSON.stringify({ ...selection, limit: 0 });
  const known = sizes.get(key);
  // Read whole first (a limit of one statement's rows + 1): a short range whose size is not known,
  // or a selection whose last read fitted one statement. One known to hold more is not read whole
  // only to be dropped.
  if (known === undefined ? selection.to - selection.from <= READ_WHOLE_MS : known.rows <= most) {
    const bytes = await read({ ...selection, limit: Math.min(most, MAX_ROWS) + 1 });
    const n = countRows(bytes);
    if (n <= most) {
      sizes.set(key, { rows: n });
      add(bytes, n);
      return;
    }
  }
  // The ranges: those of the last count of this selection (they only size the statements, so
  // any cut at a unit serves), else from a count of the rows per unit.
  let ends = known?.most === most ? known.ends : undefined;
  let counted = known?.counted;
  if (!ends || !counted) {
    const slots = await deps.store.countRollups(selection, unit);
    timing?.mark('count');
    ends = [];
    counted = [];
    let rows = 0;
    for (const slot of slots) {
      // a cut at the slot's start: after `from` (the first slot may begin before it), after rows
      if (rows > 0 && rows + slot.rows > most && slot.at > selection.from && slot.at < selection.to) {
        ends.push(slot.at);
        counted.push(rows);
        rows = 0;
      }
      rows += slot.rows;
    }
    ends.push(selection.to);
    counted.push(rows);
  }
  let rows = 0;
  // a statement over its bound (more than `most` rows, or than its unit alone held when counted): count again next time
  let outgrown = false;
  for (let i = 0, from = selection.from; i < ends.length && rows <= MAX_ROWS; from = ends[i++]!) {
    const bytes = await read({ ...selection, from, to: ends[i]!, limit: MAX_ROWS + 1 - rows });
    const n = countRows(bytes);
    rows += n;
    if (n > Math.max(most, counted[i]!)) outgrown = true;
    add(bytes, n);
  }
  sizes.set(key, outgrown || rows > MAX_ROWS || rows <= most ? { rows } : { rows, ends, counted, most });
}

/** What merging needs of a query (merge.ts): per key version its data key and the pseudonyms to match. */
export function mergePlan(ctx: AccountContext, q: Query, metricOf: Map<number, string>, maxGroups = MAX_SERIES * ctx.versions.length): MergePlan {
  return {
    accountId: ctx.accountId,
    level: q.level,
    starts: q.starts,
    end: q.end,
    ...(q.minuteHours ? { minuteHours: q.minuteHours } : {}),
    ...(q.quarterHours ? { quarterHours: q.quarterHours } : {}),
    ...(q.minuteFrom !== undefined ? { minuteFrom: q.minuteFrom } : {}),
    aggregation: q.aggregation,
    maxRows: MAX_ROWS,
    maxGroups,
    versions: ctx.versions.map((v) => ({
      version: v.version,
      dataKey: v.dataKey,
      metric: metricOf.get(v.version)!,
      groupKeys: q.groupBy.map((k) => v.pseudonyms.tagKey(k)),
      filters: q.filter.map(([k, values, missing]) => ({
        accepted: values.map((value) => v.pseudonyms.tagValue(k, value)),
        ...(missing ? { missingKey: v.pseudonyms.tagKey(k) } : {}),
      })),
    })),
  };
}

/**
 * The rows a query reads (storage: QueryStore.selectRollups); only pseudonyms, times, the level
 * and the account id go to storage. ClickHouse filters by tag pseudonyms; grouping happens here,
 * from the tag arrays the identity tag covers (and the filters are checked again on them), so
 * storage cannot relabel a row. Rows compaction replaced are left out by the reader, from the
 * lists merged rows seal (rollup/supersedes.ts): the selection reads every row of the range.
 */
export function rowSelection(ctx: AccountContext, q: Query): { selection: RollupSelection; metricOf: Map<number, string> } {
  const metricOf = new Map<number, string>();
  const versions = ctx.versions.map((v) => {
    const metric = v.pseudonyms.metric(q.metric);
    metricOf.set(v.version, metric);
    return {
      version: v.version,
      metric,
      filters: q.filter.map(([k, values, missing]) => ({
        accepted: values.map((value) => v.pseudonyms.tagValue(k, value)),
        ...(missing ? { missingKey: v.pseudonyms.tagKey(k) } : {}),
      })),
    };
  });
  const selection: RollupSelection = {
    accountId: ctx.accountId,
    level: q.level,
    from: q.starts[0]!,
    to: q.end,
    ...(q.level === LEVEL.hour && q.minuteHours ? { minuteHours: q.minuteHours } : {}),
    ...(q.level === LEVEL.quarter && q.quarterHours ? { quarterHours: q.quarterHours } : {}),
    ...(q.minuteFrom !== undefined ? { minuteFrom: q.minuteFrom } : {}),
    versions,
    limit: MAX_ROWS + 1,
  };
  return { selection, metricOf };
}

const UNKNOWN_LABEL = '(unknown)';

/** Labels the merged groups (the dictionary), merges groups with the same labels, finalizes. */
async function labelAndFinalize(deps: QueryDeps, ctx: AccountContext, q: Query, merging: Merging, timing?: QueryTiming): Promise<Series[]> {
  const { starts } = q;
  if (q.groupBy.length === 0) {
    const [values] = await merging.finish(merging.groups.map(() => 0), 1);
    const series = [answerSeries({}, starts, values!)];
    timing?.mark('finish');
    return series;
  }
  const pseudonyms = new Set<string>();
  for (const values of merging.groups) for (const p of values) pseudonyms.add(p);
  const { entries, failed } = await lookupDictionary(deps, ctx, 2, pseudonyms);
  if (failed) deps.log?.warn({ accountId: ctx.accountId, failed }, 'query: dictionary entries failed to open');

  // Label groups; groups of different key versions with the same labels are one series.
  const labelled = new Map<string, { tags: Record<string, string>; index: number }>();
  const seriesOf = merging.groups.map((values) => {
    const tags: Record<string, string> = {};
    q.groupBy.forEach((k, j) => {
      const p = values[j]!;
      if (p === '0') return; // the tag is absent on these points
      const e = entries.get(p);
      tags[k] = e && e.extra === k ? e.text : UNKNOWN_LABEL;
    });
    const key = JSON.stringify(q.groupBy.map((k) => tags[k] ?? null));
    let s = labelled.get(key);
    if (!s) labelled.set(key, (s = { tags, index: labelled.size }));
    return s.index;
  });
  if (labelled.size > MAX_SERIES) throw tooManySeries();
  timing?.mark('labels');
  const values = await merging.finish(seriesOf, labelled.size);
  const series = [...labelled.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, s]) => answerSeries(s.tags, starts, values[s.index]!));
  timing?.mark('finish');
  return series;
}
