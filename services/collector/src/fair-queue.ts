/**
 * The processor's queue: one FIFO per account, served round robin. A tick takes one batch per
 * account in turn and stops taking an account's batches once their estimated processing cost
 * passes a budget, so one account's backlog never fills the ticks every other account waits
 * behind. The estimate per account is a moving average of the CPU its batches measured in
 * earlier ticks (per point), so an account whose points are expensive (new series, new tag
 * values) gets fewer of them per tick.
 *
 * Each account's own lag (how long its oldest queued batch has waited) is what ingest admission
 * reads: an account sending more than its share waits on its own queue and is slowed (503),
 * the others are not.
 */
import type { BatchRow } from './storage/types.js';
import { Lru } from './lru.js';

/** Estimated CPU per point for an account not measured yet (ms; ~20 µs on 2 cores). */
const DEFAULT_MS_PER_POINT = 0.02;

interface AccountQueue {
  rows: BatchRow[];
  queuedAt: number[];
  head: number;
}

export class FairQueue {
  private readonly accounts = new Map<string, AccountQueue>();
  private count = 0;
  private readonly msPerPoint = new Lru<string, number>(100_000);

  get size(): number {
    return this.count;
  }

  push(row: BatchRow, queuedAt: number): void {
    let q = this.accounts.get(row.accountId);
    if (!q) this.accounts.set(row.accountId, (q = { rows: [], queuedAt: [], head: 0 }));
    q.rows.push(row);
    q.queuedAt.push(queuedAt);
    this.count++;
  }

  /** When the oldest queued batch was queued (Infinity: nothing queued). O(accounts). */
  oldest(): number {
    let t = Infinity;
    for (const q of this.accounts.values()) t = Math.min(t, q.queuedAt[q.head]!);
    return t;
  }

  /** When this account's oldest queued batch was queued (undefined: none queued). */
  oldestOf(accountId: string): number | undefined {
    const q = this.accounts.get(accountId);
    return q ? q.queuedAt[q.head] : undefined;
  }

  /** Batches of this account waiting. */
  countOf(accountId: string): number {
    const q = this.accounts.get(accountId);
    return q ? q.rows.length - q.head : 0;
  }

  /** Estimated processing CPU of `points` points of this account (ms). */
  estimate(accountId: string, points: number): number {
    return points * (this.msPerPoint.get(accountId) ?? DEFAULT_MS_PER_POINT);
  }

  /** What a tick measured for an account: `ms` of CPU for `points` points. */
  recordCost(accountId: string, ms: number, points: number): void {
    if (!(points > 0) || !(ms >= 0)) return;
    const prev = this.msPerPoint.get(accountId) ?? DEFAULT_MS_PER_POINT;
    this.msPerPoint.set(accountId, prev * 0.5 + (ms / points) * 0.5);
  }

  /**
   * Up to `maxBatches` batches, one per account per round, never more than `budgetMs` of
   * estimated CPU per account while other accounts have batches queued, `aloneMs` when it is
   * the only one (an account always gets at least one batch when it has its turn). Accounts
   * served go to the back of the line, so the next tick starts with the others.
   */
  take(maxBatches: number, budgetMs: number, aloneMs: number): BatchRow[] {
    const out: BatchRow[] = [];
    const spent = new Map<string, number>();
    while (out.length < maxBatches && this.accounts.size) {
      let progressed = false;
      for (const id of [...this.accounts.keys()]) {
        if (out.length >= maxBatches) break;
        const used = spent.get(id) ?? 0;
        if (used >= (this.accounts.size > 1 ? budgetMs : aloneMs)) continue;
        const q = this.accounts.get(id)!;
        const row = q.rows[q.head]!;
        q.head++;
        this.count--;
        out.push(row);
        spent.set(id, used + this.estimate(id, row.pointCount));
        progressed = true;
        this.accounts.delete(id);
        if (q.head < q.rows.length) {
          if (q.head >= 1024 && q.head * 2 >= q.rows.length) {
            q.rows = q.rows.slice(q.head);
            q.queuedAt = q.queuedAt.slice(q.head);
            q.head = 0;
          }
          this.accounts.set(id, q); // to the back of the line
        }
      }
      if (!progressed) break;
    }
    return out;
  }
}
