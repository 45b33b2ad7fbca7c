import { LruMap } from '../fifo-map.js';

/**
 * Token buckets per key, in memory only (nothing about callers is stored). At most `maxKeys`
 * (100,000) keys, the least recently used forgotten first (fifo-map.ts LruMap: a bucket in use is refilled in
 * place, one Map lookup; it moved to the back of a FIFO with a delete and an insert on every
 * call, seven times per ingest request: 2 % of the main thread in a storefront profile).
 */
export class RateLimiter {
  private readonly buckets: LruMap<string, { tokens: number; at: number }>;
  constructor(
    private readonly perSecond: number,
    private readonly burst = perSecond * 2,
    private readonly now: () => number = Date.now,
    maxKeys = 100_000,
  ) {
    this.buckets = new LruMap(maxKeys);
  }

  /**
   * Takes `cost` tokens; returns 0 when allowed, else the seconds to wait (nothing taken). A
   * cost above the burst is allowed from a full bucket (and leaves it in debt).
   */
  take(key: string, cost = 1): number {
    const b = this.refill(key);
    const need = Math.min(cost, this.burst);
    if (b.tokens >= need) {
      b.tokens -= cost;
      return 0;
    }
    return Math.max(1, Math.ceil((need - b.tokens) / this.perSecond));
  }

  /** The seconds until `cost` tokens are available (0: now), taking nothing (an unknown key is full). */
  wait(key: string, cost = 1): number {
    const b = this.buckets.get(key) && this.refill(key);
    const need = Math.min(cost, this.burst);
    return !b || b.tokens >= need ? 0 : Math.max(1, Math.ceil((need - b.tokens) / this.perSecond));
  }

  /** Takes `cost` tokens whatever the balance (a cost known only afterwards): the bucket may go into debt. */
  charge(key: string, cost: number): void {
    this.refill(key).tokens -= cost;
  }

  private refill(key: string): { tokens: number; at: number } {
    const now = this.now();
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { tokens: this.burst, at: now }));
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    return b;
  }
}
