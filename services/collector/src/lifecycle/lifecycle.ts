/**
 * An account's life after creation: deactivate (grace period, restorable) → shred (keys
 * destroyed, tombstone) → purge (ciphertext deleted in the background); plus wipe (fresh
 * keys and write key, old data destroyed), retention, settings, and verify.
 *
 * State lives in storage (the account row) and in the keyring (tombstones), never only in
 * memory: the sweep (sweep.ts) finds due shreds, shreds interrupted by a crash, pending
 * purges, expired rows (retention.ts) and a due master key rotation from that state alone,
 * so it survives restarts and can run in any process that holds the keyring. What the
 * operations report: reports.ts.
 */
import type { AccountRow, Store } from '../storage/types.js';
import type { Keyring, ManagedMasterKeys } from '../keyring/index.js';
import { isKeyringError } from '../keyring/index.js';
import type { Accounts, AccountView } from '../accounts/accounts.js';
import type { BatchWriter } from '../ingest/writer.js';
import type { Processor } from '../process/processor.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../logger.js';
import { toBase64 } from '@cipherstat/protocol';
import { CollectorError } from '../errors.js';
import { verifyAccount, type VerifyOptions, type VerifyReport } from './verify.js';
import { PURGE_TABLES } from '../storage/index.js';
import { DEFAULT_MASTER_ROTATION_DAYS, rotateMaster, type MasterRotationReport } from './master-rotation.js';
import { LifecycleSweep, type SweepTarget } from './sweep.js';
import type { AccountDetails, AccountSettings, DeactivateReport, PurgeReport, RetentionReport, ShredReport, SweepReport, WipeReport } from './reports.js';

const DAY = 86_400_000;
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export const DEFAULT_GRACE_DAYS = 7;
/** A wipe deletes old-version rows again this long after it returned (rows a processor
 *  tick still had in flight, or another process whose keyring cache had the old keys). */
export const WIPE_SECOND_PASS_MS = 2_000;

export interface LifecycleOptions {
  store: Store;
  keyring: Keyring;
  accounts: Accounts;
  metrics: Metrics;
  log: Logger;
  writer?: BatchWriter;
  processor?: Processor;
  /** Needed for scheduled master key rotation; without it the sweep skips rotation. */
  master?: ManagedMasterKeys;
  now?: () => number;
  /** Days between deactivation and shred (default 7). */
  graceDays?: number;
  /** Days between master key rotations (default 30; config `masterRotationDays`). */
  masterRotationDays?: number;
  /** Period of the sweep (default 60 s; config `lifecycleIntervalMs`). */
  intervalMs?: number;
  /** How often retention runs (default 1 h). */
  retentionIntervalMs?: number;
}

export class Lifecycle implements SweepTarget {
  /** Called with the account id right after a shred in this process (attach caches holding plaintext or keys). */
  readonly onShred: ((accountId: string) => void)[] = [];
  /** Called right after a wipe in this process (old results and pseudonyms are stale). */
  readonly onWipe: ((accountId: string) => void)[] = [];
  readonly graceDays: number;
  readonly masterRotationDays: number;
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly pending = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  /** No background work (purges after a shred, a wipe's second pass) until start(): the CLI purges itself. */
  private stopped = true;
  private readonly sweeper: LifecycleSweep;

  constructor(private readonly o: LifecycleOptions) {
    this.graceDays = o.graceDays ?? DEFAULT_GRACE_DAYS;
    this.masterRotationDays = o.masterRotationDays ?? DEFAULT_MASTER_ROTATION_DAYS;
    const { store, keyring, log, master, intervalMs, retentionIntervalMs } = o;
    this.sweeper = new LifecycleSweep(this, { store, keyring, log, master, intervalMs, retentionIntervalMs, now: () => this.now() });
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Runs `fn` after every earlier lifecycle change of the same account (in this process). */
  private serial<T>(accountId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(accountId) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(fn);
    this.chains.set(accountId, next);
    void next.catch(() => {}).finally(() => {
      if (this.chains.get(accountId) === next) this.chains.delete(accountId);
    });
    return next;
  }

  private async row(accountId: string): Promise<AccountRow> {
    const row = await this.o.accounts.fresh(accountId);
    if (!row) throw new CollectorError(404, 'account_not_found', 'no such account');
    return row;
  }

  private deleted(accountId: string): boolean {
    return this.o.keyring.isTombstoned(accountId);
  }

  isTombstoned(accountId: string): boolean {
    return this.deleted(accountId);
  }

  // ---------------------------------------------------------------- deactivate / restore

  /**
   * Deactivates (ingest answers 410, queries are refused) and schedules the shred after
   * `graceDays`; with `immediately`, or a grace of 0, shreds now. Idempotent: on an account
   * already deactivated it only moves the deadline when `graceDays` is given.
   */
  async deactivate(accountId: string, opts: { graceDays?: number; immediately?: boolean } = {}): Promise<DeactivateReport | ShredReport> {
    const graceDays = opts.graceDays ?? this.graceDays;
    if (!(graceDays >= 0 && graceDays <= 3650)) throw new CollectorError(400, 'invalid_request', 'graceDays must be within 0..3650');
    const immediately = opts.immediately || graceDays === 0;
    return this.serial(accountId, async () => {
      let row = await this.row(accountId);
      if (immediately || row.state === 'shredded' || this.deleted(accountId)) return this.shredLocked(row);
      const t = this.now();
      if (row.state === 'active') {
        row = await this.o.accounts.update(accountId, { state: 'deactivated', deactivatedAt: t, shredAfter: t + graceDays * DAY });
        this.o.log.info({ accountId, shredAfter: iso(row.shredAfter) }, 'account deactivated');
      } else if (opts.graceDays !== undefined) {
        row = await this.o.accounts.update(accountId, { shredAfter: (row.deactivatedAt ?? t) + graceDays * DAY });
      }
      if (row.shredAfter !== null && row.shredAfter <= t) return this.shredLocked(row);
      return {
        accountId,
        state: 'deactivated',
        deactivatedAt: iso(row.deactivatedAt)!,
        shredAfter: iso(row.shredAfter)!,
        graceDays: ((row.shredAfter ?? t) - (row.deactivatedAt ?? t)) / DAY,
      };
    });
  }

  /** Back to active inside the grace period; 409 once it is over, 410 once shredded. */
  async restore(accountId: string): Promise<AccountView> {
    return this.serial(accountId, async () => {
      let row = await this.row(accountId);
      if (row.state === 'shredded' || this.deleted(accountId)) throw new CollectorError(410, 'account_deleted', 'this account was shredded; it cannot be restored');
      if (row.state === 'deactivated') {
        if (row.shredAfter !== null && this.now() >= row.shredAfter) {
          throw new CollectorError(409, 'grace_period_over', 'the grace period is over; the account is being shredded');
        }
        row = await this.o.accounts.update(accountId, { state: 'active', deactivatedAt: null, shredAfter: null });
        this.o.log.info({ accountId }, 'account restored');
      }
      return this.o.accounts.view(row);
    });
  }

  // ---------------------------------------------------------------- shred / purge

  /** Shreds now, whatever the grace period says. */
  shred(accountId: string): Promise<ShredReport> {
    return this.serial(accountId, async () => this.shredLocked(await this.row(accountId)));
  }

  private async shredLocked(row: AccountRow): Promise<ShredReport> {
    const { accountId } = row;
    const t = this.now();
    // Ingest and queries stop before the keys go (a crash in between leaves a deactivated,
    // tombstoned account that the next sweep finishes).
    if (row.state === 'active') row = await this.o.accounts.update(accountId, { state: 'deactivated', deactivatedAt: t, shredAfter: t });
    const k = this.o.keyring.shred(accountId); // tombstone first, then the key file
    // Counted before the row says shredded: only then may a sweep start purging.
    const rowsToPurge = (await this.o.store.purgeRowCounts([accountId])).get(accountId)!;
    const deactivatedAt = row.deactivatedAt;
    if (row.state !== 'shredded') row = await this.o.accounts.tombstone(accountId, t); // origins, token hash, timestamps: gone
    const caches: string[] = [];
    this.o.accounts.forget(accountId);
    caches.push('account state and read-token cache');
    if (this.o.writer) {
      this.o.writer.forgetAccount(accountId);
      caches.push('ingest batch-id cache');
    }
    if (this.o.processor) {
      await this.o.processor.forgetAccount(accountId);
      caches.push('processor batch, dictionary and key caches (every thread, key copies zeroed)');
    }
    for (const fn of this.onShred) {
      try {
        fn(accountId);
      } catch (e) {
        this.o.log.error({ accountId, err: (e as Error).message }, 'onShred listener failed');
      }
    }
    if (this.onShred.length) caches.push(`${this.onShred.length} onShred listener(s) (query cache)`);
    const left = PURGE_TABLES.reduce((n, t) => n + rowsToPurge[t], 0);
    this.setPending(accountId, left);
    if (k.destroyed.length) this.o.log.info({ accountId, destroyed: k.destroyed, rowsToPurge }, 'account shredded');
    if (left) this.kickPurge(accountId);
    return {
      accountId,
      state: 'shredded',
      deactivatedAt: iso(deactivatedAt),
      tombstonedAt: iso(k.tombstonedAt)!,
      shreddedAt: iso(row.shreddedAt ?? t)!,
      destroyed: k.destroyed,
      caches,
      rowsToPurge,
      purge: left ? 'pending' : 'complete',
    };
  }

  private kickPurge(accountId: string): void {
    if (this.stopped) return; // no background work (CLI): the caller purges
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.purge(accountId).catch((e) => this.o.log.warn({ accountId, err: (e as Error).message }, 'purge failed; the next sweep retries'));
    }, 0);
    this.timers.add(timer);
  }

  /**
   * Deletes every row of a shredded account (sealed batches, processed markers, rollups,
   * dictionary, reject counts, earlier versions of the account row): what stays is the
   * tombstone row (id, state, shredded-at). Refuses accounts that are not shredded.
   */
  purge(accountId: string): Promise<PurgeReport> {
    return this.serial(`${accountId}\u0000purge`, async () => {
      const row = await this.row(accountId);
      if (row.state !== 'shredded' || !this.deleted(accountId)) throw new CollectorError(409, 'account_not_shredded', 'only a shredded account is purged');
      const started = performance.now();
      // Shredded before tombstones were minimal: the current row still names origins and a token hash.
      if (row.readTokenHash !== '') await this.o.accounts.tombstone(accountId, row.shreddedAt ?? this.now());
      const rowsBefore = (await this.o.store.purgeRowCounts([accountId])).get(accountId)!;
      // ALTER … DELETE rewrites the parts holding the rows, so the bytes leave the disk, not
      // only the results; it waits for every replica. Tables with no row of the account are skipped.
      await this.o.store.purgeAccount(accountId, PURGE_TABLES.filter((t) => rowsBefore[t] > 0));
      const rowsLeft = (await this.o.store.purgeRowCounts([accountId])).get(accountId)!;
      this.setPending(accountId, PURGE_TABLES.reduce((n, t) => n + rowsLeft[t], 0));
      const tookMs = Math.round(performance.now() - started);
      this.o.log.info({ accountId, rowsBefore, rowsLeft, tookMs }, 'account purged');
      return { accountId, purgedAt: new Date(this.now()).toISOString(), tookMs, rowsBefore, rowsLeft };
    });
  }

  /** Shreds the account if it is still due, or its shred was interrupted (the sweep); whether it did. */
  shredIfDue(accountId: string): Promise<boolean> {
    return this.serial(accountId, async () => {
      const fresh = await this.row(accountId);
      const stillDue = fresh.state === 'deactivated' && fresh.shredAfter !== null && fresh.shredAfter <= this.now();
      if (!stillDue && !(fresh.state !== 'shredded' && this.deleted(accountId))) return false;
      await this.shredLocked(fresh);
      return true;
    });
  }

  setPending(accountId: string, n: number): void {
    if (n > 0) this.pending.set(accountId, n);
    else this.pending.delete(accountId);
    this.o.metrics.purgePending.set(this.pendingRows());
  }

  /** Rows of shredded accounts left to purge, as last counted in this process. */
  pendingRows(): number {
    let total = 0;
    for (const v of this.pending.values()) total += v;
    return total;
  }

  // ---------------------------------------------------------------- wipe / settings

  /**
   * New key pair, data key and MAC key; every old version destroyed (so every copy of what was
   * stored or queued so far, in storage, its backups or visitors' offline queues, is
   * unreadable); the sealed batches received so far deleted. Returns the new write key once;
   * batches sealed to the old one are refused (`stale_write_key`).
   */
  wipe(accountId: string): Promise<WipeReport> {
    return this.serial(accountId, async () => {
      const row = await this.row(accountId);
      if (row.state === 'shredded' || this.deleted(accountId)) throw new CollectorError(410, 'account_deleted', 'this account was shredded');
      const t = this.now();
      let rotated: ReturnType<Keyring['rotateDataKeys']>;
      try {
        rotated = this.o.keyring.rotateDataKeys(accountId, { destroyOld: true, rotateKeyPair: true });
      } catch (e) {
        if (isKeyringError(e) && e.code === 'account_tombstoned') throw new CollectorError(410, 'account_deleted', 'this account was shredded');
        if (isKeyringError(e) && e.code === 'account_not_found') throw new CollectorError(409, 'account_has_no_keys', 'the keyring holds no keys for this account');
        throw e;
      }
      await this.o.processor?.forgetAccount(accountId);
      for (const fn of this.onWipe) {
        try {
          fn(accountId);
        } catch (e) {
          this.o.log.error({ accountId, err: (e as Error).message }, 'onWipe listener failed');
        }
      }
      const deleted = await this.o.store.deleteBeforeWipe(accountId, rotated.keys.version, t);
      if (!this.stopped) {
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          this.o.store.deleteBeforeWipe(accountId, rotated.keys.version, t).catch((e) =>
            this.o.log.warn({ accountId, err: (e as Error).message }, 'second wipe pass failed'),
          );
        }, WIPE_SECOND_PASS_MS);
        timer.unref();
        this.timers.add(timer);
      }
      this.o.log.info({ accountId, keyVersion: rotated.keys.version, destroyedKeyVersions: rotated.destroyedVersions, deleted }, 'account wiped');
      return {
        accountId,
        wipedAt: new Date(t).toISOString(),
        keyVersion: rotated.keys.version,
        destroyedKeyVersions: rotated.destroyedVersions,
        deleted,
        writeKey: toBase64(rotated.keys.publicKey),
      };
    });
  }

  /**
   * Changes settings. Turning confidential mode on also deletes the sealed batches already
   * processed (from then on the processor deletes each batch once it is processed). A new
   * retentionDays applies to rows written from now on.
   */
  update(accountId: string, change: AccountSettings): Promise<AccountView> {
    return this.serial(accountId, async () => {
      const row = await this.row(accountId);
      if (row.state === 'shredded' || this.deleted(accountId)) throw new CollectorError(410, 'account_deleted', 'this account was shredded');
      const next = await this.o.accounts.update(accountId, Object.fromEntries(Object.entries(change).filter(([, v]) => v !== undefined)));
      if (next.confidential && !row.confidential) {
        await this.o.store.deleteProcessedBatches(accountId);
      }
      this.o.log.info({ accountId, changed: Object.keys(change) }, 'account settings changed');
      return this.o.accounts.view(next);
    });
  }

  /** A new read token for the account (the old one stops working at once); not for a shredded account. */
  rotateReadToken(accountId: string): Promise<{ accountId: string; readToken: string }> {
    return this.serial(accountId, async () => {
      const row = await this.row(accountId);
      if (row.state === 'shredded' || this.deleted(accountId)) throw new CollectorError(410, 'account_deleted', 'this account was shredded');
      const rotated = await this.o.accounts.rotateReadToken(accountId);
      this.o.log.info({ accountId }, 'read token rotated');
      return rotated;
    });
  }

  // ---------------------------------------------------------------- reads

  /** What `GET /v1/accounts/:id` and `cipherstat accounts show` print (`rejects`: how the reject counts are read). */
  async describe(row: AccountRow, rejects: (accountId: string) => Promise<Record<string, number>> = (id) => this.o.store.rejects(id)): Promise<AccountDetails> {
    const [view, counts, rows] = await Promise.all([
      this.o.accounts.view(row),
      rejects(row.accountId),
      this.o.store.countAccountRows(row.accountId),
    ]);
    let purge: AccountDetails['purge'] = null;
    if (row.state === 'shredded') {
      const tables = (await this.o.store.purgeRowCounts([row.accountId])).get(row.accountId)!;
      const pendingRows = PURGE_TABLES.reduce((n, t) => n + tables[t], 0);
      purge = { complete: pendingRows === 0, pendingRows, tables };
    }
    return { ...view, rejects: counts, rows, purge };
  }

  async verify(accountId: string, opts?: VerifyOptions): Promise<VerifyReport> {
    const row = await this.o.accounts.fresh(accountId);
    if (!row && !this.deleted(accountId)) throw new CollectorError(404, 'account_not_found', 'no such account');
    return verifyAccount({ store: this.o.store, keyring: this.o.keyring, now: () => this.now() }, accountId, row?.state, opts);
  }

  // ---------------------------------------------------------------- retention, master key

  /** Deletes expired rows now (retention.ts). */
  runRetention(): Promise<RetentionReport> {
    return this.sweeper.runRetention();
  }

  rotateMasterKey(): MasterRotationReport {
    if (!this.o.master) throw new CollectorError(409, 'master_key_external', 'no managed master key in this process');
    const r = rotateMaster(this.o.keyring, this.o.master, { now: this.now(), rotationDays: this.masterRotationDays });
    this.o.log.warn({ version: r.version, destroyed: r.destroyed }, 'master key rotated: keyring backups taken before now can no longer be restored; take a new one');
    return r;
  }

  // ---------------------------------------------------------------- the sweep

  /** One pass of the sweep now (sweep.ts); concurrent calls share one pass. */
  sweep(): Promise<SweepReport> {
    return this.sweeper.sweep();
  }

  /** Starts the periodic sweep (first pass at once) and background work. */
  start(): void {
    this.stopped = false;
    this.sweeper.start();
  }

  /** Stops the sweep and background work, and waits for work in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.sweeper.stop();
    await Promise.all([...this.chains.values()].map((p) => p.catch(() => {})));
  }
}
