/**
 * In-memory state of the query role, per account: recent results (LRU with a short TTL),
 * decrypted dictionary entries, and pseudonym calculators. All of it is plaintext or derived
 * from keys, so it lives only in this process and is dropped with `dropAccount`.
 *
 * Invalidation is by generation: `invalidate(accountIds)` (the processor calls it after each
 * tick) moves the accounts to a new generation, and results computed under an older one are
 * never served again. A query captures the generation before it reads storage, so a result
 * racing with new data is stored under the old generation and is dead on arrival.
 */
import { Pseudonyms } from '../at-rest/pseudonyms.js';
import type { DictEntry } from '../at-rest/records.js';
import { FifoMap } from '../fifo-map.js';

export interface QueryCacheOptions {
  /** Most cached results over all accounts (default 1000). */
  maxEntries?: number;
  /** How long a result is served (default 30 s). Split deployments, where the processor runs
   *  elsewhere and cannot invalidate, should keep this at or below the freshness target. */
  ttlMs?: number;
  /** Most decrypted dictionary entries kept per account (default 100,000). */
  maxDictionaryEntries?: number;
  now?: () => number;
}

interface Entry {
  accountId: string;
  gen: number;
  at: number;
  value: unknown;
}

const MAX_TRACKED_ACCOUNTS = 100_000;

export class QueryCache {
  readonly ttlMs: number;
  private readonly maxEntries: number;
  private readonly maxDict: number;
  private readonly now: () => number;
  private readonly results = new Map<string, Entry>();
  private readonly gens = new Map<string, number>();
  private counter = 0;
  /** Generation of every account not in `gens` (raised when `gens` is cleared). */
  private floor = 0;
  private readonly dicts = new FifoMap<string, Map<string, DictEntry>>(1000);
  private readonly pseudonymsByAccount = new FifoMap<string, Map<number, { macKey: Uint8Array; p: Pseudonyms }>>(1000);
  /** The HMAC results of every account's Pseudonyms, in one bounded cache (prefix: account and a per-instance number). */
  private readonly pseudonymCache = new FifoMap<string, string>(200_000);
  private pseudonymSeq = 0;
  hits = 0;
  misses = 0;

  constructor(opts: QueryCacheOptions = {}) {
    this.maxEntries = opts.maxEntries ?? 1000;
    this.ttlMs = opts.ttlMs ?? 30_000;
    this.maxDict = opts.maxDictionaryEntries ?? 100_000;
    this.now = opts.now ?? Date.now;
  }

  /** The account's current generation; pass it to `set`. */
  generation(accountId: string): number {
    return this.gens.get(accountId) ?? this.floor;
  }

  get<T>(accountId: string, key: string): T | undefined {
    const k = `${accountId}\u0000${key}`;
    const e = this.results.get(k);
    if (!e || e.gen !== this.generation(accountId) || this.now() - e.at >= this.ttlMs) {
      if (e) this.results.delete(k);
      this.misses++;
      return undefined;
    }
    this.results.delete(k); // most recently used last
    this.results.set(k, e);
    this.hits++;
    return e.value as T;
  }

  set(accountId: string, key: string, value: unknown, gen: number): void {
    if (this.ttlMs <= 0 || this.maxEntries <= 0 || gen !== this.generation(accountId)) return;
    const k = `${accountId}\u0000${key}`;
    this.results.delete(k);
    this.results.set(k, { accountId, gen, at: this.now(), value });
    while (this.results.size > this.maxEntries) this.results.delete(this.results.keys().next().value as string);
  }

  /** New data was processed for these accounts: their cached results are stale. */
  invalidate(accountIds: Iterable<string>): void {
    for (const id of accountIds) {
      if (this.gens.size >= MAX_TRACKED_ACCOUNTS && !this.gens.has(id)) {
        // Forget every account's generation at once; all of them move past every old result.
        this.gens.clear();
        this.floor = ++this.counter;
      }
      this.gens.set(id, ++this.counter);
    }
  }

  /** The account is deactivated or shredded: forget everything held for it. */
  dropAccount(accountId: string): void {
    this.invalidate([accountId]);
    for (const [k, e] of this.results) if (e.accountId === accountId) this.results.delete(k);
    this.dicts.delete(accountId);
    this.pseudonymsByAccount.delete(accountId);
    this.pseudonymCache.deleteWhere((k) => k.startsWith(`${accountId}\u0000`));
  }

  /** Drops everything (tests, key rotation). */
  clear(): void {
    this.results.clear();
    this.gens.clear();
    this.floor = ++this.counter;
    this.dicts.clear();
    this.pseudonymsByAccount.clear();
    this.pseudonymCache.clear();
  }

  /** Decrypted dictionary entries of an account, by `${kind}:${pseudonym}`. Entries never change. */
  dictionary(accountId: string): Map<string, DictEntry> {
    let d = this.dicts.get(accountId);
    if (!d || d.size > this.maxDict) this.dicts.set(accountId, (d = new Map()));
    return d;
  }

  /** The pseudonym calculator of one key version of an account (HMACs are cached inside). */
  pseudonyms(accountId: string, version: number, macKey: Uint8Array): Pseudonyms {
    let versions = this.pseudonymsByAccount.get(accountId);
    if (!versions) this.pseudonymsByAccount.set(accountId, (versions = new Map()));
    const hit = versions.get(version);
    if (hit && sameBytes(hit.macKey, macKey)) return hit.p;
    const p = new Pseudonyms(macKey, { cache: this.pseudonymCache, prefix: `${accountId}\u0000${++this.pseudonymSeq}\u0000` });
    versions.set(version, { macKey, p });
    return p;
  }

  get size(): number {
    return this.results.size;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}
