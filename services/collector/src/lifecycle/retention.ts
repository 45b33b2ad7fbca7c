/**
 * Retention: rows whose `expires_at` has passed are deleted by the lifecycle sweep every
 * `retentionIntervalMs` (sweep.ts) or on demand (`Lifecycle.runRetention`).
 */
import type { Store } from '../storage/types.js';
import type { Logger } from '../logger.js';
import type { RetentionReport } from './reports.js';

export const DEFAULT_RETENTION_INTERVAL_MS = 3_600_000;

/**
 * Deletes batches and rollups whose `expires_at` has passed. ClickHouse's TTL does the same
 * during merges, but only when a merge happens (at most every `merge_with_ttl_timeout`,
 * 4 h by default, per partition); this job bounds it by its own period.
 */
export async function deleteExpired(o: { store: Store; log: Logger }, t: number): Promise<RetentionReport> {
  const deleted = await o.store.deleteExpired(t);
  if (deleted.batches || deleted.rollups) o.log.info({ deleted }, 'retention: expired rows deleted');
  return { at: new Date(t).toISOString(), deleted };
}
