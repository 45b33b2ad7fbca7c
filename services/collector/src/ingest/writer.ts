/**
 * Group commit for ingest: every request waits for one durable insert, and while one insert
 * is in flight the next requests pile up and go together in the next one. Latency is one
 * insert; throughput is as many batches as arrive during it. Idempotent by batch id: a
 * batch already stored (recently seen here, or found in storage) resolves as a duplicate.
 *
 * Where this node also processes (role `all`: every stored batch is handed to its processor),
 * the check is this process's memory only (`checkStorage: false`): the batches it stored or
 * acknowledged since it started, the last 500,000 of them. A twin it does not remember (a retry
 * after a restart, or of a batch evicted from memory) is stored again — the same (account_id,
 * batch_id), one row for every reader of `batches` (FINAL) — and answered `duplicate: false`;
 * processing counts it once all the same: a tick leaves out every batch that already has a live
 * processed marker, and deletes its sealed row in confidential mode (process/processor.ts). The
 * storage read this saves was a third of embedded chDB's time under storefront load
 * (ARCHITECTURE.md). An ingest-only node keeps the storage check: its batches reach
 * processing through the poll, which never returns a batch with a marker, so a twin of a
 * processed batch there would stay stored (a confidential account's too).
 *
 * A batch is acknowledged only after its insert resolved. When the duplicate check or the
 * insert fails or passes its deadline (the store given here has one), every batch of the group
 * is refused with 503 storage_unavailable and nothing is remembered as seen, so the client's
 * retry (same batch id) goes through the check again. An insert that timed out has an unknown
 * outcome: the engine may still write it after we answered. That cannot count anything twice:
 * - the retry finds the late row (existingBatches) and is acknowledged as a duplicate; or it
 *   arrives first and writes the same (account_id, batch_id) again: `batches` is a
 *   ReplacingMergeTree on that key and every read of pending batches uses FINAL, so the two
 *   rows are one batch;
 * - processing is exactly once per (account_id, batch_id) through the `processed` table, not
 *   per stored row, and a row that landed late without a hand-off is found by the poll.
 * The client that gave up after the 503 loses nothing either: nothing was acknowledged.
 */
import { heldBytes, type BatchRow, type Store } from '../storage/types.js';
import { FifoMap } from '../fifo-map.js';
import { CollectorError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { everyFewSeconds, type Logger } from '../logger.js';
import { diskFullMessage, isDiskFull } from '../disk.js';

type Outcome = 'stored' | 'duplicate';

/**
 * An insert that carried this many batches or more means load: the next one waits for the
 * group interval (`groupMs`). Below it (a quiet collector) an insert starts as soon as it can.
 */
export const GROUP_LOAD_BATCHES = 16;
/**
 * Processing is behind when the batches waiting for it need this long or more at its recent rate:
 * then inserts under load are spaced by CIPHERSTAT_INGEST_GROUP_BEHIND_MS. A collector that keeps
 * up holds about one tick's worth, but one busy account's ticks are big: the one-account ingest
 * bench held ~0.9 s between ticks, crossed 1 s often, and lost 0.99x -> 0.70x to the wait at a
 * 1 s threshold (session 13, quiet machine); a storefront that is really behind holds 4-10 s.
 */
export const PROCESSING_BEHIND_SECONDS = 2;
interface Pending {
  row: BatchRow;
  /** performance.now() when submitted: how long it waited for the group commits before its own. */
  at: number;
  resolve: (o: Outcome) => void;
  reject: (e: unknown) => void;
}

const key = (r: { accountId: string; batchId: string }) => `${r.accountId}/${r.batchId}`;

export class BatchWriter {
  private queue: Pending[] = [];
  /** Sealed bytes of the batches submitted and not yet answered (waiting, and the insert in flight). */
  private heldBytes = 0;
  private running = false;
  private closed = false;
  private idle: Promise<void> = Promise.resolve();
  private readonly recent = new FifoMap<string, true>(500_000);
  private readonly logFailure: ReturnType<typeof everyFewSeconds>;

  constructor(
    private readonly store: Store,
    private readonly metrics: Metrics,
    private readonly opts: {
      maxQueued: number;
      /** Sealed bytes held (waiting and in the insert in flight) at or above which a batch is refused 503 `overloaded` (default: no limit). */
      maxQueuedBytes?: number;
      maxPerInsert?: number;
      onDurable?: (rows: BatchRow[]) => void;
      /** Retry-After (s) of an `overloaded` answer: how long the backlog needs (default 1). */
      retryAfter?: () => number;
      /** Failed inserts are logged here (at most one line every few seconds, with a count of the others). */
      log?: Logger;
      /** The rate limit of those lines, shared with the request path's storage failures (reset by a successful insert). */
      logLimiter?: ReturnType<typeof everyFewSeconds>;
      /** Where the engine keeps its files (chDB), named with the free space when the disk is full. */
      diskPath?: string;
      /** Whether a batch not remembered here is looked up in storage (default true; false only where processing skips marked twins: above). */
      checkStorage?: boolean;
      /**
       * Under load (the previous insert carried GROUP_LOAD_BATCHES or more), the least time (ms)
       * between the starts of two inserts (default 0: none). Each insert costs the engine a fixed
       * few ms of CPU (a new part, and merging it later) whatever it carries.
       */
      groupMs?: number;
      /**
       * Whether processing is behind (role with processing: services.ts). While it is, under load,
       * inserts start at least `behindGroupMs` apart (when longer than `groupMs`): the 202s wait a
       * little (the batches would wait for processing anyway, or be refused `overloaded`) and each
       * insert carries more, leaving the engine's CPU to processing. A collector whose processing
       * keeps up never waits for it (ARCHITECTURE.md, group commit).
       */
      behind?: () => boolean;
      /** The least time (ms) between the starts of two inserts under load while `behind()` (default 0: none). */
      behindGroupMs?: number;
    },
  ) {
    this.logFailure = opts.logLimiter ?? everyFewSeconds();
  }

  private overloaded(message: string): CollectorError {
    return new CollectorError(503, 'overloaded', message, this.opts.retryAfter?.() ?? 1);
  }

  get queued(): number {
    return this.queue.length;
  }

  submit(row: BatchRow): Promise<Outcome> {
    if (this.closed) return Promise.reject(new CollectorError(503, 'shutting_down', 'the collector is shutting down', 1));
    if (this.queue.length >= this.opts.maxQueued) {
      return Promise.reject(this.overloaded('too many batches waiting for storage'));
    }
    if (this.heldBytes >= (this.opts.maxQueuedBytes ?? Infinity)) {
      return Promise.reject(this.overloaded('too many bytes waiting for storage'));
    }
    if (this.recent.has(key(row))) return Promise.resolve('duplicate');
    this.heldBytes += heldBytes(row);
    return new Promise<Outcome>((resolve, reject) => {
      this.queue.push({ row, at: performance.now(), resolve, reject });
      this.metrics.writerQueue.set(this.queue.length);
      if (!this.running) this.idle = this.run();
    });
  }

  /** When the previous insert started (performance.now()) and how many batches it carried. */
  private last = { at: -Infinity, batches: 0 };

  /**
   * How long the next insert should still wait for more batches (ms; 0: start now), and why:
   * `interval` (groupMs) or `behind` (behindGroupMs while processing is behind, when longer).
   */
  private groupWait(): { ms: number; reason: 'interval' | 'behind' } {
    const none = { ms: 0, reason: 'interval' as const };
    if (this.last.batches < GROUP_LOAD_BATCHES || this.closed) return none;
    const intervalMs = this.opts.groupMs ?? 0;
    const behindMs = this.opts.behindGroupMs ?? 0;
    const behind = behindMs > intervalMs && this.opts.behind?.() === true;
    const groupMs = behind ? behindMs : intervalMs;
    if (groupMs <= 0) return none;
    if (this.queue.length >= (this.opts.maxPerInsert ?? 10_000)) return none;
    return { ms: Math.max(0, groupMs - (performance.now() - this.last.at)), reason: behind ? 'behind' : 'interval' };
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length) {
        const wait = this.groupWait();
        if (wait.ms > 0) {
          const waited = performance.now();
          await new Promise((resolve) => setTimeout(resolve, wait.ms));
          this.metrics.ingestGroupWaitSeconds.inc({ reason: wait.reason }, (performance.now() - waited) / 1000);
        }
        const take = this.queue.splice(0, this.opts.maxPerInsert ?? 10_000);
        this.last = { at: performance.now(), batches: take.length };
        this.metrics.writerQueue.set(this.queue.length);
        try {
          await this.commit(take);
        } finally {
          for (const p of take) this.heldBytes -= heldBytes(p.row);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async commit(items: Pending[]): Promise<void> {
    // Duplicates inside this group, then against what was stored before.
    const first = new Map<string, Pending>();
    const dupes: Pending[] = [];
    for (const p of items) {
      const k = key(p.row);
      if (first.has(k) || this.recent.has(k)) dupes.push(p);
      else first.set(k, p);
    }
    // Where a 202's wait goes, summed over the group's batches (cipherstat_ingest_ack_seconds_total).
    const ack = this.metrics.ingestAckSeconds;
    const started = performance.now();
    let queued = 0;
    for (const p of items) queued += started - p.at;
    ack.inc({ phase: 'queued' }, queued / 1000);
    try {
      const candidates = [...first.values()];
      const existing = candidates.length && this.opts.checkStorage !== false ? await this.store.existingBatches(candidates.map((p) => p.row)) : new Set<string>();
      const checked = performance.now();
      ack.inc({ phase: 'dedup' }, ((checked - started) * items.length) / 1000);
      const fresh = candidates.filter((p) => !existing.has(key(p.row)));
      const rows = fresh.map((p) => p.row);
      if (rows.length) {
        const end = this.metrics.insertSeconds.startTimer({ table: 'batches' });
        await this.store.insertBatches(rows);
        end();
      }
      ack.inc({ phase: 'insert' }, ((performance.now() - checked) * items.length) / 1000);
      this.metrics.ingestAckBatches.inc(items.length);
      this.logFailure.reset();
      for (const p of candidates) this.recent.set(key(p.row), true);
      for (const p of fresh) p.resolve('stored');
      for (const p of candidates) if (existing.has(key(p.row))) p.resolve('duplicate');
      for (const p of dupes) p.resolve('duplicate');
      if (rows.length) this.opts.onDurable?.(rows);
    } catch (e) {
      const err = new CollectorError(503, 'storage_unavailable', 'storage is not accepting writes; retry later', 5);
      for (const p of items) p.reject(err);
      const full = isDiskFull(e) && this.opts.diskPath !== undefined;
      const message = e instanceof Error ? e.message : String(e);
      this.logFailure(message, (suppressed) =>
        this.opts.log?.error(
          { err: message, batches: items.length, ...(full ? { disk: diskFullMessage(this.opts.diskPath!) } : {}), suppressed },
          'ingest insert failed: batches refused with 503 storage_unavailable',
        ),
      );
    }
  }

  /** Whether this batch was stored recently (by this process). */
  seen(accountId: string, batchId: string): boolean {
    return this.recent.has(`${accountId}/${batchId}`);
  }

  /** Forgets which batches of an account were seen (after its data was purged). */
  forgetAccount(accountId: string): void {
    this.recent.deleteWhere((k) => k.startsWith(`${accountId}/`));
  }

  /** Stops taking batches and waits for the queue to be written. */
  async close(): Promise<void> {
    this.closed = true;
    await this.idle;
  }
}
