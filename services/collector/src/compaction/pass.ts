/**
 * What the steps of a compaction pass share (compactor.ts runs them): the options, the report,
 * the row and group ids, and the pass context each step gets (the clock, the event-loop slices,
 * whether the compactor is stopping).
 */
import { randomBytes, toHex } from '@cipherstat/protocol';
import type { Registry } from 'prom-client';
import type { AccountKeys } from '../keyring/index.js';
import type { Logger } from '../logger.js';
import { decodeAggregate, type Aggregate } from '../rollup/index.js';
import { DAY_MS, dayOf, HOUR_MS } from '../rollup/days.js';
import { isPack, LEVEL, packOf, packUnitStart, type PackedLevel } from '../rollup/levels.js';
import type { RollupGroupKey, RollupRef, Store } from '../storage/types.js';

export const DEFAULT_COMPACTION_INTERVAL_MS = 60_000;
/**
 * Longest a due pass waits while ingest is busy (CompactorOptions.busy): a pass reads and
 * deletes on the engine that runs one statement at a time, beside the group commits whose 202s
 * wait for it (storefront load: ~21 % of the engine in passes). Bounded, so compaction still
 * progresses under load that never stops: at least one pass per this long plus its own time.
 */
export const DEFAULT_COMPACTION_YIELD_MAX_MS = 10_000;
/** How often a waiting pass asks again whether ingest is still busy. */
export const COMPACTION_YIELD_CHECK_MS = 250;
/**
 * Rows a pass opens and merges between two turns of the event loop: compaction runs on the
 * main thread beside ingest, queries and /healthz, and must never hold it for long (a pass
 * opens up to `maxRows` rows: ~0.5 s of CPU at once without slices).
 */
export const COMPACTION_SLICE_ROWS = 500;

/**
 * Rows a minute group needs before a pass that runs while ingest is busy merges it (a pass at
 * other times merges every group of two rows or more). A minute row is opened once more when its
 * hour is derived and once when it is packed into its minute pack, merged or not, so merging a
 * group of two or three rows costs more than it saves (opens, a seal, and mutation and poll keys
 * for every source) unless queries read the live hour often; at storefront load (10,000 shops)
 * half of the groups merged held two rows, and each pass beside ingest took CPU from it. A
 * group skipped so is merged by a later pass once it holds this many rows or ingest is quiet
 * (if it got rows in the sweep's window), or packed with its hour; a query of the live hour
 * reads fewer than this many rows per series-minute for it at the moment of a busy pass (rows that
 * arrive between passes add to them, and `rows` counts every key version). While ingest never
 * stops, only the minute pack absorbs such a group, about `dayPackLagMs` after its hour, once the
 * derivation watermark has passed it.
 */
export const BUSY_MINUTE_GROUP_ROWS = 4;

/**
 * While ingest is busy, how long a kind of pack whose last look (from the first day) found
 * nothing to pack at the same boundary goes without another look (day-packs.ts). Each look is a
 * statement over the table's rows of that level (~65 ms of engine at storefront scale, three a
 * pass), and between two boundaries (an hour derived, a 6 h step) only late rows or a tick's
 * markers arriving can give it something to pack; those wait at most this long more.
 */
export const BUSY_PACK_RECHECK_MS = 60_000;

export type CompactionStep = 'inserted' | 'packed' | 'derived' | 'watermark' | 'deleted' | 'cleared';

export interface CompactorOptions {
  store: Store;
  keyring: { accountKeys(accountId: string): AccountKeys[] | undefined | Promise<AccountKeys[] | undefined> };
  log: Logger;
  /** Counters and a pass-duration histogram are registered here (Prometheus /metrics). */
  registry?: Registry;
  now?: () => number;
  /** Period of the scheduler (default 60 s); 0: no scheduler, passes only through `runPass()`. */
  intervalMs?: number;
  /** Delay before the next pass when a pass stopped at its bounds (default 1 s). */
  catchUpMs?: number;
  /**
   * Whether ingest is busy now (services.ts: batches arriving for processing at the rate that
   * makes ticks coalesce). While it is, a scheduled pass (periodic or catch-up) waits, at most
   * `yieldMaxMs` from when it was due; `runPass()` never waits.
   */
  busy?: () => boolean;
  /** Longest a due pass waits for a busy ingest (default DEFAULT_COMPACTION_YIELD_MAX_MS; 0: never waits). */
  yieldMaxMs?: number;
  /** Most groups one pass looks at (default 2000). */
  maxGroups?: number;
  /** Most rows one pass reads and merges (default 20 000). */
  maxRows?: number;
  /** Most rows of one group merged in one pass (default 2000; the rest in the next passes). */
  maxRowsPerGroup?: number;
  /** Rows a minute group needs to be merged by a pass while `busy()` (default BUSY_MINUTE_GROUP_ROWS; 2: no difference). */
  busyMinuteGroupRows?: number;
  /** How long a pass polls for its queued deletes and list updates to apply (default 10 s). */
  settleMs?: number;
  /**
   * After a complete sweep, the next sweep only looks at groups with a row written since this
   * long before the previous sweep started (default 10 min: covers ticks in flight). The first
   * sweep after start looks at every group.
   */
  windowSlackMs?: number;
  /** Most packs of each kind (day packs of hours, of quarter hours; minute packs) one pass writes (default 2000; 0: none). */
  maxDayPacks?: number;
  /** A UTC day (a derived UTC hour: its minute rows) is packed once it ended this long ago (default 15 min; late data only costs a repack). */
  dayPackLagMs?: number;
  /**
   * Today is packed in steps of this much (default PACK_STEP_MS, 6 h; must divide 24 h; a day:
   * only closed days): once the derivation watermark and the clock (less dayPackLagMs) passed a
   * step, the day's derived hours before it go into the day's pack (a repack at each step), so
   * a query reads at most a step of today's hours as rows instead of up to 23 (92 quarter hours).
   */
  packStepMs?: number;
  /** Rows opened between two turns of the event loop (default COMPACTION_SLICE_ROWS). */
  sliceRows?: number;
  /** Told which accounts a pass changed (query caches). */
  onCompacted?: (accountIds: string[]) => void;
  /**
   * Called right before each write of a pass (merged rows, day packs, deletes, emptied lists):
   * throws when this node may no longer compact (its compactor lease ran out; ownership.ts).
   * The pass then stops like a crashed one, and the next pass (of whichever node holds the
   * lease) finishes what it wrote.
   */
  fence?: () => void;
  /** Test seam: called after each write step of a pass; throwing there stops the pass like a crash would. */
  hook?: (step: CompactionStep) => void | Promise<void>;
}

export interface CompactionReport {
  /** Merged rows of earlier, interrupted passes finished in this pass. */
  finished: number;
  /** Merged rows (of this pass or earlier ones) still unfinished at the end of the pass. */
  unfinished: number;
  /** Groups merged into one row each. */
  groups: number;
  /** Source rows merged (and deleted). */
  mergedRows: number;
  /** Merged rows written. */
  writtenRows: number;
  /** Rows that failed to open, decode or merge (or carry other tag pseudonyms than their group): left in place. */
  failedRows: number;
  /**
   * Rows found tampered with: a copy of a row (merged once; the delete removes both), or a row
   * a merged row or pack stored with it already holds (back after its deletion: listed by the
   * new row and deleted, not counted again).
   */
  tamperedRows: number;
  /** Rows of ticks without a processed marker (in flight or orphaned): left in place. */
  unmarkedRows: number;
  /**
   * Groups left alone: no keys (shredded) or no key of their version (wiped), or an unfinished
   * merged row; or, in a pass while ingest is busy, minute groups of fewer than
   * busyMinuteGroupRows rows (BUSY_MINUTE_GROUP_ROWS).
   */
  skippedGroups: number;
  /** Packs written or refreshed (day packs of hours and of quarter hours, minute packs). */
  packedDays: number;
  /** Series-hours whose hour and quarter-hour rows were derived from minute rows (derive.ts). */
  derivedHours: number;
  /** The pass stopped at its bounds: more work is waiting. */
  more: boolean;
  /** Turns the pass gave the event loop while opening and merging rows (every `sliceRows` rows). */
  slices: number;
  tookMs: number;
}

export const emptyReport = (): CompactionReport => ({
  finished: 0, unfinished: 0, groups: 0, mergedRows: 0, writtenRows: 0, failedRows: 0, tamperedRows: 0, unmarkedRows: 0, skippedGroups: 0, packedDays: 0, derivedHours: 0, more: false, slices: 0, tookMs: 0,
});
export const groupId = (g: RollupGroupKey): string => `${g.accountId}\u0000${g.level}\u0000${g.bucket}\u0000${g.metric}\u0000${g.series}`;
export const refId = (r: RollupRef): string => `${groupId(r)}\u0000${r.part}`;
export const refOf = (r: RollupRef): RollupRef => ({ accountId: r.accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series, part: r.part });
export const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
/** An aggregate decoded; undefined when it does not decode. */
export function decoded(payload: Uint8Array): Aggregate | undefined {
  try {
    return decodeAggregate(payload);
  } catch {
    return undefined;
  }
}
export const newPart = (prefix: string): string => `${prefix}${toHex(randomBytes(16))}`;
/** (account, kind of pack, metric, UTC day or hour, series) of a row or pack: the scope of a pack. */
export const dayId = (r: RollupGroupKey): string => {
  const pack = isPack(r.level) ? r.level : packOf(r.level);
  return `${r.accountId}\u0000${pack ?? r.level}\u0000${r.metric}\u0000${pack === undefined ? dayOf(r.bucket) : packUnitStart(pack, r.bucket)}\u0000${r.series}`;
};

/** Today's derived hours are packed in steps of 6 h (CompactorOptions.packStepMs). */
export const PACK_STEP_MS = 6 * 3_600_000;

/**
 * Hour and quarter-hour rows before this go into their day's packs (day-packs.ts) and are never
 * merged (merge.ts); those from it on, before the watermark, are merged. The step (start of a
 * UTC day plus a multiple of packStepMs) that both the clock less dayPackLagMs and the
 * derivation watermark passed: never an hour not derived yet.
 */
export function packedBefore(o: CompactorOptions, now: number, derivedUntil: number): number {
  const step = o.packStepMs ?? PACK_STEP_MS;
  const floor = (t: number) => (step > 0 && step < DAY_MS && DAY_MS % step === 0 ? t - ((t - dayOf(t)) % step) : dayOf(t));
  return Math.min(floor(now - (o.dayPackLagMs ?? 15 * 60_000)), floor(derivedUntil));
}

/**
 * Minute rows before this go into their hour's minute pack (day-packs.ts) and are never merged
 * (merge.ts): hours derived (the watermark: derive.ts never reads them again) that ended
 * dayPackLagMs ago (late data there only costs a repack).
 */
export function minutesPackedBefore(o: CompactorOptions, now: number, derivedUntil: number): number {
  const t = Math.min(now - (o.dayPackLagMs ?? 15 * 60_000), derivedUntil);
  return t - (((t % HOUR_MS) + HOUR_MS) % HOUR_MS);
}

/** Rows of `level` before this are packed (never merged): packedBefore, or minutesPackedBefore for minute rows. */
export const packedBeforeOf = (level: PackedLevel, o: CompactorOptions, now: number, derivedUntil: number): number =>
  level === LEVEL.minute ? minutesPackedBefore(o, now, derivedUntil) : packedBefore(o, now, derivedUntil);

/**
 * The keys of each of these accounts that has any (derivation and packing, per page): an account
 * without (shredded) is left out, nothing of it opens and the lifecycle deletes its rows.
 */
export async function keysOfAccounts(c: PassContext, accountIds: Iterable<string>): Promise<Map<string, AccountKeys[]>> {
  const out = new Map<string, AccountKeys[]>();
  for (const accountId of new Set(accountIds)) {
    const keys = await c.o.keyring.accountKeys(accountId);
    if (keys?.length) out.set(accountId, keys);
  }
  return out;
}

/** `rows` by account, each list in the rows' order. */
export function byAccount<T extends { accountId: string }>(rows: Iterable<T>): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const r of rows) {
    const list = out.get(r.accountId);
    if (list) list.push(r);
    else out.set(r.accountId, [r]);
  }
  return out;
}

/** What each step of a pass gets from the compactor. */
export interface PassContext {
  readonly o: CompactorOptions;
  now(): number;
  /** Counts `n` rows opened; every `sliceRows` of them, gives the event loop a turn (pending I/O first). */
  opening(report: CompactionReport, n?: number): Promise<void>;
  /** Whether stop() was called: a pass in flight stops polling. */
  closing(): boolean;
  /**
   * The derivation watermark (storage's `derivedUntil`), read once per pass: the merge, the
   * derivation and each kind of pack need it, and each read is a statement on the engine ingest
   * waits for (five a pass since minute packs). `moved` after the pass's own setDerivedUntil.
   */
  watermark(): Promise<number>;
  moved(until: number): void;
}
