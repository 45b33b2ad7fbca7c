/**
 * The CPU part of a processing tick: opens inner layers, validates points, aggregates them per
 * (level, bucket, series) — minute rows, and hour and quarter-hour rows for late points only
 * (LEVELS) — and seals rollup rows and new dictionary entries. Pure apart from
 * its caches (`TickState`): the processor runs it inline or in a worker thread
 * (tick-worker.ts) and writes what it returns.
 */
import { equalBytes, isZero, LIMITS, openInner, type Point, type KeyPair } from '@cipherstat/protocol';
import { destroyKeys, inflateRaw } from '@cipherstat/protocol/node';
import { hpkeOpen, rawX25519 } from '../x25519.js';
import { heldBytes, type DictKind, type DictRow, type EncodedRollups, type ProcessedRow, type RejectRow, type RollupLevel, type RollupRef, type RollupRow } from '../storage/types.js';
import { encodeRollups } from '../storage/rollups.js';
import { Pseudonyms } from '../at-rest/pseudonyms.js';
import { joinPseudonyms, SEAL_OVERHEAD, sealDict, sealRollupInto } from '../at-rest/records.js';
import { addPoint, emptyAggregate, encodeAggregateTo, type Aggregate } from '../rollup/index.js';
import { ByteWriter } from '../rollup/bytes.js';
import { FifoMap, LruMap } from '../fifo-map.js';
import { LATE_HOUR_MS, LEVEL } from '../rollup/levels.js';
import { openVisitor } from '../at-rest/visitor.js';

/**
 * The levels a point is added to: its minute row always; its hour and quarter-hour rows only when
 * its UTC hour ended LATE_HOUR_MS before the tick (late data: compaction may have derived that
 * hour already). Compaction derives the hour and quarter-hour rows of every other point from the
 * minute rows (compaction/derive.ts) — one sealed row per series and tick instead of three.
 */
const LEVELS: { level: RollupLevel; ms: number }[] = [
  { level: LEVEL.minute, ms: 60_000 },
  { level: LEVEL.hour, ms: 3_600_000 },
  // Quarter hours: hourly and daily buckets of zones at :30 and :45 (Asia/Kolkata, Asia/Kathmandu).
  { level: LEVEL.quarter, ms: 900_000 },
];
const DAY = 86_400_000;
const HOUR = 3_600_000;

export interface TickBatch {
  accountId: string;
  batchId: string;
  sealed: Uint8Array;
  pointCount: number;
  receivedAt: number;
  /** The envelope header's time (the sender's clock when the batch was made); absent in older callers: no correction. */
  createdAt?: number;
  /** Envelope version (1 when absent): v2 inner layers are HPKE. */
  version?: number;
  /** Envelope flags (0 when absent): FLAG_DEFLATE, a deflated inner plaintext (inflated, bounded). */
  flags?: number;
  /** The sealed visitor hash of a browser's batch (ingest/visitors.ts), when it has one. */
  visitor?: Uint8Array;
}

export interface TickKey {
  version: number;
  publicKey: Uint8Array;
  secretKey: Uint8Array;
  dataKey: Uint8Array;
  macKey: Uint8Array;
}

/** What the main thread resolves per account; null: deleted or shredded (its batches are dropped). */
export interface TickAccount {
  /** Every key version, oldest first (the last one is current). */
  keys: TickKey[];
  retentionDays: number;
  confidential: boolean;
}

/**
 * Cardinality limits per account: what makes processing expensive is new series and new
 * dictionary entries (each an HMAC, a sealed dictionary row and new rollup rows). Points over a
 * limit are rejected (counted per account by code) before any of that is spent.
 */
export interface TickLimits {
  /** Distinct tag sets per (metric name, kind): `series_limit` beyond. */
  seriesPerMetric: number;
  /** New names, tag keys and tag values per hour: `new_values_limit` beyond. */
  newValuesPerHour: number;
}

export interface TickInput {
  rows: TickBatch[];
  accounts: Map<string, TickAccount | null>;
  now: number;
  part: string;
  limits?: TickLimits;
  /** The lease epoch the tick is written under (0 or absent: none), sealed into no record: storage/fences.ts. */
  epoch?: number;
}

export interface TickOutput {
  /** The rollup rows (what `insert` encodes); not in the output the tick worker posts (SentTickOutput). */
  rollups: RollupRow[];
  /** New dictionary entries (not written by an earlier tick as far as this state knows). */
  dict: DictRow[];
  processed: ProcessedRow[];
  rejects: RejectRow[];
  /** Batches of confidential accounts: deleted once processed. */
  confidential: { accountId: string; batchId: string }[];
  /** Metric increments. */
  batchRejects: Record<string, number>;
  pointsProcessed: number;
  pointsRejected: number;
  /** This tick's lookups in the per-account caches (TickState), by cache. */
  cacheLookups: CacheLookups;
  /** CPU this tick spent per account (ms) and the points it claimed (processing fairness, fair-queue.ts). */
  costs: Record<string, { ms: number; points: number }>;
  /** Accounts with points rejected for cardinality in this tick. */
  limited: string[];
  /** The rollup rows as one insert body, built here (the worker) rather than on the main thread. */
  insert: EncodedRollups;
  /** Where the tick's CPU part went (ms of wall time in its thread): opening inner layers, aggregating, sealing rows, encoding the insert. */
  timings: TickTimings;
}

export interface TickTimings {
  open: number;
  aggregate: number;
  seal: number;
  encode: number;
}

export type CacheLookups = Record<'tick_account' | 'series' | 'pseudonym', { hit: number; miss: number }>;
const noLookups = (): CacheLookups => ({ tick_account: { hit: 0, miss: 0 }, series: { hit: 0, miss: 0 }, pseudonym: { hit: 0, miss: 0 } });

/** Identifies a dictionary entry of `TickState.known`. */
export type DictKey = Pick<DictRow, 'accountId' | 'keyVersion' | 'kind' | 'pseudonym'>;

interface SeriesDescriptor {
  /** `${accountId}\0${metric}\0${series}` */
  id: string;
  metric: string;
  series: string;
  tagKeys: string[];
  tagValues: string[];
  /** tagKeys and tagValues joined by ',' (the sealed identity's text: records.ts joinPseudonyms). */
  keysText: string;
  valuesText: string;
  /** During a tick: the rollup entry this series used last, per level (a shortcut past the map's string keys); cleared when the tick ends. */
  last?: ({ bucket: number; entry: RollupEntry } | undefined)[];
}

const dictKey = (d: DictKey) => `${d.accountId}\u0000${d.keyVersion}\u0000${d.kind}\u0000${d.pseudonym}`;

const destroyTickKeys = (keys: readonly TickKey[]) => {
  for (const k of keys) destroyKeys(k.secretKey, k.dataKey, k.macKey);
};
const sameKeys = (a: readonly TickKey[], b: readonly TickKey[]) =>
  a.length === b.length &&
  a.every((k, i) => k.version === b[i]!.version && equalBytes(k.secretKey, b[i]!.secretKey) && equalBytes(k.dataKey, b[i]!.dataKey) && equalBytes(k.macKey, b[i]!.macKey));
/** Entries of the per-account caches of a TickState (each entry's memory measured with V8's heap: ~0.75 KB per series, ~0.3 KB per pseudonym). */
export interface TickCacheSizes {
  /** Accounts' pseudonym functions (one per account and key version: an imported MAC key). */
  accounts: number;
  /** Pseudonyms (metric names, tag keys, tag values, tag sets) of all accounts. */
  pseudonyms: number;
  /** Series descriptors of all accounts. */
  series: number;
}
/**
 * Sized for 10,000 shops × 20 series with room (a storefront collector; ~190 MB of series and
 * ~75 MB of pseudonyms when full), least recently used evicted first: beyond that the tail's
 * entries come and go while the busy accounts' stay.
 */
export const TICK_CACHE_SIZES: TickCacheSizes = { accounts: 20_000, pseudonyms: 250_000, series: 250_000 };
/** Accounts whose keys a worker holds at most (beyond: all dropped, then re-received). */
const MAX_HELD = 100_000;

/**
 * Caches that outlive a tick, each bounded whatever the number of accounts and keyed by account
 * id first (forgetAccount): pseudonym functions per account key, pseudonyms, series descriptors,
 * dictionary entries written.
 */
export class TickState {
  readonly known = new FifoMap<string, true>(500_000);
  /** Least recently used first (LruMap): a busy account's entries stay whatever the long tail does. */
  readonly pseudonyms: LruMap<string, Pseudonyms>;
  /** `${accountId}\0${n}\0${label}\0${text}` → pseudonym for every account, n numbering the Pseudonyms built. */
  readonly pseudonymCache: LruMap<string, string>;
  private seq = 0;
  /** Lookups of the current tick (zeroed when one begins; the object stays: Pseudonyms count into it). */
  readonly lookups = noLookups();
  /** Per series (account, key version, kind, name, tags): its pseudonyms, dictionary entries written. */
  readonly seriesCache: LruMap<string, SeriesDescriptor>;
  /**
   * The worker's own copies of account keys, one set per account: a tick's input brings fresh
   * copies, which are zeroed at once when they equal the held set. Dropping an account zeroes
   * them. Inline (`ownsKeys` false) the keys are the keyring's buffers, which it zeroes itself.
   */
  private readonly held = new Map<string, TickKey[]>();

  /**
   * Cardinality, in this thread's memory only (since it started; an evicted entry counts again):
   * per (account, kind, metric name) the tag sets seen, per account the new dictionary entries
   * in the current and the previous hour.
   */
  readonly seriesPerMetric = new FifoMap<string, Set<string>>(100_000);
  readonly newValues = new FifoMap<string, { start: number; current: number; previous: number }>(100_000);

  constructor(
    private readonly ownsKeys = false,
    sizes: Partial<TickCacheSizes> = {},
  ) {
    const n = { ...TICK_CACHE_SIZES, ...sizes };
    this.pseudonyms = new LruMap(n.accounts);
    this.pseudonymCache = new LruMap(n.pseudonyms);
    this.seriesCache = new LruMap(n.series);
  }

  /** After a tick that failed in this thread (its output never left it): its dictionary entries are emitted again. */
  forgetDict(dict: DictKey[]): void {
    if (dict.length) this.seriesCache.clear();
    for (const d of dict) this.known.delete(dictKey(d));
  }

  /** Drops an account's cached pseudonyms (and MAC key), dictionary state and held keys (zeroed). */
  forgetAccount(accountId: string): void {
    this.known.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.seriesCache.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.pseudonyms.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.pseudonymCache.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.seriesPerMetric.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
    this.newValues.delete(accountId);
    const held = this.held.get(accountId);
    this.held.delete(accountId);
    if (held) destroyTickKeys(held);
  }

  /** Zeroes every key copy held and drops every cache (a retiring worker thread). */
  forgetAll(): void {
    for (const id of [...this.held.keys()]) this.forgetAccount(id);
    this.known.clear();
    this.seriesCache.clear();
    this.pseudonyms.clear();
    this.pseudonymCache.clear();
    this.seriesPerMetric.clear();
    this.newValues.clear();
  }

  /** The pseudonym function of an account's current key, its results in the shared bounded cache. */
  pseudonymsFor(accountId: string, current: TickKey): Pseudonyms {
    const pk = `${accountId}\u0000${current.version}`;
    let p = this.pseudonyms.get(pk);
    if (p) this.lookups.tick_account.hit++;
    else {
      this.lookups.tick_account.miss++;
      p = new Pseudonyms(current.macKey, { cache: this.pseudonymCache, prefix: `${accountId}\u0000${++this.seq}\u0000`, stats: this.lookups.pseudonym });
      this.pseudonyms.set(pk, p);
    }
    return p;
  }

  /** The key set to compute with: inline the input's; in a worker its held copy (see `held`). */
  keysFor(accountId: string, keys: TickKey[]): TickKey[] {
    if (!this.ownsKeys) return keys;
    const held = this.held.get(accountId);
    if (held && sameKeys(held, keys)) {
      if (held !== keys) destroyTickKeys(keys);
      return held;
    }
    if (held) this.forgetAccount(accountId); // new versions or a wipe: nothing derived from the old set stays
    if (this.held.size >= MAX_HELD) for (const id of [...this.held.keys()]) this.forgetAccount(id);
    this.held.set(accountId, keys);
    return keys;
  }

  /** New dictionary entries of an account over about the last hour (sliding, from two fixed windows). */
  recentNewValues(accountId: string, now: number): number {
    const w = this.window(accountId, now);
    return w.current + w.previous * (1 - (now - w.start) / HOUR);
  }

  countNewValue(accountId: string, now: number): void {
    this.window(accountId, now).current++;
  }

  private window(accountId: string, now: number): { start: number; current: number; previous: number } {
    let w = this.newValues.get(accountId);
    if (!w) this.newValues.set(accountId, (w = { start: now, current: 0, previous: 0 }));
    if (now - w.start >= HOUR) {
      w.previous = now - w.start < 2 * HOUR ? w.current : 0;
      w.current = 0;
      w.start = now;
    }
    return w;
  }
}

interface Context {
  accountId: string;
  now: number;
  limits: TickLimits | undefined;
  keys: TickKey[];
  pairs: KeyPair[];
  pseudonyms: Pseudonyms;
  retentionDays: number;
  confidential: boolean;
}

interface RollupEntry {
  row: Omit<RollupRow, 'agg' | 'part' | 'writtenAt'>;
  agg: Aggregate;
  /** Its series' (SeriesDescriptor). */
  d: SeriesDescriptor;
}
type Rollups = Map<string, RollupEntry>;

/**
 * Computes one tick. On an exception, the dictionary entries it already counted as known are
 * forgotten again (nothing of this tick gets written).
 */
export function computeTick(state: TickState, input: TickInput): TickOutput {
  const dict: DictRow[] = [];
  const touched: SeriesDescriptor[] = [];
  for (const c of Object.values(state.lookups)) c.hit = c.miss = 0;
  try {
    return compute(state, input, dict, touched);
  } catch (e) {
    state.forgetDict(dict);
    throw e;
  } finally {
    for (const d of touched) d.last = undefined; // never reused by another tick
  }
}

function compute(state: TickState, { rows, accounts, now, part, limits, epoch }: TickInput, dict: DictRow[], touched: SeriesDescriptor[]): TickOutput {
  const rollups: Rollups = new Map();
  const rejects = new Map<string, number>();
  const processed: ProcessedRow[] = [];
  const contexts = new Map<string, Context | null>();
  const confidential: { accountId: string; batchId: string }[] = [];
  const batchRejects: Record<string, number> = {};
  let pointsProcessed = 0;
  let pointsRejected = 0;
  const costs: Record<string, { ms: number; points: number }> = {};
  const limited = new Set<string>();
  const charge = (accountId: string, ms: number, points: number) => {
    const c = (costs[accountId] ??= { ms: 0, points: 0 });
    c.ms += ms;
    c.points += points;
  };
  const reject = (accountId: string, code: string, n: number) => {
    if (n > 0) rejects.set(`${accountId}\u0000${code}`, (rejects.get(`${accountId}\u0000${code}`) ?? 0) + n);
  };

  // The CPU of each batch, charged to its account when the next one starts.
  let last: TickBatch | undefined;
  let started = 0;
  const settle = () => {
    if (last) charge(last.accountId, performance.now() - started, last.pointCount);
  };
  const timings: TickTimings = { open: 0, aggregate: 0, seal: 0, encode: 0 };
  for (const row of rows) {
    settle();
    last = row;
    started = performance.now();
    let ctx = contexts.get(row.accountId);
    if (ctx === undefined) contexts.set(row.accountId, (ctx = context(state, row.accountId, accounts.get(row.accountId) ?? null, now, limits)));
    const mark = (accepted: number, rejected: number) =>
      processed.push({ accountId: row.accountId, batchId: row.batchId, processedAt: now, accepted, rejected, part, version: row.version ?? 1 });
    if (!ctx) {
      // Deleted account: its keys are gone; the batch is dropped and counted, never opened.
      reject(row.accountId, 'account_deleted', row.pointCount);
      batchRejects.account_deleted = (batchRejects.account_deleted ?? 0) + 1;
      mark(0, row.pointCount);
      continue;
    }
    let opened: ReturnType<typeof openInner> | undefined;
    const opening = performance.now();
    // A sender whose clock runs ahead: a header time later than the batch's arrival by more than
    // the tolerated skew (no batch is made after it arrives). Its points are checked in the
    // sender's frame and moved back by that much (docs/protocol.md, "A sender's clock ahead").
    const ahead = row.createdAt !== undefined && row.createdAt - row.receivedAt > LIMITS.maxFutureMs ? row.createdAt - row.receivedAt : 0;
    for (const account of ctx.pairs) {
      opened = openInner(row.sealed, { account, accountId: row.accountId, batchId: row.batchId, count: row.pointCount, now: row.receivedAt + ahead, x25519: rawX25519, version: row.version, hpke: hpkeOpen, flags: row.flags, inflate: inflateRaw });
      if (opened.ok || opened.code !== 'inner_auth_failed') break;
    }
    if (!opened || !opened.ok) {
      timings.open += performance.now() - opening;
      let code: string = opened?.code ?? 'inner_auth_failed';
      // A wiped account (oldest key version above 1): sealed to the write key the wipe destroyed.
      if (code === 'inner_auth_failed' && ctx.keys[0]!.version > 1) code = 'stale_write_key';
      // One per batch: anyone can seal garbage to a public account key and claim any count.
      reject(row.accountId, code, 1);
      batchRejects[code] = (batchRejects[code] ?? 0) + 1;
      pointsRejected += row.pointCount;
      mark(0, row.pointCount);
      continue;
    }
    const { points, rejects: bad } = opened.value;
    if (ahead) for (const p of points) p.time -= ahead;
    for (const r of bad) reject(row.accountId, r.code, 1);
    const visitor = row.visitor?.length ? openVisitor(ctx.pairs, row.accountId, row.batchId, row.visitor) : undefined;
    if (visitor === null) reject(row.accountId, 'visitor_auth_failed', 1); // the points count; the visitor does not
    const aggregating = performance.now();
    timings.open += aggregating - opening;
    let accepted = 0;
    for (const p of points) {
      const over = addToRollups(state, rollups, dict, row.accountId, ctx, p, touched, visitor ?? undefined);
      if (over === null) accepted++;
      else {
        reject(row.accountId, over, 1);
        limited.add(row.accountId);
      }
    }
    timings.aggregate += performance.now() - aggregating;
    pointsProcessed += accepted;
    pointsRejected += points.length - accepted + bad.length;
    mark(accepted, points.length - accepted + bad.length);
    if (ctx.confidential) confidential.push({ accountId: row.accountId, batchId: row.batchId });
  }
  settle();

  const sealing = performance.now();
  const rollupRows = sealRows(rollups, contexts, part, epoch ?? 0, now, charge);
  const encoding = performance.now();
  timings.seal = encoding - sealing;
  const insert = encodeRollups(rollupRows);
  timings.encode = performance.now() - encoding;
  const rejectRows: RejectRow[] = [...rejects].map(([k, count]) => {
    const [accountId, code] = k.split('\u0000') as [string, string];
    return { accountId, code, count, at: now };
  });
  return { rollups: rollupRows, dict, processed, rejects: rejectRows, confidential, batchRejects, pointsProcessed, pointsRejected, cacheLookups: structuredClone(state.lookups), costs, limited: [...limited], insert, timings };
}

/**
 * The tick's rows, each aggregate encoded into one writer and sealed straight into one buffer
 * (the rows' `agg` are views into it): no buffer per row. The buffer belongs to these rows only
 * (the worker keeps the rows: they cross as `insert` and their keys, forTransfer). Sealing is
 * charged to each row's account.
 */
function sealRows(rollups: Rollups, contexts: Map<string, Context | null>, part: string, epoch: number, now: number, charge: (accountId: string, ms: number, points: number) => void): RollupRow[] {
  const w = new ByteWriter(); // the plaintexts: dropped once sealed
  const ends = new Uint32Array(rollups.size);
  let i = 0;
  for (const { agg } of rollups.values()) {
    encodeAggregateTo(agg, w);
    ends[i++] = w.length;
  }
  const plain = w.written();
  const arena = new Uint8Array(w.length + rollups.size * SEAL_OVERHEAD);
  const rows: RollupRow[] = new Array(rollups.size);
  const id = { accountId: '', level: 0 as RollupLevel, bucket: 0, metric: '', series: '', keyVersion: 0, part };
  let start = 0;
  let at = 0;
  i = 0;
  for (const { row, d } of rollups.values()) {
    const t0 = performance.now();
    const ctx = contexts.get(row.accountId)!;
    const aggregate = plain.subarray(start, (start = ends[i]!));
    const sealed = arena.subarray(at, (at += SEAL_OVERHEAD + aggregate.length));
    id.accountId = row.accountId;
    id.level = row.level;
    id.bucket = row.bucket;
    id.metric = row.metric;
    id.series = row.series;
    id.keyVersion = row.keyVersion;
    sealRollupInto(ctx.keys[ctx.keys.length - 1]!.dataKey, id, d.keysText, d.valuesText, aggregate, sealed);
    rows[i++] = {
      accountId: row.accountId, level: row.level, bucket: row.bucket, metric: row.metric, series: row.series, tagKeys: row.tagKeys, tagValues: row.tagValues,
      keyVersion: row.keyVersion, expiresAt: row.expiresAt, part, epoch, writtenAt: now, agg: sealed,
    };
    charge(row.accountId, performance.now() - t0, 0);
  }
  return rows;
}

function context(state: TickState, accountId: string, account: TickAccount | null, now: number, limits: TickLimits | undefined): Context | null {
  if (!account || !account.keys.length) return null;
  // A zeroed key was destroyed (shred or wipe) after the tick read it: the tick fails and its
  // batches are retried, under the new keys or dropped as deleted, never sealed under zeros.
  if (account.keys.some((k) => isZero(k.dataKey) || isZero(k.secretKey) || isZero(k.macKey))) throw new Error('an account key was destroyed during the tick');
  const keys = state.keysFor(accountId, account.keys);
  const current = keys[keys.length - 1]!;
  const pseudonyms = state.pseudonymsFor(accountId, current);
  // Newest key first when opening.
  const pairs = [...keys].reverse().map((k) => ({ publicKey: k.publicKey, secretKey: k.secretKey }));
  return { accountId, now, limits, keys, pairs, pseudonyms, retentionDays: account.retentionDays, confidential: account.confidential };
}

/**
 * Whether a series not in the series cache may be added: null, or the code of the cardinality
 * limit it is over. Counts it as seen when it may.
 */
function cardinality(state: TickState, ctx: Context, p: Point): string | null {
  const limits = ctx.limits;
  if (!limits) return null;
  const mk = `${ctx.accountId}\u0000${p.kind}\u0000${p.name}`;
  let seen = state.seriesPerMetric.get(mk);
  if (!seen) state.seriesPerMetric.set(mk, (seen = new Set()));
  const tags = Object.keys(p.tags).sort();
  let sk = '';
  for (const t of tags) sk += `${t}\u0000${p.tags[t]}\u0000`;
  if (seen.has(sk)) return null;
  if (seen.size >= limits.seriesPerMetric) return 'series_limit';
  if (state.recentNewValues(ctx.accountId, ctx.now) >= limits.newValuesPerHour) return 'new_values_limit';
  seen.add(sk);
  return null;
}

/** Adds a point to the tick's rollups; null, or the code of the cardinality limit that refused it. */
function addToRollups(state: TickState, rollups: Rollups, dict: DictRow[], accountId: string, ctx: Context, p: Point, touched: SeriesDescriptor[], visitor: Uint8Array | undefined): string | null {
  const keyVersion = ctx.keys[ctx.keys.length - 1]!.version;
  let ck = `${accountId}\u0000${keyVersion}\u0000${p.kind}\u0000${p.name}`;
  for (const t in p.tags) ck += `\u0000${t}\u0000${p.tags[t]}`;
  let d = state.seriesCache.get(ck);
  if (d) state.lookups.series.hit++;
  else {
    state.lookups.series.miss++;
    const over = cardinality(state, ctx, p);
    if (over) return over;
    const ps = ctx.pseudonyms;
    const dataKey = ctx.keys[ctx.keys.length - 1]!.dataKey;
    const tags = Object.entries(p.tags).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const metric = ps.metric(p.name);
    const series = ps.series(tags);
    const tagKeys = tags.map(([k]) => ps.tagKey(k));
    const tagValues = tags.map(([k, v]) => ps.tagValue(k, v));
    const remember = (kind: DictKind, pseudonym: string, text: string, extra?: string) => {
      const k = `${accountId}\u0000${keyVersion}\u0000${kind}\u0000${pseudonym}`;
      if (state.known.has(k)) return;
      state.known.set(k, true);
      state.countNewValue(accountId, ctx.now);
      const entry = extra === undefined ? { text } : { text, extra };
      dict.push({ accountId, kind, pseudonym, keyVersion, ciphertext: sealDict(dataKey, accountId, kind, pseudonym, entry), firstSeen: p.time });
    };
    remember(0, metric, p.name, p.kind);
    tags.forEach(([k, v], i) => {
      remember(1, tagKeys[i]!, k);
      remember(2, tagValues[i]!, v, k);
    });
    d = { id: `${accountId}\u0000${metric}\u0000${series}`, metric, series, tagKeys, tagValues, keysText: joinPseudonyms(tagKeys), valuesText: joinPseudonyms(tagValues) };
    state.seriesCache.set(ck, d);
  }
  const { metric, series, tagKeys, tagValues } = d;
  let last = d.last;
  if (!last) {
    last = d.last = [];
    touched.push(d);
  }
  const levels = p.time - (((p.time % HOUR) + HOUR) % HOUR) + HOUR <= ctx.now - LATE_HOUR_MS ? LEVELS.length : 1;
  for (let l = 0; l < levels; l++) {
    const { level, ms } = LEVELS[l]!;
    const bucket = p.time - (((p.time % ms) + ms) % ms);
    const hit = last[l];
    let r = hit && hit.bucket === bucket ? hit.entry : undefined;
    if (!r) {
      const k = `${level}\u0000${bucket}\u0000${d.id}`;
      r = rollups.get(k);
      if (!r) {
        r = {
          row: { accountId, level, bucket, metric, series, tagKeys, tagValues, keyVersion, expiresAt: bucket + ms + ctx.retentionDays * DAY },
          agg: emptyAggregate(),
          d,
        };
        rollups.set(k, r);
      }
      last[l] = { bucket, entry: r };
    }
    addPoint(r.agg, p.value, p.time, visitor);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Across the thread boundary.

/**
 * The output as the tick worker posts it: the rollup rows left out (they are encoded in `insert`,
 * which the main thread writes as it is) and their group keys sent as one string. Structured
 * clone of ~6,000-8,000 row objects per storefront tick (strings, tag arrays, a view per row) cost
 * the worker ~15-45 ms to serialize and the main thread ~20-40 ms to read back (and its GC the
 * objects); one string is a copy. The main thread needs the keys only when a tick fails
 * (rollupRefs: its rows are deleted by key).
 */
export function forTransfer(out: TickOutput): SentTickOutput {
  let keys = '[';
  for (let i = 0; i < out.rollups.length; i++) {
    const r = out.rollups[i]!;
    // metric and series are UInt64 pseudonyms in decimal (encodeRollups refused the tick otherwise), level and bucket numbers: only the account id needs quoting
    keys += `${i ? ',' : ''}[${JSON.stringify(r.accountId)},${r.level},${r.bucket},"${r.metric}","${r.series}"]`;
  }
  // The dictionary entries' ciphertexts copied into one buffer: one transfer instead of one per entry.
  let bytes = 0;
  for (const d of out.dict) bytes += d.ciphertext.length;
  const arena = new Uint8Array(bytes);
  let at = 0;
  const dict = out.dict.map((d) => {
    const ciphertext = arena.subarray(at, (at += d.ciphertext.length));
    ciphertext.set(d.ciphertext);
    return { ...d, ciphertext };
  });
  const { rollups: _rows, ...rest } = out;
  return { ...rest, rollupKeys: keys + ']', dict };
}

/**
 * A tick's output as the tick worker posts it (forTransfer): no rollup row objects, their group
 * keys as one JSON text instead (rollupRefs reads it), the dictionary ciphertexts views into one
 * buffer. Its own type, so that code on the main thread cannot read rows that are not there.
 */
export type SentTickOutput = Omit<TickOutput, 'rollups'> & { rollupKeys: string };

/** The keys of a tick's rollup rows under `part` (a failed tick's rows are deleted by them): from the rows computed here, or from the keys of an output that crossed threads. */
export function rollupRefs(out: TickOutput | SentTickOutput, part: string): RollupRef[] {
  const keys: [string, RollupLevel, number, string, string][] =
    'rollupKeys' in out ? JSON.parse(out.rollupKeys) : out.rollups.map((r) => [r.accountId, r.level, r.bucket, r.metric, r.series]);
  return keys.map(([accountId, level, bucket, metric, series]) => ({ accountId, level, bucket, metric, series, part }));
}

/** A tick input for postMessage: the sealed batches copied into one transferable buffer. */
export interface PackedTickInput extends Omit<TickInput, 'rows'> {
  rows: (Omit<TickBatch, 'sealed' | 'visitor'> & { offset: number; length: number; visitorLength: number })[];
  bytes: ArrayBuffer;
}

/** What the main thread sends the tick worker: ticks, and at the end `retire` (zero your key copies and answer). */
export type WorkerRequest = { type: 'tick'; id: number; input: PackedTickInput } | { type: 'retire'; id: number };

export type WorkerReply = { id: number; ok: true; output?: SentTickOutput } | { id: number; ok: false; error: string };

/**
 * Copies the sealed batches into one buffer (a batch's bytes may be a view into a bigger
 * buffer, which structured clone would copy whole and transfer would take from its owner).
 */
export function packInput(input: TickInput): PackedTickInput {
  let total = 0;
  for (const r of input.rows) total += heldBytes(r);
  const buf = new Uint8Array(total);
  let offset = 0;
  // each batch's sealed bytes, then its sealed visitor (if any)
  const rows = input.rows.map(({ accountId, batchId, pointCount, receivedAt, createdAt, version, flags, sealed, visitor }) => {
    const at = offset;
    buf.set(sealed, offset);
    offset += sealed.length;
    if (visitor) buf.set(visitor, offset);
    offset += visitor?.length ?? 0;
    return { accountId, batchId, pointCount, receivedAt, createdAt, version, flags, offset: at, length: sealed.length, visitorLength: visitor?.length ?? 0 };
  });
  // every other field as it is: naming them here dropped one each time a field was added (the
  // envelope version once, the cardinality limits until a test compared them)
  const { rows: _rows, ...rest } = input;
  return { ...rest, rows, bytes: buf.buffer };
}

export function unpackInput(p: PackedTickInput): TickInput {
  const { rows: packed, bytes, ...rest } = p;
  const rows = packed.map(({ offset, length, visitorLength, ...r }) => ({
    ...r,
    sealed: new Uint8Array(bytes, offset, length),
    ...(visitorLength ? { visitor: new Uint8Array(bytes, offset + length, visitorLength) } : {}),
  }));
  return { ...rest, rows };
}

/** What a posted output transfers instead of copying: its insert's buffers (its own: TsvWriter) and forTransfer's one dictionary buffer. */
export function transferables(out: SentTickOutput): ArrayBuffer[] {
  const list = new Set<ArrayBuffer>([out.insert.body.buffer as ArrayBuffer, out.insert.rowEnds.buffer as ArrayBuffer]);
  if (out.dict.length) list.add(out.dict[0]!.ciphertext.buffer as ArrayBuffer);
  return [...list];
}
