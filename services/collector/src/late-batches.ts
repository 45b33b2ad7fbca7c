/**
 * Counts of batches refused because their account was shredded, kept in memory and written
 * to storage in one insert per interval (and on shutdown), so a flood of late batches costs
 * no storage write per request. A crash loses at most one interval of these counts.
 */
import type { Logger } from './logger.js';
import type { RejectRow, Store } from './storage/types.js';

export class LateBatches {
  private pending = new Map<string, number>();
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly o: { store: Pick<Store, 'addRejects'>; log: Logger; now: () => number; intervalMs?: number },
  ) {}

  /** Counts one late batch for `accountId` (memory only; at most 100,000 accounts pending). */
  add(accountId: string, count = 1): void {
    if (!this.pending.has(accountId) && this.pending.size >= 100_000) return;
    this.pending.set(accountId, (this.pending.get(accountId) ?? 0) + count);
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.o.intervalMs ?? 10_000);
    this.timer.unref();
  }

  /** Writes what is pending in one insert; on failure the counts wait for the next flush. */
  async flush(): Promise<void> {
    if (!this.pending.size) return;
    const batch = this.pending;
    this.pending = new Map();
    const at = this.o.now();
    const rows: RejectRow[] = [...batch].map(([accountId, count]) => ({ accountId, code: 'late_batch_dropped', count, at }));
    try {
      await this.o.store.addRejects(rows);
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message, accounts: rows.length }, 'late batch counts not written; retrying at the next flush');
      for (const [id, n] of batch) this.add(id, n);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }
}
