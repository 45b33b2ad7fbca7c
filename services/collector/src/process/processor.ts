/**
 * The process role: opens inner layers with the account key, validates points, and writes
 * what queries need — per-minute and per-hour partial aggregates encrypted under the account
 * data key, keyed by HMAC pseudonyms and UTC time buckets — plus an encrypted dictionary of
 * pseudonyms and per-account reject counts.
 *
 * Exactly once: every tick writes its rollup rows under one random `part` id and then the
 * processed markers naming that part. A crash between the two leaves rollup rows whose part
 * has no marker; `recover()` deletes them before their batches are processed again. A tick
 * that fails in process deletes its own rows before its batches can be retried (and refuses
 * to process anything else until that succeeded); a periodic recovery sweeps what is left
 * (recovery.ts). While a tick computes, one read finds which of its batches already have a
 * live marker, whatever path they came by (hand-off or poll); the tick is computed again without
 * them when there are any — a twin stored again (a retry after a restart: ingest's duplicate
 * check is this process's memory only, ingest/writer.ts) is never counted twice; in
 * confidential mode its sealed row is deleted like a processed batch's.
 *
 * Batches arrive by hand-off and by the poll and wait in the intake (intake.ts).
 *
 * CPU: opening, aggregating and sealing (tick.ts) run in a worker thread when running from the
 * compiled files (tick-worker.js), inline otherwise; storage writes stay on the main thread.
 * Ticks write one at a time, in order; with the worker, the next tick's CPU part overlaps the
 * current tick's writes (see drainQueue).
 *
 * Scale-out: with `partition` (i of n), the poll and recovery only see accounts with
 * `cityHash64(account_id) % n = i`, so n process nodes never process the same batch.
 */
import { randomBytes, toHex } from '@cipherstat/protocol';
import type { AccountRow, AccountSeen, BatchRow, DictRow, Partition, Store } from '../storage/types.js';
import { stampWrittenAt } from '../storage/rollups.js';
import type { Keyring } from '../keyring/index.js';
import type { Accounts } from '../accounts/accounts.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../logger.js';
import { rollupRefs, type CacheLookups, type SentTickOutput, type TickAccount, type TickInput, type TickLimits, type TickOutput } from './tick.js';
import { TickRunner } from './worker-client.js';
import type { TickBudget } from './fair-queue.js';
import { Intake } from './intake.js';
import { LOOKBACK_MS, TickRecovery } from './recovery.js';
import { isCollectorError } from '../errors.js';
import { TICK_COMMIT_MAX_MS } from '../rollup/levels.js';
import type { CommitPoint } from '../config.js';

/**
 * The least age of an unmarked part periodic recovery deletes (default of `recoverMinAgeMs`): a
 * tick on any node begins its marker insert at most TICK_COMMIT_MAX_MS after it began (it fails
 * instead), so after that plus a minute for the insert itself and the clocks of two nodes, a part
 * without markers is a crashed tick's. (It was 2 min, shorter than a live tick may take.) This
 * process's own ticks are never touched while they write, however long (`writing`).
 */
export const RECOVER_MIN_AGE_MS = TICK_COMMIT_MAX_MS + 60_000;

/** Most dictionary entries of unwritten ticks kept for the next write (beyond: caches start afresh). */
const MAX_UNWRITTEN = 500_000;

export interface ProcessorOptions {
  store: Store;
  keyring: Keyring;
  accounts: Accounts;
  metrics: Metrics;
  log: Logger;
  /** Poll storage for batches stored by other nodes (or left by a crash) every this many ms. */
  pollMs: number;
  /** In role `all`, fresh batches arrive by hand-off; the poll only picks up older ones. */
  pollMinAgeMs: number;
  /** How far back the poll looks for unprocessed batches. */
  lookbackMs?: number;
  now?: () => number;
  /** Under load, a tick starts at most this often (ms) unless `tickMinBatches` are queued (intake.ts). */
  coalesceMs?: number;
  /** Batches queued that start a tick before its cadence (intake.ts; default TICK_BATCHES). */
  tickMinBatches?: number;
  /** Batches per second of hand-offs from which ticks coalesce (default 100). */
  coalesceMinRate?: number;
  /** This node's share of accounts for the poll and recovery (default: all of them). */
  partition?: Partition;
  /** Periodic recovery from the poll loop: how often (default 60 s; 0: never). */
  recoverEveryMs?: number;
  /**
   * Periodic recovery only deletes parts written at least this long ago (default
   * RECOVER_MIN_AGE_MS), and never a part this processor is writing: a live tick may begin its
   * markers up to TICK_COMMIT_MAX_MS after its rows' stamp (after that it fails instead).
   */
  recoverMinAgeMs?: number;
  /** Called after each tick with the accounts it touched (query caches). */
  onProcessed?: (accountIds: string[]) => void;
  /** Computes ticks in a worker thread when its compiled file exists (default true; else inline). */
  worker?: boolean;
  /** Another worker entry (tests). */
  workerUrl?: URL;
  /** What one account's batches may take of one tick (fair-queue.ts); default intake.ts's TICK_ACCOUNT_BUDGET_MS and DEFAULT_TICK_ACCOUNT_POINTS. */
  tickBudget?: Partial<TickBudget>;
  /** Cardinality limits per account (tick.ts); default: none. */
  limits?: TickLimits;
  /** Called after each tick with the accounts whose points it rejected for cardinality (ingest slows them). */
  onCardinalityLimited?: (accountIds: string[]) => void;
  /**
   * Called right before a tick's processed markers are written (its commit), and again after:
   * throws when this node may no longer commit (its partition lease ran out; ownership.ts).
   * Before, the tick then fails and its rollup rows are removed like any failed tick's; after,
   * storage says whether the markers count (they do not when the next holder's fence came
   * first: storage/fences.ts) — if not, the tick failed the same way.
   */
  fence?: () => void;
  /** Tests only (CIPHERSTAT_TEST_PAUSE_AT, config.ts): awaited at each commit point of every tick. */
  atCommitPoint?: (point: CommitPoint, part: string) => Promise<void>;
  /** Tests only (CIPHERSTAT_TEST_STOP_AT=commit): called past the fence check, right before the markers are written. */
  beforeCommit?: () => void;
}

/** A tick's output as the processor gets it: computed inline, or posted by the tick worker (no row objects). */
type Output = TickOutput | SentTickOutput;

/** A tick whose CPU part has started. */
interface Pending {
  rows: BatchRow[];
  /** Batches of this tick found already processed (a live marker): not computed, not marked again. */
  twins: BatchRow[];
  /** Those of confidential accounts: their sealed rows are deleted with the tick's own. */
  twinsToDelete: { accountId: string; batchId: string }[];
  now: number;
  part: string;
  output: Promise<Output>;
}

/** What a tick began to write (process()): removed again or kept for the next tick when it fails. */
interface TickWrites {
  /** Its rollup rows, once their insert started (their keys: tick.ts rollupRefs). */
  rollups: Output | undefined;
  dict: DictRow[];
}

export class Processor {
  /** Batches waiting for a tick, in one, or processed here (intake.ts). */
  private readonly queue: Intake;
  /** Where ticks are computed: the worker thread or inline (worker-client.ts). */
  private readonly runner: TickRunner;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastRecover = 0;
  /**
   * Dictionary entries of ticks that were not written (a failed tick, or the one computed
   * ahead of it), by entry: the thread that computed them counts them as written, so they go
   * out with the next tick's write. Owned here, so the worker thread is never told to forget.
   */
  private unwritten = new Map<string, DictRow>();
  /** Rows of failed ticks and of crashed ones (recovery.ts). */
  private readonly recovery: TickRecovery;
  /** Poll loops started; a loop runs only while its number is the latest. */
  private loops = 0;
  /** The lease epoch this processor runs under (0: no lease), written with every tick's rows and markers. */
  private epoch = 0;

  /**
   * Parts of this processor's ticks from their rows' stamp until their write ended: periodic
   * recovery leaves them alone however old their stamp (a write held behind a long statement
   * would otherwise lose its rows between its rollup insert and its markers).
   */
  private readonly writing = new Set<string>();

  /** Lookups in the tick caches (worker or inline), summed over ticks. */
  private readonly cacheTotals: CacheLookups = { tick_account: { hit: 0, miss: 0 }, series: { hit: 0, miss: 0 }, pseudonym: { hit: 0, miss: 0 } };

  constructor(private readonly o: ProcessorOptions) {
    for (const [cache, c] of Object.entries(this.cacheTotals)) o.metrics.cacheSources.set(cache, () => c);
    this.runner = new TickRunner({ worker: o.worker, workerUrl: o.workerUrl, log: o.log });
    this.queue = new Intake({ metrics: o.metrics, now: () => this.now(), coalesceMs: o.coalesceMs, minBatches: o.tickMinBatches, coalesceMinRate: o.coalesceMinRate, tickBudget: o.tickBudget });
    this.recovery = new TickRecovery(o, () => this.now());
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  get backlog(): number {
    return this.queue.size;
  }

  /** Bytes the batches waiting for a tick hold (their sealed inner layers and visitors). */
  get backlogBytes(): number {
    return this.queue.bytes;
  }

  /** How long the oldest batch waiting for a tick has waited (ms; 0: none). O(accounts): not per request. */
  lagMs(): number {
    return this.queue.lagMs();
  }

  /** How long this account's oldest batch still waiting for a tick has waited (ms; 0: none waiting; intake.ts). */
  accountLagMs(accountId: string): number {
    return this.queue.accountLagMs(accountId);
  }

  /** Whether batches arrive at load rate (intake.ts): scheduled compaction passes yield meanwhile (compactor.ts). */
  underLoad(): boolean {
    return this.queue.underLoad();
  }

  /** About how long the batches waiting now need (s), at the recent processing rate (Retry-After). */
  drainSeconds(): number {
    return this.queue.drainSeconds();
  }

  /** Hand-off from ingest: rows that are durable now. */
  enqueue(rows: BatchRow[]): void {
    this.queue.push(rows);
    this.kick();
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = this.drainQueue().finally(() => {
      this.running = undefined;
      if (this.queue.size) this.kick(); // a hand-off that came while the loop was ending
    });
  }

  /**
   * With the worker, the next tick's CPU part runs while this tick writes (one tick ahead at
   * most; writes stay in order). When a tick fails, the next one is dropped too, its batches
   * retried like the failed ones (both ticks' dictionary entries are kept: `unwritten`).
   */
  private async drainQueue(): Promise<void> {
    let next: Pending | undefined;
    while ((next || this.queue.size) && !this.stopped) {
      if (!next) await this.queue.coalesce();
      const cur = next ?? this.begin(this.queue.take());
      next = undefined;
      try {
        await this.process(cur, () => {
          // The next tick's CPU part overlaps this one's writes once its cadence is due (intake.ts).
          if (this.runner.threaded && this.queue.size && this.queue.coalesceWait() <= 0) next = this.begin(this.queue.take());
        });
      } catch (e) {
        // Leave them for the poll: they are durable and unmarked (process() removed its rollup rows).
        this.queue.release(cur.rows);
        this.queue.release(cur.twins);
        if (next) await this.abandon(next);
        next = undefined;
        this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'processing failed; batches will be retried');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (next) await this.abandon(next);
  }

  /** Drops a computed tick that will not be written: its batches are retried, its dictionary entries kept for the next write. */
  private async abandon(t: Pending): Promise<void> {
    const out = await t.output.catch(() => undefined);
    this.queue.release(t.rows);
    this.queue.release(t.twins);
    if (out) await this.keepUnwritten(out.dict);
  }

  /** Keeps dictionary entries that were not written for the next tick's write. */
  private async keepUnwritten(dict: DictRow[]): Promise<void> {
    // each ciphertext copied out of its tick's one buffer (tick.ts forTransfer): a kept entry holds only its own bytes
    for (const d of dict) this.unwritten.set(`${d.accountId}\u0000${d.keyVersion}\u0000${d.kind}\u0000${d.pseudonym}`, { ...d, ciphertext: d.ciphertext.slice() });
    if (this.unwritten.size <= MAX_UNWRITTEN) return;
    // Storage has refused writes for long while new series kept arriving: rather than hold
    // more, every thread starts its caches afresh and emits every entry again when it is next seen.
    this.unwritten.clear();
    await this.runner.reset();
  }

  /** The dictionary entries a tick writes: those kept from unwritten ticks, then its own. */
  private takeUnwritten(dict: DictRow[]): DictRow[] {
    if (!this.unwritten.size) return dict;
    const all = [...this.unwritten.values(), ...dict];
    this.unwritten.clear();
    return all;
  }

  /**
   * Deletes rollup rows of ticks that never wrote their processed markers (a crash): recovery.ts.
   * Only this node's partition; with `minAgeMs`, only parts written at least that long ago.
   */
  recover(opts: { minAgeMs?: number } = {}): Promise<number> {
    return this.recovery.recoverCrashed({ ...opts, epoch: this.epoch, writing: this.writing });
  }

  /**
   * Before start() under a newly taken lease: fences the partition with `epoch` (the previous
   * holder's late markers never count) and removes what earlier holders left (recovery.ts).
   */
  takeOver(epoch: number, holder: string): Promise<number> {
    this.epoch = epoch;
    return this.recovery.takeOver(epoch, holder);
  }

  /** Starts (or, after stop(), resumes) the poll loop and the processing of queued hand-offs. */
  start(): void {
    this.stopped = false;
    this.lastRecover = this.now();
    clearTimeout(this.timer);
    const generation = ++this.loops; // a loop of an earlier start() ends at its next turn
    if (this.queue.size) this.kick();
    const loop = async () => {
      if (this.stopped || generation !== this.loops) return;
      const every = this.o.recoverEveryMs ?? 60_000;
      if (every > 0 && this.now() - this.lastRecover >= every) {
        this.lastRecover = this.now();
        try {
          await this.recover({ minAgeMs: this.o.recoverMinAgeMs ?? RECOVER_MIN_AGE_MS });
        } catch (e) {
          this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'periodic recovery failed');
        }
      }
      try {
        await this.poll();
      } catch (e) {
        this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'poll for pending batches failed');
      }
      if (!this.stopped && generation === this.loops) this.timer = setTimeout(loop, this.o.pollMs);
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Picks up stored batches that nobody processed (other ingest nodes, a crash, a failed tick). */
  async poll(): Promise<number> {
    const now = this.now();
    const rows = await this.o.store.pendingBatches(now - (this.o.lookbackMs ?? LOOKBACK_MS), 5000, this.o.partition);
    const fresh = rows.filter((r) => r.receivedAt <= now - this.o.pollMinAgeMs && this.queue.isNew(r));
    if (fresh.length) this.enqueue(fresh);
    return fresh.length;
  }

  /** Waits until everything handed off so far is processed. */
  async drain(): Promise<void> {
    this.queue.urgent++;
    this.queue.hurry();
    try {
      while (this.running || (this.queue.size && !this.stopped)) {
        this.kick();
        await this.running;
      }
    } finally {
      this.queue.urgent--;
    }
  }

  /**
   * Forgets an account's processed batches, unwritten dictionary entries, cached pseudonyms and
   * key copies (shred, wipe): resolves once every thread dropped them (the worker thread is
   * retired whole after zeroing its key copies; worker-client.ts).
   */
  async forgetAccount(accountId: string): Promise<void> {
    this.queue.forgetAccount(accountId);
    for (const [k, d] of this.unwritten) if (d.accountId === accountId) this.unwritten.delete(k);
    await this.runner.forgetAccount(accountId);
  }

  /** A heap snapshot of the tick worker thread, or undefined without one (memory audits, tests). */
  workerHeapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.runner.heapSnapshot();
  }

  /**
   * Stops at once without draining (a lost lease): queued batches are forgotten (they stay
   * durable and unmarked, for whoever holds the partition next), the tick being written fails
   * at its fence. start() resumes.
   */
  async suspend(): Promise<void> {
    clearTimeout(this.timer);
    this.loops++;
    this.stopped = true;
    this.queue.dropWaiting();
    await this.running?.catch(() => {});
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.loops++;
    await this.drain();
    this.stopped = true;
    await this.runner.stop();
  }

  /** After the markers: throws when the lease ran out and storage does not count them (the tick failed). */
  private async committed(part: string, processedAt: number): Promise<void> {
    try {
      this.o.fence?.();
    } catch (e) {
      if (await this.o.store.partMarkedSince(part, processedAt)) return; // committed before any fence: done
      throw e;
    }
  }

  /**
   * What a tick needs of an account; null when it is deleted or shredded. Its settings: for
   * batches handed off by ingest, the newer of what ingest saw (carried with them) and what this
   * process read since — never waiting for storage; for batches of the poll alone, read (in
   * bulk, through the account cache). A shred is caught by the keyring's tombstone, which is
   * written before anything else of a shred (README "What a shred does, in order").
   */
  private async account(accountId: string, seen: AccountSeen | undefined): Promise<TickAccount | null> {
    let settings: AccountSeen | AccountRow | null | undefined = seen;
    if (seen) {
      const cached = this.o.accounts.seen(accountId);
      if (cached !== undefined && (cached === null || cached.at >= seen.at)) settings = cached; // a tie: the cache is the newer (seen came from it or before it)
    } else {
      const row = await this.o.accounts.get(accountId);
      settings = row && row.state !== 'shredded' ? row : null;
    }
    if (!settings) return null;
    // undefined only when tombstoned; an entry that cannot be read throws: its batches wait.
    const keys = this.o.accounts.keys(accountId);
    if (!keys?.length) return null;
    return {
      keys: keys.map(({ version, publicKey, secretKey, dataKey, macKey }) => ({ version, publicKey, secretKey, dataKey, macKey })),
      retentionDays: settings.retentionDays,
      confidential: settings.confidential,
    };
  }

  /** Starts a tick's CPU part (in the worker, or inline at once). */
  private begin(rows: BatchRow[]): Pending {
    const t: Pending = { rows, twins: [], twinsToDelete: [], now: this.now(), part: toHex(randomBytes(16)), output: Promise.resolve(undefined as never) };
    t.output = this.compute(t);
    t.output.catch(() => {}); // awaited by process() or abandon()
    return t;
  }

  private async compute(t: Pending): Promise<Output> {
    const { rows, now, part } = t;
    const accounts = new Map<string, TickAccount | null>();
    const unresolved = new Set<string>();
    // What ingest saw of each account, the newest per account (hand-offs carry it).
    const seen = new Map<string, AccountSeen | undefined>();
    for (const r of rows) {
      const s = seen.get(r.accountId);
      if (!s || (r.seen && r.seen.at > s.at)) seen.set(r.accountId, r.seen);
    }
    // All at once: the misses of batches without it become one storage read (Accounts.get).
    const ids = [...seen.keys()];
    // The one read of which batches already have a live marker (twins) runs while the tick's
    // accounts are resolved and its CPU part computed — its wait for the engine is off the tick's
    // path; when it names any (rare: a retry after a restart), the tick is computed again without
    // them. If it fails, the tick fails before writing anything: its batches are retried.
    const marking = rows.length ? this.o.store.markedBatches([...rows]) : Promise.resolve(new Set<string>());
    marking.catch(() => {}); // awaited below
    const resolving = this.o.metrics.tickPhaseSeconds.startTimer({ phase: 'accounts' });
    const resolved = await Promise.allSettled(ids.map((id) => this.account(id, seen.get(id))));
    resolving();
    ids.forEach((id, i) => {
      const r = resolved[i]!;
      if (r.status === 'fulfilled') return void accounts.set(id, r.value);
      // One account whose state or keys cannot be read (say an unreadable key file) must not
      // hold up the others: its batches leave this tick, unmarked, for the poll to retry.
      unresolved.add(id);
      if (isCollectorError(r.reason) && r.reason.code === 'account_key_unavailable') return; // logged by accounts.keys, once an hour
      this.o.log.error({ accountId: id, err: r.reason instanceof Error ? r.reason.message : String(r.reason) }, 'cannot read an account for processing; its batches wait');
    });
    if (unresolved.size) {
      const keep = rows.filter((r) => !unresolved.has(r.accountId));
      this.queue.release(rows.filter((r) => unresolved.has(r.accountId)));
      rows.splice(0, rows.length, ...keep); // the tick's own list: these are neither written nor marked done
    }
    const input: TickInput = { rows, accounts, now, part, limits: this.o.limits, epoch: this.epoch };
    const output = await this.runner.compute(input);
    let marked: Set<string>;
    try {
      marked = await marking;
    } catch (e) {
      await this.keepUnwritten(output.dict); // computed, never written
      throw e;
    }
    if (!marked.size) return output;
    const keep: BatchRow[] = [];
    for (const r of rows) {
      if (!marked.has(`${r.accountId}/${r.batchId}`)) keep.push(r);
      else {
        t.twins.push(r);
        // A deleted or shredded account (null) has nothing left to delete here.
        if (accounts.get(r.accountId)?.confidential) t.twinsToDelete.push({ accountId: r.accountId, batchId: r.batchId });
      }
    }
    rows.splice(0, rows.length, ...keep);
    this.o.metrics.batchTwins.inc(t.twins.length);
    // The first computation is dropped: its dictionary entries (counted as written by the thread
    // that computed them) go out with the next write, like an abandoned tick's.
    await this.keepUnwritten(output.dict);
    return this.runner.compute({ ...input, rows });
  }

  /** Writes a tick (`computed`: called once its CPU part is done). */
  private async process(t: Pending, computed: () => void): Promise<void> {
    const { part } = t;
    let now = t.now;
    this.writing.add(part);
    // What this tick began to write: its rollup rows (by key: removed if it fails) and dictionary entries.
    const out: TickWrites = { rollups: undefined, dict: [] };
    try {
      const waiting = this.o.metrics.tickPhaseSeconds.startTimer({ phase: 'wait' });
      const output = await t.output;
      waiting();
      for (const [phase, ms] of Object.entries(output.timings)) this.o.metrics.tickPhaseSeconds.observe({ phase }, ms / 1000);
      out.dict = this.takeUnwritten(output.dict);
      // What this tick cost per account, before the next tick is taken (its budget uses it).
      for (const [accountId, c] of Object.entries(output.costs)) this.queue.recordCost(accountId, c.ms, c.points);
      computed();
      // Rows of failed ticks go before this one writes anything.
      await this.recovery.cleanupFailedTicks();
      // Stamped now, not when the CPU part began: periodic recovery deletes unmarked parts by
      // written_at age, and must never take this tick's rows for a crashed one's.
      now = this.now();
      stampWrittenAt(output.insert, now); // the same rows, encoded in the worker
      for (const r of output.processed) {
        r.processedAt = now;
        r.epoch = this.epoch;
      }
      await this.write(t, output, out);
    } catch (e) {
      // Dictionary entries of this tick may not be stored: written with the next tick.
      await this.keepUnwritten(out.dict);
      // Best effort now; if storage cannot answer, before the next tick (and by periodic recovery).
      const refs = out.rollups ? rollupRefs(out.rollups, part) : [];
      await this.recovery.tickFailed(part, refs, now);
      throw e;
    } finally {
      this.writing.delete(part);
    }
  }

  private async write({ rows, twins, twinsToDelete, part, now }: Pending, output: Output, out: TickWrites): Promise<void> {
    const { dict } = out;
    const { processed, rejects, confidential, batchRejects, pointsProcessed, pointsRejected, cacheLookups, limited } = output;
    const m = this.o.metrics;
    for (const [cache, c] of Object.entries(cacheLookups) as [keyof CacheLookups, { hit: number; miss: number }][]) {
      this.cacheTotals[cache].hit += c.hit;
      this.cacheTotals[cache].miss += c.miss;
    }
    if (limited.length) this.o.onCardinalityLimited?.(limited);
    for (const [code, n] of Object.entries(batchRejects)) m.batchRejects.inc({ code }, n);
    if (pointsProcessed) m.points.inc({ outcome: 'processed' }, pointsProcessed);
    if (pointsRejected) m.points.inc({ outcome: 'rejected' }, pointsRejected);

    const t = m.insertSeconds;
    if (dict.length) {
      const end = t.startTimer({ table: 'dictionary' });
      await this.o.store.insertDictionary(dict);
      end();
    }
    // The rows as the worker encoded them (its output carries their keys, not the row objects: tick.ts forTransfer).
    const rollupRows = output.insert.rowEnds.length;
    if (rollupRows) {
      const end = t.startTimer({ table: 'rollups' });
      out.rollups = output;
      // Encoded where they were sealed (tick.ts): this thread only hands the bytes over.
      await this.o.store.insertEncodedRollups(output.insert);
      end();
      m.rollupRowsWritten.inc(rollupRows);
    }
    await this.o.atCommitPoint?.('rollups-written', part);
    this.o.fence?.();
    // Compaction derives an hour's rows from the minute rows stored once it ended DERIVE_LAG_MS ago
    // (rollup/levels.ts): a tick that wrote minute rows only for it must not commit later than this.
    if (this.now() - now > TICK_COMMIT_MAX_MS) throw new Error('tick too old to commit: retried');
    this.o.beforeCommit?.();
    const end = t.startTimer({ table: 'processed' });
    await this.o.store.markProcessed(processed);
    end();
    // A holder that stalled past its lease during the insert: its markers count only if they
    // were committed before the next holder's fence (storage decides, fences.ts).
    await this.committed(part, processed[0]?.processedAt ?? 0);
    await this.o.atCommitPoint?.('markers-written', part);
    // After the markers: a failure here loses reject counts rather than counting them twice.
    try {
      if (rejects.length) await this.o.store.addRejects(rejects);
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'could not store reject counts');
    }
    const toDelete = twinsToDelete.length ? [...confidential, ...twinsToDelete] : confidential;
    if (toDelete.length) await this.o.store.deleteBatches(toDelete);

    const doneAt = this.now();
    this.queue.processed(rows);
    this.queue.processed(twins);
    for (const r of rows) m.processingLag.observe((doneAt - r.receivedAt) / 1000);
    this.o.onProcessed?.([...new Set(rows.map((r) => r.accountId))]);
  }
}
