/**
 * The one storage interface of the collector. Two implementations (embedded chDB and
 * a ClickHouse server through @clickhouse/client) run the same schema and the same
 * conformance suite. Everything stored here is either ciphertext, a keyed pseudonym,
 * a time bucket or a count: never a key, never a plaintext metric name, tag or value.
 *
 * Conventions:
 * - times are epoch milliseconds (number) in and out;
 * - pseudonyms are UInt64 in ClickHouse and decimal strings in TypeScript
 *   (JSON cannot carry 64-bit integers exactly);
 * - binary columns (ciphertext) are Uint8Array in and out and are stored as raw bytes.
 */
import type { AccountTable } from './schema.js';
import type { CallStats, WaitObserver } from './lane.js';
export type { CallStats, WaitObserver } from './lane.js';

export type AccountState = 'active' | 'deactivated' | 'shredded';

export interface AccountRow {
  accountId: string;
  /** Monotonic per account; the row with the highest version wins. */
  version: number;
  state: AccountState;
  createdAt: number;
  updatedAt: number;
  deactivatedAt: number | null;
  /** When a deactivated account is due to be shredded. */
  shredAfter: number | null;
  shreddedAt: number | null;
  /** hex SHA-256 of the read token; the token itself is never stored. */
  readTokenHash: string;
  allowedOrigins: string[];
  retentionDays: number;
  confidential: boolean;
  /** The operator's name for the account ('' when none; plaintext, like the origins). */
  name?: string;
}

/** A batch as ingest stores it: the inner layer, still sealed to the account key. */
export interface BatchRow {
  accountId: string;
  batchId: string;
  receivedAt: number;
  createdAt: number;
  pointCount: number;
  sdk: string;
  /** Envelope version the batch came in (1 when absent): how its inner layer is sealed. */
  version?: number;
  /** The envelope's flags (0 when absent; version 2 FLAG_DEFLATE: the inner plaintext is deflated). */
  flags?: number;
  sealed: Uint8Array;
  /** The visitor hash of a browser's batch sealed to the account key (ingest/visitors.ts); absent otherwise. */
  visitor?: Uint8Array;
  expiresAt: number;
  /**
   * Not stored: what ingest knew of the account when it took the batch (hand-offs only; a batch
   * the poll reads has none), so a tick need not wait for account state (process/processor.ts).
   */
  seen?: AccountSeen;
}

/** The bytes a batch holds in memory while it waits (its sealed inner layer and sealed visitor): what the writer's and the processing queue's byte caps count. */
export const heldBytes = (r: Pick<BatchRow, 'sealed' | 'visitor'>): number => r.sealed.length + (r.visitor?.length ?? 0);

/** An account's settings processing needs, as a node saw them at `at` (its account cache's read time). */
export interface AccountSeen {
  retentionDays: number;
  confidential: boolean;
  at: number;
}

export interface ProcessedRow {
  accountId: string;
  batchId: string;
  processedAt: number;
  accepted: number;
  rejected: number;
  /** The rollup `part` written for this batch (rollups whose part has no processed row are orphans). */
  part: string;
  /** Envelope version of the batch (1 when absent). */
  version?: number;
  /** The lease epoch of the tick that wrote it (0 or absent: no lease, never fenced; fences.ts). */
  epoch?: number;
}

/** Rollup levels by name: rollup/levels.ts `LEVEL` (0 = minute, 1 = hour, 2 = day pack, the hour aggregates of one UTC day written by compaction). */
import type { PackedLevel, QueryLevel, RollupLevel } from '../rollup/levels.js';
export type { RollupLevel };

/** An encrypted partial aggregate of one series (metric + full tag set) in one bucket. */
export interface RollupRow {
  accountId: string;
  level: RollupLevel;
  /** Bucket start, epoch ms (UTC-aligned minute or hour). */
  bucket: number;
  /** Pseudonym of the metric name. */
  metric: string;
  /** Pseudonym of the whole tag set. */
  series: string;
  /** Pseudonyms of tag keys, parallel to tagValues. */
  tagKeys: string[];
  /** Pseudonyms of key=value pairs, parallel to tagKeys. */
  tagValues: string[];
  keyVersion: number;
  /** Unique id of this partial row (several partial rows may exist per bucket and series). */
  part: string;
  /** XChaCha20-Poly1305 ciphertext of the aggregate under the account data key (records.ts). */
  agg: Uint8Array;
  /** When the processor wrote this row (finds orphan parts after a crash). */
  writtenAt: number;
  expiresAt: number;
  /**
   * Compaction: the parts of this row's group (same account, level, bucket, metric, series)
   * that this merged row replaces. Readers ignore a row whose part is listed here by another
   * row of its group; emptied once those rows are deleted. Empty (or absent) for rows of a
   * processing tick.
   */
  supersedes?: string[];
  /** The lease epoch of the processing tick that wrote it (0 or absent: compaction, no lease). */
  epoch?: number;
}

/** Rollup rows written by compaction have parts starting with this (never a processed marker's part). */
export const COMPACTION_PART_PREFIX = 'c:';

/** One rollup group: rows of one account, level, bucket, metric and series, which merge into one. */
export interface RollupGroupKey {
  accountId: string;
  level: RollupLevel;
  bucket: number;
  metric: string;
  series: string;
}

/** One rollup row: its group and its part (unique within the group). */
export interface RollupRef extends RollupGroupKey {
  part: string;
}

/** A group with more than one row, found by `rollupGroupsToCompact`. */
export interface RollupGroupCount extends RollupGroupKey {
  /** Rows stored in the group. */
  rows: number;
}

/** A stored rollup row as compaction reads it. */
export interface StoredRollup extends RollupRow {
  supersedes: string[];
  /** A processed marker names this row's part (the processing tick that wrote it finished). */
  marked: boolean;
}

/** A rollup row's reference and its `supersedes` (not empty: a merged row whose sources may still be stored). */
export interface SupersedingRollup extends RollupRef {
  supersedes: string[];
}

/** A row with a non-empty `supersedes` (a compaction not finished yet), with what it needs to be opened: its list is checked against the one it seals. */
export interface UnfinishedRollup extends SupersedingRollup {
  tagKeys: string[];
  tagValues: string[];
  keyVersion: number;
  agg: Uint8Array;
}

/** Dictionary kinds: 0 = metric name, 1 = tag key, 2 = tag key=value. */
export type DictKind = 0 | 1 | 2;

/** Maps a pseudonym back to its (encrypted) plaintext, for labels and listings. */
export interface DictRow {
  accountId: string;
  kind: DictKind;
  pseudonym: string;
  keyVersion: number;
  ciphertext: Uint8Array;
  firstSeen: number;
}

/** Per-account counts of rejected points / dropped batches, by stable error code. */
export interface RejectRow {
  accountId: string;
  code: string;
  count: number;
  at: number;
}

/** A share of accounts: those with `cityHash64(account_id) % count = index` (scale-out of the process role). */
export interface Partition {
  index: number;
  count: number;
}

/** SQL condition selecting a partition's accounts; binds `{pi:UInt64}` and `{pn:UInt64}` (see `partitionParams`). */
export const partitionSql = (column: string): string => `cityHash64(${column}) % {pn:UInt64} = {pi:UInt64}`;
export const partitionParams = (p: Partition): { pi: number; pn: number } => ({ pi: p.index, pn: p.count });

/** Parses `i/n` (0 <= i < n); undefined for undefined or empty. */
export function parsePartition(s: string | undefined): Partition | undefined {
  if (s === undefined || s === '') return undefined;
  const m = /^(\d{1,6})\/(\d{1,6})$/.exec(s.trim());
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || !(count >= 1) || !(index < count)) throw new Error(`invalid partition ${JSON.stringify(s)}: expected i/n with 0 <= i < n`);
  return { index, count };
}

export type Params = Record<string, string | number | boolean | string[] | number[] | null>;

/** Accounts (storage/accounts.ts). */
export interface AccountStore {
  putAccount(row: AccountRow): Promise<void>;
  getAccount(accountId: string): Promise<AccountRow | undefined>;
  /** The rows of these accounts (one read; unknown ids are absent). */
  getAccounts(accountIds: string[]): Promise<AccountRow[]>;
  listAccounts(): Promise<AccountRow[]>;
  /** The current rows of up to `limit` accounts, most recently changed first (one read): the account cache's warm-up at start. */
  someAccounts(limit: number): Promise<AccountRow[]>;
  /** The account whose current row holds this read-token hash. */
  accountIdByReadTokenHash(hash: string): Promise<string | undefined>;
  /**
   * Account rows written since `sinceMs` by storage's clock (`changed_at`, every version, no
   * FINAL) and storage's clock (ms) when there were any: the background refresh of account
   * state (accounts/accounts.ts). Without `sinceMs`, only storage's clock. `onWait` is told when
   * the read waits for the engine and when it starts (lane.ts; a server: never).
   */
  accountChanges(sinceMs?: number, onWait?: WaitObserver): Promise<{ now: number | undefined; rows: { row: AccountRow; changedAt: number }[] }>;
  addRejects(rows: RejectRow[]): Promise<void>;
  rejects(accountId: string): Promise<Record<string, number>>;
}

/** Batches and processed markers (storage/batches.ts). */
export interface BatchStore {
  /** Resolves only once the rows are durable (on disk, fsynced where the engine allows). */
  insertBatches(rows: BatchRow[]): Promise<void>;
  /**
   * Which of these (accountId, batchId) pairs are already stored; keys `${accountId}/${batchId}`.
   * A batch stays "stored" after deleteBatches while its processed row exists (no re-ingest on retry).
   */
  existingBatches(keys: { accountId: string; batchId: string }[]): Promise<Set<string>>;
  /**
   * Which of these pairs have a live processed marker (a stale lease holder's late one does not
   * count: fences.ts); keys `${accountId}/${batchId}`. Processing skips them (a twin stored again).
   */
  markedBatches(keys: { accountId: string; batchId: string }[]): Promise<Set<string>>;
  /**
   * Stored batches received at or after `since` that have no processed row, oldest first;
   * with `partition`, only those of its accounts.
   */
  pendingBatches(since: number, limit: number, partition?: Partition): Promise<BatchRow[]>;
  markProcessed(rows: ProcessedRow[]): Promise<void>;
  /** Deletes sealed batches (confidential mode, retention). */
  deleteBatches(keys: { accountId: string; batchId: string }[]): Promise<void>;
  /** Deletes the sealed batches of an account that are processed (confidential mode turned on). */
  deleteProcessedBatches(accountId: string): Promise<void>;
  /** Whether a processed marker written at or after `since` names this rollup part (its tick's insert committed). */
  partMarkedSince(part: string, since: number): Promise<boolean>;
  /** Stored batches of an account (processed or not yet) by envelope version, e.g. `{ "1": 3, "2": 120 }`. */
  envelopeVersions(accountId: string): Promise<Record<string, number>>;
}

/** A (UTC day, metric, series, key version) of one account whose hour (quarter-hour) rows wait for a day pack. */
export interface DayToPack {
  accountId: string;
  metric: string;
  /** Start of the UTC day (minute rows: of the UTC hour), epoch ms. */
  day: number;
  series: string;
  keyVersion: number;
}

/** Rollup rows (storage/rollups.ts). */
/** Rollup rows encoded as one insert (storage/rollups.ts encodeRollups): the body and where each row ends. */
export interface EncodedRollups {
  body: Uint8Array;
  rowEnds: Uint32Array;
}

export interface RollupStore {
  insertRollups(rows: RollupRow[]): Promise<void>;
  /** Inserts rows encoded by encodeRollups (in a worker thread), `written_at` stamped by stampWrittenAt. */
  insertEncodedRollups(rows: EncodedRollups): Promise<void>;
  /**
   * Compaction, step 1: groups (account, level, metric, bucket, series) holding more than one
   * rollup row and no row with a non-empty `supersedes`, in sorting-key order, strictly after
   * `after` when given, at most `limit`. With `since`, only groups holding a row written at or
   * after it.
   */
  rollupGroupsToCompact(o: { since?: number; after?: RollupGroupCount; limit: number }): Promise<RollupGroupCount[]>;
  /**
   * Compaction, step 2: the rows of these groups (at most `perGroup` per group, oldest written
   * first), each with whether a processed marker of its account names its part.
   */
  rollupsOfGroups(groups: RollupGroupKey[], perGroup: number): Promise<StoredRollup[]>;
  /** Rows whose `supersedes` is not empty (a compaction not finished yet), at most `limit`. */
  supersedingRollups(limit: number): Promise<UnfinishedRollup[]>;
  /**
   * Deletes exactly these rows. A mutation: by default this resolves once it is queued and the
   * engine applies it in the background (`findRollups` tells when); `wait` resolves once it is
   * applied on every replica. (chDB runs one statement at a time: a waiting mutation stalls
   * ingest and queries, often for a second; a queued one costs milliseconds.)
   */
  deleteRollups(rows: RollupRef[], opts?: { wait?: boolean }): Promise<void>;
  /** Empties `supersedes` of exactly these rows; queued or waited for like `deleteRollups`. */
  clearSupersedes(rows: RollupRef[], opts?: { wait?: boolean }): Promise<void>;
  /** Which of these rows are stored (as of now), with their `supersedes`. */
  findRollups(rows: RollupRef[]): Promise<SupersedingRollup[]>;
  /**
   * Recovery: parts of rollup rows written since `since` that no processed marker names (ticks
   * that never finished), whose newest row was written before `writtenBefore`; never a part
   * compaction wrote. With `partition`, only its accounts. With `epochBelow`, also parts of an
   * older lease epoch than that whatever their age: their holder is fenced (fences.ts), so no
   * marker of theirs can count any more.
   */
  orphanParts(o: { since: number; writtenBefore: number; epochBelow?: number; partition?: Partition }): Promise<string[]>;
  /** Deletes every rollup row of these parts (lightweight delete, applied at once). */
  deleteRollupParts(parts: string[]): Promise<void>;
  /**
   * Day packing, step 1: (account, metric, day, series, key version) of UTC days that ended
   * before `closed` holding a finished row of `level` (default hour; quarter hour: quarter packs;
   * minute: minute packs, whose unit is the UTC hour) and no unfinished merged row, in key order,
   * strictly after `after`, at most `limit`.
   */
  daysToPack(o: { closed: number; after?: DayToPack; limit: number; level?: PackedLevel }): Promise<DayToPack[]>;
  /**
   * Day packing, step 2: the hour (quarter-hour, minute) rows and packs of these days (hours), of
   * any accounts, each with whether it is finished; all rows of one day in one read (statement).
   */
  rollupsOfDays(days: DayToPack[], level?: PackedLevel): Promise<StoredRollup[]>;
  /** From when (epoch ms) every point has rows of this level (schema migration 7); Infinity: never. */
  rollupLevelSince(level: RollupLevel): Promise<number>;
  /**
   * The derivation watermark (schema migration 11; compaction/derive.ts): UTC hours before it have
   * complete hour and quarter-hour rows, hours from it on are read from minute rows. 0 when unset.
   */
  derivedUntil(): Promise<number>;
  /** Moves the derivation watermark to `until` (readers take the greatest ever written). */
  setDerivedUntil(until: number): Promise<void>;
  /**
   * Derivation, step 1: the (account, metric, UTC hour, series) holding minute rows in [from, to),
   * in key order, strictly after `after`, at most `limit`.
   */
  hoursToDerive(o: { from: number; to: number; after?: HourToDerive; limit: number }): Promise<HourToDerive[]>;
  /**
   * Derivation, step 2: the minute, hour and quarter-hour rows of these hours, of any accounts,
   * each with whether it is finished; all rows of one hour in one read (statement).
   */
  rollupsOfHours(hours: HourToDerive[]): Promise<StoredRollup[]>;
}

/** One series' UTC hour to derive hour and quarter-hour rows for. */
export interface HourToDerive {
  accountId: string;
  metric: string;
  /** Start of the UTC hour, epoch ms. */
  hour: number;
  series: string;
}

/** Dictionary (storage/dictionary.ts). */
export interface DictionaryStore {
  insertDictionary(rows: DictRow[]): Promise<void>;
  dictionary(accountId: string, kind?: DictKind): Promise<DictRow[]>;
}

/** The tables an account's rows live in; the purge empties them (all but the tombstone). */
export type PurgeTable = AccountTable;

/** What `verify` tries every remaining key on. */
export interface CiphertextSample {
  rollups: Omit<RollupRow, 'writtenAt' | 'expiresAt'>[];
  dictionary: { kind: DictKind; pseudonym: string; ciphertext: Uint8Array }[];
  /** Sealed batches. */
  batches: Uint8Array[];
}

/** An account's rows across tables, for the lifecycle (storage/lifecycle.ts). */
export interface LifecycleStore {
  /** Rows held per table for one account, merged (deletion reports, tests). */
  countAccountRows(accountId: string): Promise<Record<string, number>>;
  /** Physical rows per table (no FINAL: what is on disk) the purge would delete, for these accounts. */
  purgeRowCounts(accountIds: string[]): Promise<Map<string, Record<PurgeTable, number>>>;
  /**
   * The one purge: deletes every row of the account from these tables (default all), except
   * its tombstone (a shredded account row without read-token hash). Waits for every replica.
   */
  purgeAccount(accountId: string, tables?: readonly PurgeTable[]): Promise<void>;
  /** Wipe: deletes rollups and dictionary entries of key versions below `keyVersion` and batches received up to `receivedUpTo`; returns what it deleted. */
  deleteBeforeWipe(accountId: string, keyVersion: number, receivedUpTo: number): Promise<{ batches: number; rollups: number; dictionary: number }>;
  /** Retention: deletes batches and rollups whose `expires_at` is before `now`; returns what it deleted. */
  deleteExpired(now: number): Promise<{ batches: number; rollups: number }>;
  /** Up to `rows` rollup and dictionary ciphertexts and `batches` sealed batches of the account, each with its identity. */
  ciphertextSample(accountId: string, limits: { rows: number; batches: number }): Promise<CiphertextSample>;
}

/** A tag filter of one key version, as pseudonyms: a row's tag values hold one of `accepted` (none: no row), or with `missingKey` its tag keys lack that key. */
export interface TagFilter {
  accepted: string[];
  missingKey?: string;
}

/** The rollup rows one query reads (`QueryStore.selectRollups`). */
export interface RollupSelection {
  accountId: string;
  /** 0: minute rows of [from, to); 3: quarter-hour rows of [from, to) and the quarter packs (4) of the UTC days it overlaps; 1: hour rows of [from, to) and the hour packs (2) of the UTC days it overlaps. */
  level: QueryLevel;
  from: number;
  to: number;
  /** Level 1: also the minute rows of these UTC hours (epoch ms of their starts) inside [from, to). */
  minuteHours?: number[];
  /**
   * Level 3: only these UTC hours (their starts) need quarter-hour data. A (UTC day, series, key
   * version) with a quarter pack is read as without it (its quarter pack and quarter-hour rows);
   * one without is read from its quarter-hour rows of these hours and, elsewhere, its hour rows
   * and hour pack (levels 1 and 2).
   */
  quarterHours?: number[];
  /** Levels 1 and 3: also the minute rows from here (a UTC hour: the derivation watermark) to `to`. */
  minuteFrom?: number;
  /** Per key version, the metric pseudonym and tag filters that must all hold; absent: every metric, every version, no filter. */
  versions?: { version: number; metric: string; filters: TagFilter[] }[];
  /** Most rows returned. */
  limit: number;
}

/** The tag pseudonyms one metric occurs with under one tag key. */
export interface TagValueCount {
  metric: string;
  key: string;
  /** Distinct values (key=value pseudonyms). */
  distinct: number;
  /** Up to `listed + 1` of them. */
  values: string[];
}

/** What the query role reads (storage/queries.ts). */
export interface QueryStore {
  /**
   * The selected rows, as RowBinary for `readStoredRows` (storage/queries.ts); the caller decides
   * which count. `onWait`: told true while the statement waits for the engine, false when it
   * starts (embedded chDB's lane; a server never tells).
   */
  selectRollups(sel: RollupSelection, onWait?: WaitObserver): Promise<Uint8Array>;
  /**
   * How many rows `selectRollups(sel)` would return without a limit, per slot of `slotMs`
   * (rows whose bucket is in [at, at + slotMs), epoch ms), in time order, empty slots left out:
   * one statement reading no sealed bytes, so a query can size its reads (query/engine.ts).
   */
  countRollups(sel: Omit<RollupSelection, 'limit'>, slotMs: number): Promise<{ at: number; rows: number }[]>;
  /** Per (metric, tag key), the distinct tag values in hour rows and day packs since `since` (and minute rows from `minuteFrom` on: hours not derived yet), listing up to `listed + 1`. */
  tagValueCounts(o: { accountId: string; since: number; listed: number; minuteFrom?: number }): Promise<TagValueCount[]>;
  /** The dictionary entries of these pseudonyms of one kind (every key version). */
  dictionaryEntries(accountId: string, kind: DictKind, pseudonyms: string[]): Promise<DictRow[]>;
}

/** A processed marker by its sorting key (fences.ts). */
export interface MarkerRef {
  accountId: string;
  batchId: string;
  epoch: number;
  part: string;
}

/** Epoch fences of processing partitions (storage/fences.ts). */
export interface FenceStore {
  /**
   * Records that `epoch` holds `partition` from now on (the server's clock): markers of older
   * epochs of its accounts committed from now on are a stale holder's and never count.
   */
  fencePartition(f: { partition: Partition; epoch: number; holder: string }): Promise<void>;
  /** Markers of the partition's accounts processed since `since` that a fence makes stale, at most `limit`. */
  fencedMarkers(o: { since: number; partition?: Partition; limit: number }): Promise<MarkerRef[]>;
  /** Deletes exactly these markers (applied at once). */
  deleteMarkers(refs: MarkerRef[]): Promise<void>;
}

export interface Store extends AccountStore, BatchStore, RollupStore, DictionaryStore, LifecycleStore, QueryStore, FenceStore {
  readonly kind: 'chdb' | 'remote';
  /** Applies pending versioned migrations; returns the schema version now in force. */
  migrate(): Promise<{ from: number; to: number }>;
  /** The highest schema version applied to storage (by this or any newer collector). */
  schemaVersion(): Promise<number>;
  /** Throws when storage cannot answer. */
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * This store with a deadline on every call: one that does not answer within `ms` throws
   * StorageError `storage_unavailable` (the remote request is aborted; chDB's statement runs on
   * unobserved, so a write that timed out may still land: writes through it must be idempotent).
   * Shares the connection; closing it does nothing.
   */
  withDeadline(ms: number): Store;
  /**
   * This store with its calls going before the waiting calls of other views (a few in a row at
   * most while one of those waits) where the engine runs one call at a time (embedded chDB:
   * storage/lane.ts) — the request path, ingest's group commit above all, whose 202s wait for
   * it. Keeps this view's deadline. Shares the connection.
   */
  urgent(): Store;
  /** Storage calls so far by kind (`insert batches`, `SELECT batches`, …): count, seconds waiting for the engine, seconds running (chDB; empty for a server). */
  callStats(): Record<string, CallStats>;

  /** Names of every table this store created, as `database.table` (for dumps in tests and verify). */
  tables(): Promise<string[]>;
}
