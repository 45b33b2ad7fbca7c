/**
 * What a query needs of an account: its key versions (data key to open rows, pseudonyms to
 * find them), and decrypted dictionary labels. Keys stay in this process:
 * ClickHouse only ever receives pseudonyms, times and the account id.
 */
import { CollectorError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Pseudonyms } from '../at-rest/pseudonyms.js';
import { openDict, type DictEntry } from '../at-rest/records.js';
import type { AccountKeys } from '../keyring/index.js';
import type { DictKind, Store } from '../storage/types.js';
import { QueryCache } from './cache.js';
import type { Mergers } from './mergers.js';

export interface QueryDeps {
  store: Store;
  keyring: { accountKeys(accountId: string): AccountKeys[] | undefined | Promise<AccountKeys[] | undefined> };
  log?: Logger;
  cache?: QueryCache;
  /** Told how many stored rows failed to open in a query (a Prometheus counter). */
  onFailedRows?: (n: number) => void;
  /** Told how many stored rows were found tampered with and left out (copies, replays, forged lists: a Prometheus counter). */
  onTamperedRows?: (n: number) => void;
  /** Told when a query starts (+1) and ends (−1) opening and merging its rows (a Prometheus gauge). */
  onMerge?: (delta: 1 | -1) => void;
  /** Where rows are opened and merged (default: inline, on the calling thread). */
  mergers?: Mergers;
  /** Rows one storage statement of a query holds at most (default engine.ts STATEMENT_ROWS; tests set fewer). */
  statementRows?: number;
  /** How long a read of the derivation watermark serves later queries too (ms of performance.now(); default 0: only those arriving while it is read; the routes: engine.ts WATERMARK_TTL_MS). */
  watermarkTtlMs?: number;
}

export interface VersionKeys {
  version: number;
  dataKey: Uint8Array;
  pseudonyms: Pseudonyms;
}

export interface AccountContext {
  accountId: string;
  /** Oldest first. */
  versions: VersionKeys[];
  byVersion: Map<number, VersionKeys>;
  cache: QueryCache;
}

const fallbackCaches = new WeakMap<object, QueryCache>();

/** The cache of `deps`, or one kept per store when the caller passes none. */
export function cacheOf(deps: QueryDeps): QueryCache {
  if (deps.cache) return deps.cache;
  let c = fallbackCaches.get(deps.store);
  if (!c) fallbackCaches.set(deps.store, (c = new QueryCache({ ttlMs: 0 })));
  return c;
}

/** The account's keys; 410 account_deleted when the keyring has none (tombstoned); the routes' keyring answers 503 account_key_unavailable for an entry it cannot read. */
export async function accountContext(deps: QueryDeps, accountId: string): Promise<AccountContext> {
  const keys = await deps.keyring.accountKeys(accountId);
  if (!keys?.length) throw new CollectorError(410, 'account_deleted', 'this account was deleted');
  const cache = cacheOf(deps);
  const versions = keys.map((k) => ({ version: k.version, dataKey: k.dataKey, pseudonyms: cache.pseudonyms(accountId, k.version, k.macKey) }));
  return { accountId, versions, byVersion: new Map(versions.map((v) => [v.version, v])), cache };
}

/**
 * Decrypted dictionary entries for these pseudonyms of one kind (from the cache, else one
 * storage read for the missing ones). Entries that fail to open are left out and counted.
 */
export async function lookupDictionary(
  deps: QueryDeps,
  ctx: AccountContext,
  kind: DictKind,
  pseudonyms: Iterable<string>,
): Promise<{ entries: Map<string, DictEntry>; failed: number }> {
  const dict = ctx.cache.dictionary(ctx.accountId);
  const entries = new Map<string, DictEntry>();
  const missing: string[] = [];
  for (const p of pseudonyms) {
    const hit = dict.get(`${kind}:${p}`);
    if (hit) entries.set(p, hit);
    else if (p !== '0') missing.push(p);
  }
  let failed = 0;
  if (missing.length > 0) {
    const rows = await deps.store.dictionaryEntries(ctx.accountId, kind, missing);
    failed += openDictRows(ctx, kind, rows.map((r) => ({ v: r.keyVersion, p: r.pseudonym, sealed: r.ciphertext })), entries);
  }
  return { entries, failed };
}

/** Every dictionary entry of one kind (the metric list); decrypts only what the cache lacks. */
export async function allDictionary(deps: QueryDeps, ctx: AccountContext, kind: DictKind): Promise<{ entries: Map<string, DictEntry>; failed: number }> {
  const rows = await deps.store.dictionary(ctx.accountId, kind);
  const dict = ctx.cache.dictionary(ctx.accountId);
  const entries = new Map<string, DictEntry>();
  const todo: { v: number; p: string; sealed: Uint8Array }[] = [];
  for (const r of rows) {
    const hit = dict.get(`${kind}:${r.pseudonym}`);
    if (hit) entries.set(r.pseudonym, hit);
    else todo.push({ v: r.keyVersion, p: r.pseudonym, sealed: r.ciphertext });
  }
  return { entries, failed: openDictRows(ctx, kind, todo, entries) };
}

function openDictRows(
  ctx: AccountContext,
  kind: DictKind,
  rows: { v: number; p: string; sealed: Uint8Array }[],
  into: Map<string, DictEntry>,
): number {
  const dict = ctx.cache.dictionary(ctx.accountId);
  let failed = 0;
  for (const r of rows) {
    const keys = ctx.byVersion.get(r.v);
    const entry = keys ? openDict(keys.dataKey, ctx.accountId, kind, r.p, r.sealed) : null;
    if (!entry || typeof entry.text !== 'string') {
      failed++;
      continue;
    }
    dict.set(`${kind}:${r.p}`, entry);
    into.set(r.p, entry);
  }
  return failed;
}
