import { Lru } from './lru.js';

/** Token buckets per key, in memory only (nothing about callers is stored). */
export class RateLimiter {
  private readonly buckets = new Lru<string, { tokens: number; at: number }>(100_000);
  constructor(
    private readonly perSecond: number,
    private readonly burst = perSecond * 2,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes `cost` tokens; returns 0 when allowed, else the seconds to wait (nothing taken). */
  take(key: string, cost = 1): number {
    const b = this.refill(key);
    if (b.tokens >= cost) {
      b.tokens -= cost;
      return 0;
    }
    return Math.max(1, Math.ceil((cost - b.tokens) / this.perSecond));
  }

  /** The seconds until one token is available (0: now), taking nothing. */
  wait(key: string): number {
    const b = this.buckets.get(key) && this.refill(key);
    return !b || b.tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - b.tokens) / this.perSecond));
  }

  private refill(key: string): { tokens: number; at: number } {
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.perSecond);
    b.at = now;
    this.buckets.set(key, b);
    return b;
  }
}
