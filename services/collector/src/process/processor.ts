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
 * (recovery.ts).
 *
 * CPU: opening, aggregating and sealing (tick.ts) run in a worker thread when running from the
 * compiled files (tick-worker.js), inline otherwise; storage writes stay on the main thread.
 * Ticks write one at a time, in order; with the worker, the next tick's CPU part overlaps the
 * current tick's writes (see drainQueue).
 *
 * Scale-out: with `partition` (i of n), the poll and recovery only see accounts with
 * `cityHash64(account_id) % n = i`, so n process nodes never process the same batch.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { randomBytes, toHex } from '@cipherstat/protocol';
import type { BatchRow, DictRow, Partition, RollupRow, Store } from '../storage/types.js';
import type { Keyring } from '../keyring/index.js';
import type { Accounts } from '../accounts/accounts.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../logger.js';
import { computeTick, TickState, type CacheLookups, type TickAccount, type TickInput, type TickLimits, type TickOutput } from './tick.js';
import { TickWorker, WORKER_URL, WorkerFailure } from './worker-client.js';
import { FairQueue, type TickBudget } from './fair-queue.js';
import { LOOKBACK_MS, TickRecovery } from './recovery.js';
import { FifoMap } from '../fifo-map.js';
import { isCollectorError } from '../errors.js';

const key = (r: { accountId: string; batchId: string }) => `${r.accountId}/${r.batchId}`;
/** Worker failures in a row after which ticks run inline. */
const WORKER_FAILURES_BEFORE_INLINE = 3;
/** Most batches per tick. */
const TICK_BATCHES = 1000;
/**
 * Most estimated CPU (ms) one account's batches may take of one tick while other accounts wait,
 * ALONE_FACTOR times that when it is alone (fair-queue.ts): a batch arriving next waits behind
 * one bounded tick at most.
 */
export const TICK_ACCOUNT_BUDGET_MS = 250;
/** Most points of one account per tick (the backstop of the estimate; CIPHERSTAT_PROCESS_TICK_ACCOUNT_POINTS). */
export const DEFAULT_TICK_ACCOUNT_POINTS = 10_000;

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
  /**
   * Hand-offs coalesce into bigger ticks (far fewer rollup rows per point): a tick waits up to
   * this many ms (minus how long the previous tick ran) or until a full tick is queued. 0: no wait.
   * Only under load (at least `coalesceMinRate` batches handed off in the last second): a quiet
   * collector processes at once.
   */
  coalesceMs?: number;
  /** Batches per second of hand-offs from which ticks coalesce (default 100). */
  coalesceMinRate?: number;
  /** This node's share of accounts for the poll and recovery (default: all of them). */
  partition?: Partition;
  /** Periodic recovery from the poll loop: how often (default 60 s; 0: never). */
  recoverEveryMs?: number;
  /** Periodic recovery only deletes parts written at least this long ago (default 2 min: never a live tick). */
  recoverMinAgeMs?: number;
  /** Called after each tick with the accounts it touched (query caches). */
  onProcessed?: (accountIds: string[]) => void;
  /** Computes ticks in a worker thread when its compiled file exists (default true; else inline). */
  worker?: boolean;
  /** Another worker entry (tests). */
  workerUrl?: URL;
  /** What one account's batches may take of one tick (fair-queue.ts); default TICK_ACCOUNT_BUDGET_MS and DEFAULT_TICK_ACCOUNT_POINTS. */
  tickBudget?: Partial<TickBudget>;
  /** Cardinality limits per account (tick.ts); default: none. */
  limits?: TickLimits;
  /** Called after each tick with the accounts whose points it rejected for cardinality (ingest slows them). */
  onCardinalityLimited?: (accountIds: string[]) => void;
  /**
   * Called right before a tick's processed markers are written (its commit): throws when this
   * node may no longer commit (its partition lease ran out; ownership.ts). The tick then fails
   * and its rollup rows are removed like any failed tick's.
   */
  fence?: () => void;
}

/** A tick whose CPU part has started. */
interface Pending {
  rows: BatchRow[];
  now: number;
  part: string;
  output: Promise<TickOutput>;
}

export class Processor {
  private readonly queue = new FairQueue();
  private readonly inflight = new Set<string>();
  private readonly done = new FifoMap<string, true>(500_000);
  /** Caches of the inline path (the worker thread keeps its own). */
  private readonly state = new TickState();
  private worker: TickWorker | undefined;
  /** Ticks in a row whose worker failed (crash, silence, a file that does not load). */
  private workerFailures = 0;
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private urgent = 0;
  private wake: (() => void) | undefined;
  private lastTickMs = 0;
  /** Hand-offs in the current and the previous 1 s window (real time). */
  private rateWindow = { start: 0, current: 0, previous: 0 };
  private lastRecover = 0;
  /** Rows of failed ticks and of crashed ones (recovery.ts). */
  private readonly recovery: TickRecovery;
  /** Poll loops started; a loop runs only while its number is the latest. */
  private loops = 0;

  /** Lookups in the tick caches (worker or inline), summed over ticks. */
  private readonly cacheTotals: CacheLookups = { tick_account: { hit: 0, miss: 0 }, series: { hit: 0, miss: 0 }, pseudonym: { hit: 0, miss: 0 } };

  constructor(private readonly o: ProcessorOptions) {
    for (const [cache, c] of Object.entries(this.cacheTotals)) o.metrics.cacheSources.set(cache, () => c);
    const use = o.worker !== false && (o.workerUrl !== undefined || existsSync(fileURLToPath(WORKER_URL)));
    this.worker = use ? new TickWorker(o.workerUrl ?? WORKER_URL, o.log) : undefined;
    this.recovery = new TickRecovery(o, () => this.now());
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  get backlog(): number {
    return this.queue.size;
  }

  /** How long the oldest batch waiting for a tick has waited (ms; 0: none). O(accounts): not per request. */
  lagMs(): number {
    const at = this.queue.oldest();
    return at === Infinity ? 0 : Math.max(0, this.now() - at);
  }

  /**
   * How long this account's oldest batch still waiting for a tick has waited (ms; 0: none
   * waiting). Queues are per account and served round robin (fair-queue.ts), so this grows
   * only for an account that sends more than processing gives it, or when processing stalls.
   */
  accountLagMs(accountId: string): number {
    const at = this.queue.oldestOf(accountId);
    return at === undefined ? 0 : Math.max(0, this.now() - at);
  }

  /** Hand-off from ingest: rows that are durable now. */
  enqueue(rows: BatchRow[]): void {
    const t = performance.now();
    const w = this.rateWindow;
    if (t - w.start >= 1000) {
      w.previous = t - w.start < 2000 ? w.current : 0;
      w.current = 0;
      w.start = t;
    }
    w.current += rows.length;
    for (const r of rows) {
      const k = key(r);
      if (this.inflight.has(k) || this.done.has(k)) continue;
      this.inflight.add(k);
      // When it was handed to this processor (the poll hands over old batches).
      this.queue.push(r, Math.max(r.receivedAt, this.now()));
    }
    this.o.metrics.processQueue.set(this.queue.size);
    if (this.queue.size >= TICK_BATCHES) this.wake?.();
    this.kick();
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = this.drainQueue().finally(() => {
      this.running = undefined;
      if (this.queue.size) this.kick(); // a hand-off that came while the loop was ending
    });
  }

  /** Lets hand-offs accumulate: up to `coalesceMs` minus the previous tick's run time, or a full tick. */
  private async coalesce(): Promise<void> {
    const wait = (this.o.coalesceMs ?? 0) - this.lastTickMs;
    if (wait <= 0 || this.urgent > 0 || this.queue.size >= TICK_BATCHES) return;
    // Batches handed off over roughly the last second.
    const w = this.rateWindow;
    const age = performance.now() - w.start;
    const recent = w.current + (age < 1000 ? w.previous * (1 - age / 1000) : 0);
    if (recent < (this.o.coalesceMinRate ?? 100)) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, wait);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private take(): BatchRow[] {
    const rows = this.queue.take(TICK_BATCHES, {
      ms: this.o.tickBudget?.ms ?? TICK_ACCOUNT_BUDGET_MS,
      points: this.o.tickBudget?.points ?? DEFAULT_TICK_ACCOUNT_POINTS,
    });
    this.o.metrics.processQueue.set(this.queue.size);
    return rows;
  }

  /**
   * With the worker, the next tick's CPU part runs while this tick writes (one tick ahead at
   * most; writes stay in order). When a tick fails, the next one was computed as if this one's
   * dictionary entries were stored: it is dropped too, its batches retried like the failed ones.
   */
  private async drainQueue(): Promise<void> {
    let next: Pending | undefined;
    while ((next || this.queue.size) && !this.stopped) {
      if (!next) await this.coalesce();
      const cur = next ?? this.begin(this.take());
      next = undefined;
      const t0 = performance.now();
      try {
        await this.process(cur, () => {
          if (this.worker && this.queue.size) next = this.begin(this.take());
        });
        this.lastTickMs = performance.now() - t0;
      } catch (e) {
        // Leave them for the poll: they are durable and unmarked (process() removed its rollup rows).
        for (const r of cur.rows) this.inflight.delete(key(r));
        if (next) await this.abandon(next);
        next = undefined;
        this.lastTickMs = 0;
        this.o.log.error({ err: e instanceof Error ? e.message : String(e) }, 'processing failed; batches will be retried');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    if (next) await this.abandon(next);
  }

  /** Drops a computed tick that will not be written: its batches are retried, its dictionary entries forgotten. */
  private async abandon(t: Pending): Promise<void> {
    for (const r of t.rows) this.inflight.delete(key(r));
    const out = await t.output.catch(() => undefined);
    if (out) this.forgetDict(out.dict);
  }

  /** Dictionary entries that may not be stored: written again when seen next. */
  private forgetDict(dict: DictRow[]): void {
    if (!dict.length) return;
    const keys = dict.map(({ accountId, keyVersion, kind, pseudonym }) => ({ accountId, keyVersion, kind, pseudonym }));
    if (this.worker) this.worker.post({ type: 'forgetDict', dict: keys });
    else this.state.forgetDict(keys);
  }

  /**
   * Deletes rollup rows of ticks that never wrote their processed markers (a crash): recovery.ts.
   * Only this node's partition; with `minAgeMs`, only parts written at least that long ago.
   */
  recover(opts: { minAgeMs?: number } = {}): Promise<number> {
    return this.recovery.recoverCrashed(opts);
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
          await this.recover({ minAgeMs: this.o.recoverMinAgeMs ?? 120_000 });
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
    const fresh = rows.filter((r) => r.receivedAt <= now - this.o.pollMinAgeMs && !this.inflight.has(key(r)) && !this.done.has(key(r)));
    if (fresh.length) this.enqueue(fresh);
    return fresh.length;
  }

  /** Waits until everything handed off so far is processed. */
  async drain(): Promise<void> {
    this.urgent++;
    this.wake?.();
    try {
      while (this.running || (this.queue.size && !this.stopped)) {
        this.kick();
        await this.running;
      }
    } finally {
      this.urgent--;
    }
  }

  /**
   * Forgets an account's processed batches, cached pseudonyms and key copies (shred, wipe):
   * resolves once every thread dropped them (the worker zeroes its copies, then answers).
   */
  async forgetAccount(accountId: string): Promise<void> {
    this.done.deleteWhere((k) => k.startsWith(`${accountId}/`));
    this.state.forgetAccount(accountId);
    await this.worker?.forgetAccount(accountId);
  }

  /** A heap snapshot of the tick worker thread, or undefined without one (memory audits, tests). */
  workerHeapSnapshot(): Promise<NodeJS.ReadableStream> | undefined {
    return this.worker?.heapSnapshot();
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
    for (const r of this.queue.take(Infinity, { ms: Infinity, points: Infinity })) this.inflight.delete(key(r));
    this.o.metrics.processQueue.set(this.queue.size);
    await this.running?.catch(() => {});
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.loops++;
    await this.drain();
    this.stopped = true;
    await this.worker?.stop();
  }

  /** What a tick needs of an account; null when it is deleted or shredded. */
  private async account(accountId: string): Promise<TickAccount | null> {
    const account = await this.o.accounts.get(accountId);
    if (!account || account.state === 'shredded') return null;
    // undefined only when tombstoned; an entry that cannot be read throws: its batches wait.
    const keys = this.o.accounts.keys(accountId);
    if (!keys?.length) return null;
    return {
      keys: keys.map(({ version, publicKey, secretKey, dataKey, macKey }) => ({ version, publicKey, secretKey, dataKey, macKey })),
      retentionDays: account.retentionDays,
      confidential: account.confidential,
    };
  }

  /** Starts a tick's CPU part (in the worker, or inline at once). */
  private begin(rows: BatchRow[]): Pending {
    const now = this.now();
    const part = toHex(randomBytes(16));
    const output = this.compute(rows, now, part);
    output.catch(() => {}); // awaited by process() or abandon()
    return { rows, now, part, output };
  }

  private async compute(rows: BatchRow[], now: number, part: string): Promise<TickOutput> {
    const accounts = new Map<string, TickAccount | null>();
    const unresolved = new Set<string>();
    // All at once: the accounts' state misses become one storage read (Accounts.get).
    const ids = [...new Set(rows.map((r) => r.accountId))];
    const resolved = await Promise.allSettled(ids.map((id) => this.account(id)));
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
      for (const r of rows) if (unresolved.has(r.accountId)) this.inflight.delete(key(r));
      rows.splice(0, rows.length, ...keep); // the tick's own list: these are neither written nor marked done
    }
    const input: TickInput = { rows, accounts, now, part, limits: this.o.limits };
    if (!this.worker) return computeTick(this.state, input);
    try {
      const out = await this.worker.tick(input);
      this.workerFailures = 0;
      return out;
    } catch (e) {
      // A worker that keeps failing (say its file does not load) must not stop processing,
      // and with it ingest (backpressure): after a few in a row, ticks run on this thread.
      if (e instanceof WorkerFailure && ++this.workerFailures >= WORKER_FAILURES_BEFORE_INLINE) {
        this.o.log.error({ failures: this.workerFailures }, 'tick worker keeps failing; processing on the main thread from now on');
        const w = this.worker;
        this.worker = undefined;
        void w.stop();
      }
      throw e;
    }
  }

  /** Writes a tick (`computed`: called once its CPU part is done). */
  private async process(t: Pending, computed: () => void): Promise<void> {
    const { part } = t;
    let now = t.now;
    const out = { rollups: [] as RollupRow[], dict: [] as DictRow[] };
    try {
      const output = await t.output;
      out.dict = output.dict;
      // What this tick cost per account, before the next tick is taken (its budget uses it).
      for (const [accountId, c] of Object.entries(output.costs)) this.queue.recordCost(accountId, c.ms, c.points);
      computed();
      // Rows of failed ticks go before this one writes anything.
      await this.recovery.cleanupFailedTicks();
      // Stamped now, not when the CPU part began: periodic recovery deletes unmarked parts by
      // written_at age, and must never take this tick's rows for a crashed one's.
      now = this.now();
      for (const r of output.rollups) r.writtenAt = now;
      for (const r of output.processed) r.processedAt = now;
      await this.write(t, output, out);
    } catch (e) {
      // Dictionary entries of this tick may not be stored: write them again next time.
      this.forgetDict(out.dict);
      // Best effort now; if storage cannot answer, before the next tick (and by periodic recovery).
      const refs = out.rollups.map(({ accountId, level, bucket, metric, series }) => ({ accountId, level, bucket, metric, series, part }));
      await this.recovery.tickFailed(part, refs, now);
      throw e;
    }
  }

  private async write({ rows }: Pending, output: TickOutput, out: { rollups: RollupRow[] }): Promise<void> {
    const { rollups, dict, processed, rejects, confidential, batchRejects, pointsProcessed, pointsRejected, cacheLookups, limited } = output;
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
    if (rollups.length) {
      const end = t.startTimer({ table: 'rollups' });
      out.rollups = rollups;
      await this.o.store.insertRollups(rollups);
      end();
    }
    this.o.fence?.();
    const end = t.startTimer({ table: 'processed' });
    await this.o.store.markProcessed(processed);
    end();
    // After the markers: a failure here loses reject counts rather than counting them twice.
    try {
      if (rejects.length) await this.o.store.addRejects(rejects);
    } catch (e) {
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'could not store reject counts');
    }
    if (confidential.length) await this.o.store.deleteBatches(confidential);

    const doneAt = this.now();
    for (const r of rows) {
      this.inflight.delete(key(r));
      this.done.set(key(r), true);
      m.processingLag.observe((doneAt - r.receivedAt) / 1000);
    }
    this.o.onProcessed?.([...new Set(rows.map((r) => r.accountId))]);
  }
}
