/**
 * What the lifecycle's operations and its sweep report (lifecycle.ts, sweep.ts, retention.ts),
 * and the account views and settings its routes exchange.
 */
import type { AccountView } from '../accounts/accounts.js';
import type { PurgeTable } from '../storage/index.js';
import type { MasterRotationReport } from './master-rotation.js';

export interface DeactivateReport {
  accountId: string;
  state: 'deactivated';
  deactivatedAt: string;
  /** When the shred runs by itself; restore before then to undo. */
  shredAfter: string;
  graceDays: number;
}

export interface ShredReport {
  accountId: string;
  state: 'shredded';
  deactivatedAt: string | null;
  tombstonedAt: string;
  shreddedAt: string;
  /** Key material removed by this call (empty when it was already gone). */
  destroyed: string[];
  /** In-memory state dropped in this process (other processes: see the README bounds). */
  caches: string[];
  /** Ciphertext rows still to delete per table; the purge runs in the background. */
  rowsToPurge: Record<PurgeTable, number>;
  purge: 'pending' | 'complete';
}

export interface PurgeReport {
  accountId: string;
  purgedAt: string;
  tookMs: number;
  rowsBefore: Record<PurgeTable, number>;
  rowsLeft: Record<PurgeTable, number>;
}

export interface WipeReport {
  accountId: string;
  wipedAt: string;
  /** The key version everything is written under from now on. */
  keyVersion: number;
  destroyedKeyVersions: number[];
  /** Rows deleted per table (rollups and dictionary of old key versions, sealed batches received so far). */
  deleted: { batches: number; rollups: number; dictionary: number };
  /** The account's new write key (returned once): the SDK config must change to it. Batches
   *  sealed to the old one are refused with 400 `stale_write_key`. */
  writeKey: string;
}

export interface RetentionReport {
  at: string;
  deleted: { batches: number; rollups: number };
}

/** One pass of the lifecycle sweep (sweep.ts). */
export interface SweepReport {
  shredded: string[];
  purged: string[];
  purgePendingRows: number;
  retention?: RetentionReport;
  masterRotation?: MasterRotationReport;
  errors: string[];
}

export interface AccountDetails extends AccountView {
  rejects: Record<string, number>;
  rows: Record<string, number>;
  /** Shredded accounts: how far the purge is. */
  purge: { complete: boolean; pendingRows: number; tables: Record<PurgeTable, number> } | null;
}

export interface AccountSettings {
  name?: string;
  confidential?: boolean;
  retentionDays?: number;
  allowedOrigins?: string[];
}
