/**
 * Accounts: metadata and state in storage (every role on every node sees the same state),
 * key material in the keyring. A cached account's state is served for at most `ttlMs` after
 * it was last known current: read from storage, or confirmed by the background refresh (one
 * query every `refreshMs` for every account row storage wrote since the last one, which
 * updates the cached entries it names). So a deactivation or shred made by another process is
 * honoured within `ttlMs` everywhere, and while the refresh keeps up a request reads storage
 * only for an account this process has not cached; while it fails, entries expire after
 * `ttlMs` and are read again on the request path.
 */
import { randomBytes, toBase64, toHex } from '@cipherstat/protocol';
import type { AccountRow, AccountSeen, AccountStore } from '../storage/types.js';
import type { AccountKeys, Keyring } from '../keyring/index.js';
import { hashToken, isKeyringError, newToken } from '../keyring/index.js';
import { CollectorError, isCollectorError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { FifoMap } from '../fifo-map.js';

/** Retry-After (s) of `503 account_key_unavailable`: an operator has to restore a file. */
export const KEY_UNAVAILABLE_RETRY_AFTER_S = 60;
const HOUR = 3_600_000;

/** An account whose key entry cannot be read: what the operator is told and shown. */
export interface KeyProblem {
  /** The key file (absolute path) and why it cannot be read. */
  file: string;
  reason: string;
  since: string;
  /** Batches refused at ingest (503) since then, in this process. */
  refusedBatches: number;
}

export interface CreateAccountInput {
  name?: string;
  allowedOrigins?: string[];
  retentionDays?: number;
  confidential?: boolean;
}

export interface CreatedAccount {
  accountId: string;
  writeKey: string;
  readToken: string;
  collectorKey: { keyId: string; publicKey: string };
}

/** What admins see of an account: never the token hash, never a key. */
export interface AccountView {
  accountId: string;
  name: string;
  /** `key_unavailable`: the row is active or deactivated, but its key entry cannot be read (see keyProblem). */
  state: AccountRow['state'] | 'key_unavailable';
  createdAt: string;
  deactivatedAt: string | null;
  shredAfter: string | null;
  shreddedAt: string | null;
  allowedOrigins: string[];
  retentionDays: number;
  confidential: boolean;
  writeKey: string | null;
  keyProblem: KeyProblem | null;
}

/** How long a read token no account has is remembered as unknown. */
const UNKNOWN_TOKEN_TTL_MS = 10 * 60_000;

interface Miss {
  accountId: string;
  gen: string;
  resolve: (row: AccountRow | undefined) => void;
  reject: (e: unknown) => void;
}
/** Accounts whose state is cached at most (first in, first out beyond). */
const ACCOUNT_CACHE_SIZE = 50_000;
/** Most accounts per bulk state read. */
const READ_BATCH = 1000;
/**
 * How far back (ms, storage's clock) each refresh looks before the previous one's storage time:
 * covers a row stamped (changed_at) just before a poll but visible only after it (an insert in
 * flight) and clock differences between a cluster's replicas.
 */
export const REFRESH_OVERLAP_MS = 10_000;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
/** `acct_` and 24 hex characters (96 random bits). */
export const newAccountId = (): string => `acct_${toHex(randomBytes(12))}`;

export class Accounts {
  private readonly cache = new FifoMap<string, { row: AccountRow | undefined; at: number }>(ACCOUNT_CACHE_SIZE);
  private readonly byToken = new FifoMap<string, { accountId: string | undefined; at: number }>(10_000);
  /** Single flight: one storage read per account at a time, shared by every caller that missed. */
  private readonly loading = new Map<string, Promise<AccountRow | undefined>>();
  /** Misses waiting for the next bulk read, and whether one is running. */
  private misses: Miss[] = [];
  private reading = false;
  /**
   * Cache lookups of get() (cipherstat_cache_lookups_total{cache="account_state"}); background
   * refreshes that succeeded and failed, and the cached entries they replaced.
   */
  readonly stats = { hit: 0, miss: 0, refreshes: 0, refreshFailures: 0, refreshed: 0, warmed: 0 };
  /**
   * The background refresh: the storage time (ms) the next poll reads from; when the last good
   * poll started (this.now()); from when on (this.now()) the polls have seen every change, so
   * only entries read since then count as current as of the last good poll.
   */
  private refresh: { since: number | undefined; validAt: number; from: number; timer?: NodeJS.Timeout; running?: Promise<void>; stopped: boolean; loggedAt: number } = {
    since: undefined,
    validAt: -Infinity,
    from: Infinity,
    stopped: true,
    loggedAt: -Infinity,
  };
  /** Bumped by every write to an account's cache entry: a read started before it never overwrites it. */
  private readonly generation = new Map<string, number>();
  private generationSeq = 0;
  private generationEpoch = 0;
  private gen(accountId: string): string {
    return `${this.generationEpoch}:${this.generation.get(accountId) ?? 0}`;
  }

  /** Accounts whose key entry could not be read when last looked at. */
  private readonly keyProblems = new Map<string, { file: string; reason: string; since: number; loggedAt: number; refused: number }>();

  constructor(
    private readonly store: AccountStore,
    private readonly keyring: Keyring,
    private readonly opts: {
      defaultRetentionDays: number;
      /** How long a cached state is served after it was last known current (ms, default 1000). */
      ttlMs?: number;
      /** Background refresh interval once start() is called (ms, default ttlMs / 2). */
      refreshMs?: number;
      /** Where the background refresh (and the warm-up) reads (default: the store above; the collector gives it an ordinary, not urgent, lane). */
      refreshStore?: Pick<AccountStore, 'accountChanges' | 'someAccounts'>;
      /**
       * Accounts read into the cache by the refresh's first poll (one query, most recently
       * changed first; default 0: none), so a restarted process does not read each account
       * on its first request. At most the cache's size.
       */
      warmAccounts?: number;
      now?: () => number;
      log?: Logger;
      metrics?: Metrics;
    },
  ) {}

  private get ttl(): number {
    return this.opts.ttlMs ?? 1000;
  }

  /**
   * Starts the background refresh: every `refreshMs`, one query for the account rows storage
   * wrote since the previous one (storage's clock, REFRESH_OVERLAP_MS of overlap); each cached
   * entry they name is replaced by the newest version, and every cached entry counts as current
   * as of the poll's start. A failing poll changes nothing: entries then expire after `ttlMs`.
   */
  start(): void {
    if (!this.refresh.stopped) return;
    this.refresh.stopped = false;
    this.schedule(0);
  }

  /** Stops the background refresh (waits for a poll in flight). */
  async stop(): Promise<void> {
    this.refresh.stopped = true;
    clearTimeout(this.refresh.timer);
    await this.refresh.running;
  }

  private schedule(delayMs: number): void {
    if (this.refresh.stopped) return;
    this.refresh.timer = setTimeout(() => {
      const started = performance.now();
      this.refresh.running = this.poll().finally(() => {
        this.refresh.running = undefined;
        this.schedule(Math.max(0, (this.opts.refreshMs ?? this.ttl / 2) - (performance.now() - started)));
      });
    }, delayMs);
    this.refresh.timer.unref?.();
  }

  /** One background refresh (see start()). */
  private async poll(): Promise<void> {
    // When the read starts in the engine, which sees every change committed before then: under
    // load the read waits behind other calls (embedded chDB runs one at a time; the poll's lane
    // is the ordinary one), and counting from the call would leave cached entries ~that wait
    // less of their TTL, so they expired between polls and were read again on the request path.
    let startedAt = this.now();
    const first = this.refresh.since === undefined;
    let changes: Awaited<ReturnType<AccountStore['accountChanges']>>;
    try {
      changes = await (this.opts.refreshStore ?? this.store).accountChanges(this.refresh.since, (waiting) => void (waiting || (startedAt = this.now())));
    } catch (e) {
      this.stats.refreshFailures++;
      if (startedAt - this.refresh.loggedAt >= 60_000) {
        this.refresh.loggedAt = startedAt;
        this.opts.log?.warn({ err: (e as Error).message }, 'account state refresh failed: cached account state expires after its TTL and is read on the request path until a refresh succeeds');
      }
      return;
    }
    if (changes.now !== undefined) this.refresh.since = Math.max(this.refresh.since ?? -Infinity, changes.now - REFRESH_OVERLAP_MS);
    // The first poll only reads storage's clock: it says nothing of changes before it. Every
    // change from its end on is stamped after that clock, so every later poll sees it.
    if (first) {
      this.refresh.from = this.now();
      await this.warm();
      return;
    }
    const newest = new Map<string, AccountRow>();
    for (const { row } of changes.rows) {
      const seen = newest.get(row.accountId);
      if (!seen || row.version > seen.version) newest.set(row.accountId, row);
    }
    for (const [accountId, row] of newest) {
      const entry = this.cache.get(accountId);
      // Not cached here (never read, or forgotten) and no read in flight: nothing to update. A
      // read in flight may have started before this change: the row goes in now, and the read
      // caches what it got only if it is not older (readMisses).
      if (entry ? (entry.row?.version ?? 0) >= row.version : !this.loading.has(accountId)) continue;
      this.cache.set(accountId, { row, at: entry?.at ?? startedAt });
      this.stats.refreshed++;
    }
    this.stats.refreshes++;
    this.refresh.validAt = Math.max(this.refresh.validAt, startedAt);
  }

  /**
   * The warm-up (first poll only, after storage's clock was read): up to `warmAccounts` current
   * rows read in one query and cached as read now — after the refresh's `from`, so the polls
   * keep them current like any entry read on the request path. An entry written here since the
   * read began (update, fresh, forget) or a newer version already cached wins. A failing read
   * caches nothing: requests read their accounts as before.
   */
  private async warm(): Promise<void> {
    const limit = Math.min(this.opts.warmAccounts ?? 0, ACCOUNT_CACHE_SIZE);
    if (!(limit > 0)) return;
    const at = this.now();
    const seq = this.generationSeq;
    const epoch = this.generationEpoch;
    let rows: AccountRow[];
    try {
      rows = await (this.opts.refreshStore ?? this.store).someAccounts(limit);
    } catch (e) {
      this.opts.log?.warn({ err: (e as Error).message }, 'account cache warm-up failed: accounts are read on their first request');
      return;
    }
    if (this.generationEpoch !== epoch) return;
    for (const row of rows) {
      if ((this.generation.get(row.accountId) ?? 0) > seq) continue;
      const cached = this.cache.get(row.accountId);
      if (cached && (cached.row?.version ?? 0) >= row.version) continue;
      this.cache.set(row.accountId, { row, at });
      this.stats.warmed++;
    }
  }

  /** When a cached entry read at `at` was last known current: its read, or the last good refresh since. */
  private asOf(at: number): number {
    return at >= this.refresh.from ? Math.max(at, this.refresh.validAt) : at;
  }

  /**
   * The account's key versions; undefined only when it is deleted (tombstoned). An entry that
   * cannot be read is `503 account_key_unavailable`: its batches wait, nothing is dropped.
   * Logged once per account and hour with the file and the reason; the number of such
   * accounts is the gauge cipherstat_accounts_key_unavailable.
   */
  keys(accountId: string, { refusing = false }: { refusing?: boolean } = {}): AccountKeys[] | undefined {
    let keys: AccountKeys[] | undefined;
    try {
      keys = this.keyring.requireAccountKeys(accountId);
    } catch (e) {
      if (!isKeyringError(e) || e.code !== 'account_key_unavailable') throw e;
      const t = this.now();
      let p = this.keyProblems.get(accountId);
      if (!p || p.reason !== e.reason) {
        p = { file: e.file!, reason: e.reason!, since: p?.since ?? t, loggedAt: -Infinity, refused: p?.refused ?? 0 };
        this.keyProblems.set(accountId, p);
        this.opts.metrics?.keyUnavailable.set(this.keyProblems.size);
      }
      if (refusing) p.refused++;
      if (t - p.loggedAt >= HOUR) {
        p.loggedAt = t;
        this.opts.log?.error(
          { accountId, file: p.file, reason: p.reason, refusedBatches: p.refused },
          'account key unavailable: its batches are refused (503) or wait unprocessed until the file is restored; run `cipherstat keyring check`',
        );
      }
      throw new CollectorError(503, 'account_key_unavailable', "this account's key entry cannot be read; retry later", KEY_UNAVAILABLE_RETRY_AFTER_S);
    }
    const p = this.keyProblems.get(accountId);
    if (p) {
      this.keyProblems.delete(accountId);
      this.opts.metrics?.keyUnavailable.set(this.keyProblems.size);
      this.opts.log?.info({ accountId, file: p.file, refusedBatches: p.refused }, 'account key readable again: waiting batches are processed');
    }
    return keys;
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  async create(input: CreateAccountInput = {}): Promise<CreatedAccount> {
    const accountId = newAccountId();
    const keys = await this.keyring.createAccount(accountId);
    const readToken = newToken('read');
    const now = this.now();
    await this.store.putAccount({
      accountId,
      version: 1,
      state: 'active',
      createdAt: now,
      updatedAt: now,
      deactivatedAt: null,
      shredAfter: null,
      shreddedAt: null,
      readTokenHash: hashToken(readToken),
      allowedOrigins: input.allowedOrigins ?? [],
      retentionDays: input.retentionDays ?? this.opts.defaultRetentionDays,
      confidential: input.confidential ?? false,
      name: input.name ?? '',
    });
    const current = this.keyring.currentTransportKey();
    return {
      accountId,
      writeKey: toBase64(keys.publicKey),
      readToken,
      collectorKey: { keyId: current.keyId, publicKey: toBase64(current.publicKey) },
    };
  }

  /**
   * Account state through the short-lived cache (ingest and query hot paths). Misses are read
   * in bulk: every miss waiting while a read is in flight joins the next one (one storage query
   * for many accounts, like the writer's group commit), so thousands of small shops do not cost
   * a query each.
   */
  async get(accountId: string): Promise<AccountRow | undefined> {
    const hit = this.cache.get(accountId);
    if (hit && this.now() - this.asOf(hit.at) < this.ttl) {
      this.stats.hit++;
      return hit.row;
    }
    this.stats.miss++;
    let p = this.loading.get(accountId);
    if (!p) {
      const gen = this.gen(accountId);
      p = new Promise<AccountRow | undefined>((resolve, reject) => this.misses.push({ accountId, gen, resolve, reject }));
      this.loading.set(accountId, p);
      void this.readMisses(); // starts a read now unless one is in flight (then this miss joins the next)
    }
    return p;
  }

  /**
   * What this process last read of the account's settings processing needs, and when (the
   * cache entry, however old; a deleted or shredded account: null), or undefined when not
   * cached. Never reads storage.
   */
  seen(accountId: string): AccountSeen | null | undefined {
    const entry = this.cache.get(accountId);
    if (!entry) return undefined;
    const { row } = entry;
    return row && row.state !== 'shredded' ? { retentionDays: row.retentionDays, confidential: row.confidential, at: this.asOf(entry.at) } : null;
  }

  /** Several accounts at once (one storage read for all misses). */
  async getMany(accountIds: Iterable<string>): Promise<Map<string, AccountRow | undefined>> {
    const ids = [...new Set(accountIds)];
    const rows = await Promise.all(ids.map((id) => this.get(id)));
    return new Map(ids.map((id, i) => [id, rows[i]]));
  }

  /** Reads waiting misses, up to READ_BATCH accounts per query, one query at a time. */
  private async readMisses(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (this.misses.length) {
        const take = this.misses.splice(0, READ_BATCH);
        const at = this.now();
        const settle = (m: Miss) => {
          const p = this.loading.get(m.accountId);
          if (p) this.loading.delete(m.accountId);
          return p;
        };
        try {
          const rows = new Map((await this.store.getAccounts([...new Set(take.map((m) => m.accountId))])).map((r) => [r.accountId, r]));
          for (const m of take) {
            const row = rows.get(m.accountId);
            // A newer update(), fresh() or forget() happened meanwhile: it wins; so does a newer
            // version the background refresh put in meanwhile.
            if (this.gen(m.accountId) === m.gen) {
              settle(m);
              const cached = this.cache.get(m.accountId)?.row;
              if (!cached || (row?.version ?? 0) >= cached.version) this.cache.set(m.accountId, { row, at });
            }
            m.resolve(row);
          }
        } catch (e) {
          for (const m of take) {
            if (this.gen(m.accountId) === m.gen) settle(m);
            m.reject(e);
          }
        }
      }
    } finally {
      this.reading = false;
    }
  }

  /** Marks a cache write (or drop) for `accountId`: reads in flight since before it are not cached. */
  private invalidate(accountId: string): void {
    this.generation.set(accountId, ++this.generationSeq);
    this.loading.delete(accountId);
    if (this.generation.size > 50_000) {
      // Bounded: a new epoch means no read in flight caches its result (never a stale overwrite).
      this.generation.clear();
      this.generationEpoch++;
    }
  }

  /** Reads storage directly (admin paths). */
  async fresh(accountId: string): Promise<AccountRow | undefined> {
    this.invalidate(accountId);
    const gen = this.gen(accountId);
    const row = await this.store.getAccount(accountId);
    if (this.gen(accountId) === gen) this.cache.set(accountId, { row, at: this.now() });
    return row;
  }

  async list(): Promise<AccountRow[]> {
    return this.store.listAccounts();
  }

  /** Writes a new version of an account row and refreshes the local cache. */
  async update(accountId: string, change: Partial<Omit<AccountRow, 'accountId' | 'version'>>): Promise<AccountRow> {
    const row = await this.fresh(accountId);
    if (!row) throw new CollectorError(404, 'account_not_found', `no account ${accountId}`);
    const next: AccountRow = { ...row, ...change, version: row.version + 1, updatedAt: this.now() };
    await this.store.putAccount(next);
    this.invalidate(accountId);
    this.cache.set(accountId, { row: next, at: this.now() });
    return next;
  }

  /**
   * The shred's record: one row that keeps the id, the state and when, nothing else (no
   * origins, no read-token hash, no other timestamps). The purge then deletes every earlier
   * version, so storage holds nothing else of the tenant.
   */
  async tombstone(accountId: string, shreddedAt: number): Promise<AccountRow> {
    const row = await this.fresh(accountId);
    if (!row) throw new CollectorError(404, 'account_not_found', `no account ${accountId}`);
    const next: AccountRow = {
      accountId,
      version: row.version + 1,
      state: 'shredded',
      createdAt: shreddedAt,
      updatedAt: shreddedAt,
      deactivatedAt: null,
      shredAfter: null,
      shreddedAt,
      readTokenHash: '',
      allowedOrigins: [],
      retentionDays: 0,
      confidential: false,
    };
    await this.store.putAccount(next);
    this.forget(accountId);
    return next;
  }

  /**
   * A new read token; the old one is refused at once in this process (the cached row carries
   * the new hash) and within the account cache's lifetime (≤ 1 s) everywhere else.
   */
  async rotateReadToken(accountId: string): Promise<{ accountId: string; readToken: string }> {
    const readToken = newToken('read');
    await this.update(accountId, { readTokenHash: hashToken(readToken) });
    return { accountId, readToken };
  }

  forget(accountId: string): void {
    this.invalidate(accountId);
    this.cache.delete(accountId);
    this.byToken.clear();
  }

  /**
   * The account a read token belongs to, or undefined. Only hashes are compared. A token no
   * account has is remembered for 10 minutes, so a guessed token reaches storage once.
   */
  async byReadToken(token: string): Promise<AccountRow | undefined> {
    const hash = hashToken(token);
    const hit = this.byToken.get(hash);
    // A known token's account never changes (a rotation gives a new token: the row's hash,
    // checked below on every use, then differs); an unknown one may be created elsewhere.
    const fresh = hit && (hit.accountId !== undefined || this.now() - hit.at < UNKNOWN_TOKEN_TTL_MS);
    let accountId = hit?.accountId;
    if (!fresh) {
      accountId = await this.store.accountIdByReadTokenHash(hash);
      this.byToken.set(hash, { accountId, at: this.now() });
    }
    if (!accountId) return undefined;
    const row = await this.get(accountId);
    return row && row.readTokenHash === hash ? row : undefined;
  }

  async view(row: AccountRow): Promise<AccountView> {
    let keys: AccountKeys[] | undefined;
    let keyProblem: KeyProblem | null = null;
    if (row.state !== 'shredded') {
      try {
        keys = this.keys(row.accountId);
      } catch (e) {
        const p = this.keyProblems.get(row.accountId);
        if (!p || !isCollectorError(e)) throw e;
        keyProblem = { file: p.file, reason: p.reason, since: iso(p.since)!, refusedBatches: p.refused };
      }
    }
    const current = keys?.[keys.length - 1];
    return {
      accountId: row.accountId,
      name: row.name ?? '',
      state: keyProblem ? 'key_unavailable' : row.state,
      createdAt: iso(row.createdAt)!,
      deactivatedAt: iso(row.deactivatedAt),
      shredAfter: iso(row.shredAfter),
      shreddedAt: iso(row.shreddedAt),
      allowedOrigins: row.allowedOrigins,
      retentionDays: row.retentionDays,
      confidential: row.confidential,
      writeKey: current ? toBase64(current.publicKey) : null,
      keyProblem,
    };
  }
}
