/**
 * Batch-level refusals of a known account (origin not allowed, rate limited, deactivated,
 * overloaded, …): nothing a storefront sends disappears without a trace.
 *
 * - counted per account and code in memory and written to storage's `rejects` table by one
 *   insert per flush (every `flushMs`, and on close): a flood of hostile requests costs a map
 *   update each, never a storage write each;
 * - counts not flushed yet are added to what `GET /v1/metrics` and `accounts show` report
 *   (`counted`: the stored counts are read while no flush runs, so a count is always either in
 *   storage or in memory when it is read, never in neither or both);
 * - logged at most once per account, code and origin per UTC hour (at most `maxLogKeys`
 *   distinct lines an hour, then one line saying that more were suppressed);
 * - the origins refused for an account are remembered (the last few, in this process) so the
 *   dashboard can say which origin to allow and how.
 */
import type { Logger } from '../logger.js';
import type { Store } from '../storage/index.js';

const HOUR = 3_600_000;
/** Accounts with counts waiting for a flush, at most (a flood naming many accounts stays bounded). */
const MAX_PENDING_ACCOUNTS = 100_000;
/** Origins remembered per account (most recent last). */
const ORIGINS_KEPT = 5;
/** An `Origin` as browsers send it: http(s), a host name, IPv4 or bracketed IPv6 address, a port; at most 200 characters. */
const SHOWN_ORIGIN = /^(?=.{1,200}$)https?:\/\/(?:[a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;

export interface RefusalsOptions {
  store: Pick<Store, 'addRejects'>;
  log: Logger;
  now: () => number;
  /** How often counts go to storage (ms). Default 5000. */
  flushMs?: number;
  /** Distinct log lines per hour before suppressing. Default 1000. */
  maxLogKeys?: number;
}

export class Refusals {
  #pending = new Map<string, Map<string, number>>();
  #origins = new Map<string, string[]>();
  #logged = new Set<string>();
  #logHour = -1;
  #suppressed = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(private readonly o: RefusalsOptions) {}

  start(): void {
    this.#timer ??= setInterval(() => void this.flush(), this.o.flushMs ?? 5000);
    this.#timer.unref();
  }

  /**
   * One refused batch of `accountId` with a stable `code`; `origin` as the request sent it.
   * Memory is bounded: at most `MAX_PENDING_ACCOUNTS` accounts wait for a flush (beyond, a new
   * account's refusal is logged but not counted until the next flush makes room).
   */
  record(accountId: string, code: string, message: string, origin?: string): void {
    let codes = this.#pending.get(accountId);
    if (!codes && this.#pending.size >= MAX_PENDING_ACCOUNTS) return this.#logOnce(accountId, code, message, origin);
    if (!codes) this.#pending.set(accountId, (codes = new Map()));
    codes.set(code, (codes.get(code) ?? 0) + 1);
    // Kept only when it is an origin (scheme, host, port): the header is the sender's to choose,
    // and the kept ones are shown in the advice's command a shop owner may paste into a shell.
    if (origin && code === 'origin_not_allowed' && SHOWN_ORIGIN.test(origin)) {
      const seen = (this.#origins.get(accountId) ?? []).filter((o) => o !== origin);
      seen.push(origin);
      this.#origins.set(accountId, seen.slice(-ORIGINS_KEPT));
    }
    this.#logOnce(accountId, code, message, origin);
  }

  /** Counts recorded but not yet in storage (during a flush: not those being written; see `counted`). */
  pending(accountId: string): Record<string, number> {
    return Object.fromEntries(this.#pending.get(accountId) ?? []);
  }

  /**
   * The account's counts: `stored` (what storage holds) read while no flush runs, plus what is
   * pending in memory. A flush moves counts out of memory before its insert returns, so a read
   * of storage beside a flush would see them in neither place (or, after the insert, in both):
   * the read waits for the flush in progress and the next flush waits for the read.
   */
  counted(accountId: string, stored: () => Promise<Record<string, number>>): Promise<Record<string, number>> {
    const read = this.#flushing.then(async () => addCounts(await stored(), this.pending(accountId)));
    this.#flushing = read.then(
      () => {},
      () => {},
    );
    return read;
  }

  /** Origins recently refused for the account (this process only), oldest first. */
  refusedOrigins(accountId: string): string[] {
    return this.#origins.get(accountId) ?? [];
  }

  /** Writes the pending counts with one insert; on failure they are kept for the next flush. */
  flush(): Promise<void> {
    return (this.#flushing = this.#flushing.then(async () => {
      if (!this.#pending.size) return;
      const batch = this.#pending;
      this.#pending = new Map();
      const at = this.o.now();
      const rows = [...batch].flatMap(([accountId, codes]) => [...codes].map(([code, count]) => ({ accountId, code, count, at })));
      try {
        await this.o.store.addRejects(rows);
      } catch (e) {
        for (const r of rows) {
          const codes = this.#pending.get(r.accountId) ?? new Map<string, number>();
          codes.set(r.code, (codes.get(r.code) ?? 0) + r.count);
          this.#pending.set(r.accountId, codes);
        }
        this.o.log.warn({ err: (e as Error).message, rows: rows.length }, 'refusal counts not written yet; retrying at the next flush');
      }
    }));
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }

  #logOnce(accountId: string, code: string, message: string, origin: string | undefined): void {
    const hour = Math.floor(this.o.now() / HOUR);
    if (hour !== this.#logHour) {
      this.#logHour = hour;
      this.#logged.clear();
      this.#suppressed = false;
    }
    const key = `${accountId}\u0000${code}\u0000${origin ?? ''}`;
    if (this.#logged.has(key)) return;
    if (this.#logged.size >= (this.o.maxLogKeys ?? 1000)) {
      if (!this.#suppressed) this.o.log.warn('more batch refusals this hour: not logged (counted per account in GET /v1/metrics)');
      this.#suppressed = true;
      return;
    }
    this.#logged.add(key);
    this.o.log.warn({ accountId, code, origin }, `batch refused: ${message} (logged once per account, code and origin per hour)`);
  }
}

/** What to do about a refusal code, in words a shop developer can act on. */
export function refusalAdvice(code: string, account: { accountId: string; allowedOrigins: string[] }, origins: string[]): string | undefined {
  const id = account.accountId;
  switch (code) {
    case 'origin_not_allowed': {
      const add = origins.length ? origins : ['https://your-shop.example'];
      const all = [...new Set([...account.allowedOrigins, ...add])].map((o) => `--origin ${o}`).join(' ');
      return `${origins.length ? `origin ${origins.join(', ')} is` : 'a page origin is'} not allowed — add it with \`cipherstat accounts update ${id} ${all}\``;
    }
    case 'rate_limited':
      return 'more batches per second than allowed — the Library retries them; raise CIPHERSTAT_RATE_LIMIT or send bigger, fewer batches';
    case 'overloaded':
    case 'storage_unavailable':
      return 'the collector asked senders to retry later — the Library retries; check the collector log and /readyz';
    case 'stale_write_key':
      return `batches are sealed to a write key the account no longer has (it was wiped) — put the new write key (\`cipherstat accounts show ${id}\`) into the snippet`;
    case 'account_deactivated':
      return `the account is deactivated — \`cipherstat accounts restore ${id}\` inside the grace period`;
    case 'account_deleted':
    case 'late_batch_dropped':
      return 'the account was deleted: remove the snippet from the shop';
    default:
      return undefined;
  }
}

/** `a + b` per code. */
function addCounts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const sum = { ...a };
  for (const [code, n] of Object.entries(b)) sum[code] = (sum[code] ?? 0) + n;
  return sum;
}
