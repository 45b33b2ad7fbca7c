/**
 * Fairness between tenants at ingest: what one account sends must not slow anyone else.
 *
 * - Budgets per account on what costs processing: envelope bytes and points per second
 *   (token buckets; 429 `bytes_rate_limited` / `points_rate_limited` with Retry-After).
 * - Processing backpressure per account: the processor queues batches per account and serves
 *   them round robin (fair-queue.ts), so only an account that sends more than processing gives
 *   it builds a backlog; while its own oldest waiting batch is older than
 *   `maxProcessLagMs`, its batches get 503 `overloaded` with Retry-After, and nobody else's.
 * - A global ceiling for true overload: more than `maxProcessBacklog` batches, or batches
 *   holding more than `maxProcessBacklogBytes`, waiting in all → 503 `overloaded` for everyone
 *   (checked before the envelope is opened). The bytes bound memory whatever the batches' size:
 *   50,000 batches of 64 KiB would hold 3.2 GB, of a storefront's ~1 KB 50 MB.
 * - Cardinality feedback: an account whose points processing rejected over a cardinality
 *   limit (tick.ts) gets 1 % of its points budget for a minute (429 `cardinality_limited`).
 *
 * Every refusal of a known account is counted per account by code (refusals.ts, in
 * `GET /v1/metrics` → rejects).
 */
import type { Config } from '../config.js';
import { CollectorError } from '../errors.js';
import { FifoMap } from '../fifo-map.js';
import { RateLimiter } from './rate-limit.js';

/** How long an account stays slowed after processing rejected its points for cardinality. */
export const CARDINALITY_PENALTY_MS = 60_000;
/** Its points budget meanwhile, as a fraction of the normal one. */
export const CARDINALITY_PENALTY_SHARE = 0.01;

/** What admission reads of the processor (absent on nodes that do not process). */
export interface ProcessingBacklog {
  readonly backlog: number;
  /** Bytes the waiting batches hold. */
  readonly backlogBytes: number;
  accountLagMs(accountId: string): number;
  /** About how long what waits now needs (s), at the recent processing rate. */
  drainSeconds(): number;
}

/**
 * Retry-After (whole seconds, 1..60) for a refusal expected to last about `seconds`: drawn
 * from [s, s + s/2] (s = that rounded up), so senders refused in the same moment come back
 * spread over the following seconds rather than as one wave (the Library adds its own jitter
 * on top). A refusal expected to end within a second says 1.
 */
export function retryAfterSeconds(seconds: number, random: () => number = Math.random): number {
  const s = Math.min(60, Math.max(1, Math.ceil(Number.isFinite(seconds) ? seconds : 60)));
  return Math.min(60, s + Math.floor(random() * (Math.floor(s / 2) + 1)));
}

export type FairnessConfig = Pick<Config, 'maxProcessLagMs' | 'maxProcessBacklog' | 'maxProcessBacklogBytes' | 'accountBytesPerSecond' | 'accountPointsPerSecond'>;

export class Fairness {
  private readonly bytes: RateLimiter;
  private readonly points: RateLimiter;
  private readonly penalized: RateLimiter;
  private readonly penaltyUntil = new FifoMap<string, number>(100_000);

  constructor(
    private readonly o: {
      config: FairnessConfig;
      processing?: ProcessingBacklog;
      now?: () => number;
    },
  ) {
    const now = o.now ?? Date.now;
    this.bytes = new RateLimiter(o.config.accountBytesPerSecond, o.config.accountBytesPerSecond * 2, now);
    this.points = new RateLimiter(o.config.accountPointsPerSecond, o.config.accountPointsPerSecond * 2, now);
    const slow = o.config.accountPointsPerSecond * CARDINALITY_PENALTY_SHARE;
    this.penalized = new RateLimiter(slow, slow * 2, now);
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** The global ceiling, before any work on the envelope: 503 for everyone when processing is truly overloaded. */
  checkGlobal(): void {
    const p = this.o.processing;
    if (p && (p.backlog >= this.o.config.maxProcessBacklog || p.backlogBytes >= this.o.config.maxProcessBacklogBytes)) {
      // Come back when about half the backlog is processed.
      throw new CollectorError(503, 'overloaded', 'processing is behind; retry later', retryAfterSeconds(p.drainSeconds() / 2));
    }
  }

  /**
   * Admits one batch of a known account, or throws the refusal (counted for the account):
   * its own processing lag first, then its cardinality penalty, bytes and points budgets.
   */
  admit(accountId: string, cost: { bytes: number; points: number }): void {
    this.checkLag(accountId);
    const until = this.penaltyUntil.get(accountId);
    if (until !== undefined && until > this.now()) {
      const wait = this.penalized.wait(accountId, cost.points);
      if (wait) this.refuse(accountId, new CollectorError(429, 'cardinality_limited', 'this account sends too many new series or tag values; slowed for a minute', wait));
    }
    const waitBytes = this.bytes.wait(accountId, cost.bytes);
    if (waitBytes) this.refuse(accountId, new CollectorError(429, 'bytes_rate_limited', 'too many bytes per second for this account', waitBytes));
    const waitPoints = this.points.wait(accountId, cost.points);
    if (waitPoints) this.refuse(accountId, new CollectorError(429, 'points_rate_limited', 'too many points per second for this account', waitPoints));
    this.bytes.take(accountId, cost.bytes);
    this.points.take(accountId, cost.points);
    if (until !== undefined && until > this.now()) this.penalized.take(accountId, cost.points);
  }

  /** The account's own processing lag: 503 `overloaded` (counted for it) while its oldest waiting batch is older than `maxProcessLagMs`. */
  checkLag(accountId: string): void {
    const p = this.o.processing;
    const maxLag = this.o.config.maxProcessLagMs;
    if (p && maxLag > 0) {
      const lag = p.accountLagMs(accountId);
      if (lag > maxLag) {
        // Its oldest batch waited `lag`: about as long again until its backlog is processed.
        this.refuse(accountId, new CollectorError(503, 'overloaded', "this account's batches are behind in processing; retry later", retryAfterSeconds(lag / 1000)));
      }
    }
  }

  /** Processing rejected points of these accounts over a cardinality limit: slow their ingest for a while. */
  penalize(accountIds: string[]): void {
    const until = this.now() + CARDINALITY_PENALTY_MS;
    for (const id of accountIds) this.penaltyUntil.set(id, until);
  }

  /** Refusals of a known account are counted per account where ingest maps errors (refusals.ts). */
  private refuse(_accountId: string, e: CollectorError): never {
    throw e;
  }
}
