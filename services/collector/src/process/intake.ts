/**
 * The processor's intake: which batches wait for a tick and which are taken. Batches arrive by
 * hand-off from ingest (durable rows) and by the poll (rows other nodes stored, a crash or a
 * failed tick left); a batch waiting, in a tick or processed by this node is taken once
 * (`inflight`, `done`). Waiting batches are queued per account and served round robin under
 * a per-account budget (fair-queue.ts); under load, hand-offs coalesce into bigger ticks.
 */
import type { BatchRow } from '../storage/types.js';
import type { Metrics } from '../metrics.js';
import { FairQueue, type TickBudget } from './fair-queue.js';
import { FifoMap } from '../fifo-map.js';

const key = (r: { accountId: string; batchId: string }) => `${r.accountId}/${r.batchId}`;
/** Most batches per tick. */
export const TICK_BATCHES = 1000;
/**
 * Most estimated CPU (ms) one account's batches may take of one tick while other accounts wait,
 * ALONE_FACTOR times that when it is alone (fair-queue.ts): a batch arriving next waits behind
 * one bounded tick at most.
 */
export const TICK_ACCOUNT_BUDGET_MS = 250;
/** Most points of one account per tick (the backstop of the estimate; CIPHERSTAT_PROCESS_TICK_ACCOUNT_POINTS). */
export const DEFAULT_TICK_ACCOUNT_POINTS = 10_000;

export interface IntakeOptions {
  metrics: Metrics;
  now: () => number;
  /**
   * Tick cadence under load: a tick starts at least this many ms after the previous one started
   * (CIPHERSTAT_PROCESS_COALESCE_MS), unless `minBatches` are queued — the next tick's CPU part
   * included, which with the worker would otherwise start as soon as the previous one's ended.
   * Fewer, bigger ticks: fewer rollup rows per point and fewer inserts. 0: no wait. Only under load
   * (at least `coalesceMinRate` batches handed off in the last second): a quiet collector
   * processes at once.
   */
  coalesceMs?: number;
  /** Batches queued that start a tick before its cadence (default and most: TICK_BATCHES; CIPHERSTAT_PROCESS_TICK_MIN_BATCHES). */
  minBatches?: number;
  /** Batches per second of hand-offs from which ticks coalesce (default 100). */
  coalesceMinRate?: number;
  /** What one account's batches may take of one tick (fair-queue.ts); default TICK_ACCOUNT_BUDGET_MS and DEFAULT_TICK_ACCOUNT_POINTS. */
  tickBudget?: Partial<TickBudget>;
}

/** Events over about the last `spanMs` (sliding, from two fixed windows of real time). */
class RateWindow {
  private start = 0;
  private current = 0;
  private previous = 0;

  constructor(private readonly spanMs: number) {}

  add(n: number): void {
    const t = performance.now();
    if (t - this.start >= this.spanMs) {
      this.previous = t - this.start < 2 * this.spanMs ? this.current : 0;
      this.current = 0;
      this.start = t;
    }
    this.current += n;
  }

  /** About how many in the last `spanMs`. */
  recent(): number {
    const age = performance.now() - this.start;
    return this.current + (age < this.spanMs ? this.previous * (1 - age / this.spanMs) : 0);
  }
}

/** Over how long the processing rate is measured (a few ticks). */
const PROCESSED_SPAN_MS = 5000;

export class Intake {
  private readonly queue = new FairQueue();
  private readonly inflight = new Set<string>();
  private readonly done = new FifoMap<string, true>(500_000);
  /** Hand-offs over about the last second. */
  private readonly handedOff = new RateWindow(1000);
  /** Batches processed over about the last few seconds. */
  private readonly processedRate = new RateWindow(PROCESSED_SPAN_MS);
  private wake: (() => void) | undefined;
  /** When the previous tick was taken (performance.now()): the next waits for the cadence from then. */
  private lastTakeAt = -Infinity;
  /** Callers waiting for everything queued (drain): no coalescing wait meanwhile. */
  urgent = 0;

  constructor(private readonly o: IntakeOptions) {}

  get size(): number {
    return this.queue.size;
  }

  /** Bytes the waiting batches hold (fair-queue.ts). */
  get bytes(): number {
    return this.queue.bytes;
  }

  /** How long the oldest batch waiting for a tick has waited (ms; 0: none). O(accounts): not per request. */
  lagMs(): number {
    const at = this.queue.oldest();
    return at === Infinity ? 0 : Math.max(0, this.o.now() - at);
  }

  /**
   * How long this account's oldest batch still waiting for a tick has waited (ms; 0: none
   * waiting). Queues are per account and served round robin (fair-queue.ts), so this grows
   * only for an account that sends more than processing gives it, or when processing stalls.
   */
  accountLagMs(accountId: string): number {
    const at = this.queue.oldestOf(accountId);
    return at === undefined ? 0 : Math.max(0, this.o.now() - at);
  }

  /**
   * About how long the batches waiting now need to be processed (s), at the rate of the last few
   * seconds; while nothing was processed lately, how long the oldest has waited.
   */
  drainSeconds(): number {
    const perSecond = this.processedRate.recent() / (PROCESSED_SPAN_MS / 1000);
    return perSecond > 0 ? this.queue.size / perSecond : this.lagMs() / 1000;
  }

  /** Whether a stored batch is neither waiting, in a tick, nor processed by this node. */
  isNew(r: BatchRow): boolean {
    return !this.inflight.has(key(r)) && !this.done.has(key(r));
  }

  /**
   * Queues the rows not waiting or in a tick already. One processed here before is queued again
   * when handed off: ingest stored it again (a twin its memory no longer held), and only a tick
   * deletes a confidential account's twin (it skips the batch itself: its marker). The poll
   * hands over only rows that are new here (isNew).
   */
  push(rows: BatchRow[]): void {
    this.handedOff.add(rows.length);
    for (const r of rows) {
      const k = key(r);
      if (this.inflight.has(k)) continue;
      this.inflight.add(k);
      // When it was handed to this processor (the poll hands over old batches).
      this.queue.push(r, Math.max(r.receivedAt, this.o.now()));
    }
    this.o.metrics.processQueue.set(this.queue.size);
    if (this.queue.size >= this.minBatches) this.wake?.();
  }

  private get minBatches(): number {
    return Math.min(TICK_BATCHES, this.o.minBatches ?? TICK_BATCHES);
  }

  /**
   * How long the next tick should still wait for hand-offs (ms; 0: take it now): the rest of the
   * cadence since the previous tick was taken — 0 when `minBatches` are queued, a drain waits,
   * or hand-offs are too few to be worth gathering.
   */
  coalesceWait(): number {
    if (this.urgent > 0 || this.queue.size >= this.minBatches) return 0;
    const wait = (this.o.coalesceMs ?? 0) - (performance.now() - this.lastTakeAt);
    if (wait <= 0) return 0;
    return this.underLoad() ? wait : 0;
  }

  /** Whether batches arrive at load rate (at least `coalesceMinRate` over about the last second): what makes ticks coalesce, and compaction yield (compactor.ts). */
  underLoad(): boolean {
    return this.handedOff.recent() >= (this.o.coalesceMinRate ?? 100);
  }

  /** Lets hand-offs accumulate for the next tick (coalesceWait), ended early once `minBatches` are queued. */
  async coalesce(): Promise<void> {
    const wait = this.coalesceWait();
    if (wait <= 0) return;
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

  /** Ends a coalescing wait at once (drain). */
  hurry(): void {
    this.wake?.();
  }

  /** The next tick's batches. */
  take(): BatchRow[] {
    this.lastTakeAt = performance.now();
    const rows = this.queue.take(TICK_BATCHES, {
      ms: this.o.tickBudget?.ms ?? TICK_ACCOUNT_BUDGET_MS,
      points: this.o.tickBudget?.points ?? DEFAULT_TICK_ACCOUNT_POINTS,
    });
    this.o.metrics.processQueue.set(this.queue.size);
    return rows;
  }

  /** What a tick cost an account (its next budget uses it). */
  recordCost(accountId: string, ms: number, points: number): void {
    this.queue.recordCost(accountId, ms, points);
  }

  /** Batches that left a tick unwritten: durable and unmarked, taken again by the poll. */
  release(rows: readonly BatchRow[]): void {
    for (const r of rows) this.inflight.delete(key(r));
  }

  /** Batches whose tick committed. */
  processed(rows: readonly BatchRow[]): void {
    this.processedRate.add(rows.length);
    for (const r of rows) {
      this.inflight.delete(key(r));
      this.done.set(key(r), true);
    }
  }

  /** Forgets every waiting batch (a lost lease): they stay durable and unmarked. */
  dropWaiting(): void {
    this.release(this.queue.take(Infinity, { ms: Infinity, points: Infinity }));
    this.o.metrics.processQueue.set(this.queue.size);
  }

  /** Forgets an account's processed batches (shred, wipe). */
  forgetAccount(accountId: string): void {
    this.done.deleteWhere((k) => k.startsWith(`${accountId}/`));
  }
}
