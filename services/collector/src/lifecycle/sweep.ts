/**
 * The lifecycle sweep: one pass finds, from storage and keyring state alone (so it survives
 * restarts and runs in any process holding the keyring), shreds a crash interrupted, due
 * shreds, shredded accounts with rows left to purge, expired rows (every
 * `retentionIntervalMs`: retention.ts) and a due master key rotation; `start` runs a pass
 * every `intervalMs`. The operations themselves are lifecycle.ts's.
 */
import type { AccountRow, Store } from '../storage/types.js';
import type { Keyring, ManagedMasterKeys } from '../keyring/index.js';
import type { Logger } from '../logger.js';
import { PURGE_TABLES } from '../storage/index.js';
import { rotationDue, type MasterRotationReport } from './master-rotation.js';
import { DEFAULT_RETENTION_INTERVAL_MS, deleteExpired } from './retention.js';
import type { PurgeReport, RetentionReport, SweepReport } from './reports.js';

export const DEFAULT_LIFECYCLE_INTERVAL_MS = 60_000;

/** What a sweep does through the lifecycle's operations (lifecycle.ts). */
export interface SweepTarget {
  readonly masterRotationDays: number;
  isTombstoned(accountId: string): boolean;
  /** Shreds the account if it is still due (or its shred was interrupted); whether it did. */
  shredIfDue(accountId: string): Promise<boolean>;
  purge(accountId: string): Promise<PurgeReport>;
  /** Records the rows an account has left to purge (the purge-pending gauge). */
  setPending(accountId: string, rows: number): void;
  pendingRows(): number;
  rotateMasterKey(): MasterRotationReport;
}

export interface SweepOptions {
  store: Store;
  keyring: Keyring;
  log: Logger;
  now: () => number;
  master?: ManagedMasterKeys;
  /** Period of the sweep (default 60 s; config `lifecycleIntervalMs`). */
  intervalMs?: number;
  /** How often retention runs (default 1 h). */
  retentionIntervalMs?: number;
}

export class LifecycleSweep {
  private sweeping: Promise<SweepReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private lastRetention = -Infinity;

  constructor(
    private readonly life: SweepTarget,
    private readonly o: SweepOptions,
  ) {}

  private now(): number {
    return this.o.now();
  }

  /**
   * One pass: finish shreds a crash interrupted, run due shreds, purge shredded accounts
   * with rows left, delete expired rows (every retentionIntervalMs) and rotate the master
   * key when due. Concurrent calls share one pass.
   */
  sweep(): Promise<SweepReport> {
    return (this.sweeping ??= this.run().finally(() => (this.sweeping = undefined)));
  }

  private async run(): Promise<SweepReport> {
    const report: SweepReport = { shredded: [], purged: [], purgePendingRows: 0, errors: [] };
    const step = async (what: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        const msg = `${what}: ${(e as Error).message}`;
        report.errors.push(msg);
        this.o.log.warn({ err: msg }, 'lifecycle step failed; retried at the next sweep');
      }
    };
    let rows: AccountRow[] = [];
    await step('list accounts', async () => void (rows = await this.o.store.listAccounts()));
    const t = this.now();
    for (const row of rows) {
      const interrupted = row.state !== 'shredded' && this.life.isTombstoned(row.accountId);
      const due = row.state === 'deactivated' && row.shredAfter !== null && row.shredAfter <= t;
      if (!interrupted && !due) continue;
      await step(`shred ${row.accountId}`, async () => {
        const done = await this.life.shredIfDue(row.accountId);
        if (done) {
          report.shredded.push(row.accountId);
          row.state = 'shredded';
        }
      });
    }
    const shredded = rows.filter((r) => r.state === 'shredded').map((r) => r.accountId);
    await step('purge', async () => {
      const counts = await this.o.store.purgeRowCounts(shredded);
      for (const [id, c] of counts) {
        const n = PURGE_TABLES.reduce((s, t) => s + c[t], 0);
        this.life.setPending(id, n);
        if (n === 0) continue;
        await step(`purge ${id}`, async () => {
          await this.life.purge(id);
          report.purged.push(id);
        });
      }
    });
    report.purgePendingRows = this.life.pendingRows();
    if (t - this.lastRetention >= (this.o.retentionIntervalMs ?? DEFAULT_RETENTION_INTERVAL_MS)) {
      await step('retention', async () => void (report.retention = await this.runRetention()));
    }
    const master = this.o.master;
    if (master) {
      await step('master key rotation', async () => {
        if (!rotationDue(this.o.keyring.dir, master, t, this.life.masterRotationDays)) return;
        if (master.source === 'local') report.masterRotation = this.life.rotateMasterKey();
        else this.o.log.warn({ source: master.source, location: master.location }, 'master key rotation is due: add a version where it is configured, restart, run `cipherstat keyring rotate-master`');
      });
    }
    return report;
  }

  /** Deletes expired rows now (retention.ts); the next scheduled run is counted from here. */
  async runRetention(): Promise<RetentionReport> {
    const t = this.now();
    const report = await deleteExpired(this.o, t);
    this.lastRetention = t;
    return report;
  }

  /** Starts the periodic sweep (first pass at once). */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const loop = async () => {
      if (this.stopped) return;
      await this.sweep().catch(() => {});
      if (!this.stopped) {
        this.timer = setTimeout(loop, this.o.intervalMs ?? DEFAULT_LIFECYCLE_INTERVAL_MS);
        this.timer.unref();
      }
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Stops the periodic sweep and waits for a pass in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.sweeping?.catch(() => {});
  }
}
