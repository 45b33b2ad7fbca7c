/**
 * The processor's queue: one FIFO per account, served round robin. A tick takes one batch per
 * account in turn and stops taking an account's batches once they pass a per-tick budget — an
 * estimate of their processing CPU and a hard number of points — while another account has
 * batches waiting. An account alone in the queue gets ALONE_FACTOR times that budget: its ticks
 * stay large (fewer partial rollup rows and inserts per point, the cost that made a lone busy
 * account 2x slower with the plain budget), and a batch of another account that arrives a moment
 * later still waits for at most one bounded tick (~1 s of estimated CPU). A heavy account's
 * backlog is processed over several ticks interleaved with everyone else's. The estimate per account is a moving average of the CPU its
 * batches measured in earlier ticks (per point) that rises at once and falls slowly, so an
 * account whose points turn expensive (new series, new tag values) gets fewer of them per tick
 * from its next tick on; an account not measured yet is assumed expensive.
 *
 * Each account's own lag (how long its oldest queued batch has waited) is what ingest admission
 * reads: an account sending more than its share waits on its own queue and is slowed (503),
 * the others are not.
 */
import { heldBytes, type BatchRow } from '../storage/types.js';
import { FifoMap } from '../fifo-map.js';

/**
 * Estimated CPU per point for an account not measured yet (ms): a point bringing new series
 * costs ~50-100 µs (HMACs, dictionary and rollup seals), a known one ~10-20 µs. Assumed
 * expensive, so an account's first tick is small rather than long.
 */
export const DEFAULT_MS_PER_POINT = 0.1;

/**
 * How much more of a tick an account alone in the queue may take than its budget: 4 × 250 ms of
 * estimated CPU by default, about what one tick of 1000 batches was meant to hold.
 */
export const ALONE_FACTOR = 4;

/** What one account's batches may take of one tick while others wait (at least one batch, whatever they cost). */
export interface TickBudget {
  /** Estimated processing CPU (ms). */
  ms: number;
  /** Points, as the envelope headers count them. */
  points: number;
}

interface AccountQueue {
  rows: BatchRow[];
  queuedAt: number[];
  head: number;
}


export class FairQueue {
  private readonly accounts = new Map<string, AccountQueue>();
  private count = 0;
  private held = 0;
  private readonly msPerPoint = new FifoMap<string, number>(100_000);

  get size(): number {
    return this.count;
  }

  /** Bytes the waiting batches hold (sealed inner layers and visitors). */
  get bytes(): number {
    return this.held;
  }

  push(row: BatchRow, queuedAt: number): void {
    let q = this.accounts.get(row.accountId);
    if (!q) this.accounts.set(row.accountId, (q = { rows: [], queuedAt: [], head: 0 }));
    q.rows.push(row);
    q.queuedAt.push(queuedAt);
    this.count++;
    this.held += heldBytes(row);
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

  /** What a tick measured for an account: `ms` of CPU for `points` points (a rise counts at once, a fall by half). */
  recordCost(accountId: string, ms: number, points: number): void {
    if (!(points > 0) || !(ms >= 0)) return;
    const measured = ms / points;
    const prev = this.msPerPoint.get(accountId);
    this.msPerPoint.set(accountId, prev === undefined || measured >= prev ? measured : prev * 0.5 + measured * 0.5);
  }

  /**
   * Up to `maxBatches` batches, one per account per round; an account's turns stop when its next
   * batch would take its batches in this tick past `budget` (estimated CPU or points) — or past
   * ALONE_FACTOR × `budget` when no other account has batches waiting at that moment (an
   * account always gets at least one batch when it has its turn). Accounts served go to the back
   * of the line, so the next tick starts with the others.
   */
  take(maxBatches: number, budget: TickBudget): BatchRow[] {
    const out: BatchRow[] = [];
    const spent = new Map<string, { ms: number; points: number }>();
    const full = new Set<string>();
    while (out.length < maxBatches && this.accounts.size) {
      let progressed = false;
      for (const id of [...this.accounts.keys()]) {
        if (out.length >= maxBatches) break;
        if (full.has(id)) continue;
        let used = spent.get(id);
        const q = this.accounts.get(id)!;
        const row = q.rows[q.head]!;
        // Others waiting: this account has the budget; alone (it is the only queue left): ALONE_FACTOR × it.
        const f = this.accounts.size > 1 ? 1 : ALONE_FACTOR;
        if (used && (used.points + row.pointCount > f * budget.points || used.ms + this.estimate(id, row.pointCount) > f * budget.ms)) {
          full.add(id); // its next batch would pass the budget: done for this tick
          continue;
        }
        q.head++;
        this.count--;
        this.held -= heldBytes(row);
        out.push(row);
        if (!used) spent.set(id, (used = { ms: 0, points: 0 }));
        used.ms += this.estimate(id, row.pointCount);
        used.points += row.pointCount;
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
