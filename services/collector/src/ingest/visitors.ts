/**
 * Unique visitors without cookies or device storage (README "Unique visitors"). For a batch a
 * browser posted, ingest derives a daily keyed hash of the client address and user agent per
 * account — HMAC-SHA-256 under a random secret that lives in this process's memory only, for one
 * UTC day, and is zeroed when the day ends — and seals its first 8 bytes to the account's public
 * key (HPKE, the inner layer's suite), bound to the account and batch. The collector stores only
 * that sealed field; the process role opens it with the account key and adds it to the
 * distinct-count sketch of every rollup the batch's points land in (rollup/distinct.ts).
 *
 * Nothing here is persisted or logged: not the address, the user agent, the hash or the secret.
 * Once a day's secret is gone nobody (this process included) can compute that day's hashes
 * again, so visitors of different days cannot be linked.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { sealVisitor, VISITOR_HASH_BYTES } from '../at-rest/visitor.js';

const DAY = 86_400_000;

export interface VisitorRequest {
  /** The client address as admission resolved it (behind trusted proxies: the forwarded one). */
  address: string | undefined;
  userAgent: string | undefined;
  /** A browser's request: it carries an Origin header (browsers send one with every POST; Node's fetch does not). */
  origin: string | undefined;
}

export class Visitors {
  private day = -1;
  private secret: Buffer | null = null;

  constructor(private readonly now: () => number) {}

  /** The current UTC day's secret; a new day zeroes the old one first. */
  private current(): Buffer {
    const day = Math.floor(this.now() / DAY);
    if (day !== this.day || !this.secret) {
      this.secret?.fill(0);
      this.secret = randomBytes(32);
      this.day = day;
    }
    return this.secret;
  }

  /**
   * The visitor's hash for this account today, or undefined for a request that is not a
   * browser's (no Origin) or lacks an address or user agent: such batches carry no visitor.
   */
  hash(accountId: string, r: VisitorRequest): Uint8Array | undefined {
    if (!r.origin || !r.address || !r.userAgent) return undefined;
    const mac = createHmac('sha256', this.current()).update(`${accountId}\u0000${r.address}\u0000${r.userAgent}`).digest();
    const out = new Uint8Array(mac.subarray(0, VISITOR_HASH_BYTES));
    mac.fill(0);
    return out;
  }

  /** The visitor hash sealed to the account's public key, or undefined (see `hash`). */
  seal(accountId: string, batchId: string, accountPublicKey: Uint8Array, r: VisitorRequest): Uint8Array | undefined {
    const h = this.hash(accountId, r);
    if (!h) return undefined;
    try {
      return sealVisitor(accountPublicKey, accountId, batchId, h);
    } finally {
      h.fill(0);
    }
  }

  /** Zeroes the day's secret now (on close); the next request draws a new one. */
  destroy(): void {
    this.secret?.fill(0);
    this.secret = null;
    this.day = -1;
  }
}
