/**
 * The rolling-upgrade gate: a node never reads or writes rollups by rules older than the
 * storage's. Each migration can change what rows mean (migration 7: quarter-hour rows; level 4
 * quarter packs): a node that does not know a newer version would read too few rows (an old
 * query node ignores quarter packs and undercounts a Kolkata query) or write rows the new rules
 * count twice. So a node refuses to start on storage migrated past its own version, and a
 * running node re-reads the version every `checkMs` (CIPHERSTAT_SCHEMA_CHECK_MS): once a newer
 * collector migrated storage, this one answers queries with 503 `schema_newer`, stops
 * committing ticks and compaction passes (both fail at their fence, before any write) and
 * /readyz says not ready — until it is replaced by the new version. Ingest keeps storing sealed
 * batches (their table only gains columns with defaults), which the new version processes.
 */
import { CollectorError } from './errors.js';
import type { Store } from './storage/index.js';

export class SchemaGate {
  private seen: number;
  private checkedAt: number;
  private pending: Promise<void> | undefined;

  constructor(
    private readonly store: Pick<Store, 'schemaVersion'>,
    /** The schema version this collector knows (storage/schema.ts). */
    readonly known: number,
    /** The version storage had at start (migrate()'s result). */
    atStart: number,
    private readonly checkMs: number,
    private readonly now: () => number,
  ) {
    if (atStart > known) throw SchemaGate.error(atStart, known, 'start');
    this.seen = atStart;
    this.checkedAt = now();
  }

  private static error(version: number, known: number, what: 'start' | 'serve'): CollectorError {
    const msg = `storage is at schema version ${version}, newer than this collector's ${known}: a newer collector migrated it; upgrade this node (README, "Upgrading")`;
    return new CollectorError(503, 'schema_newer', what === 'start' ? `refusing to start: ${msg}` : msg, 60);
  }

  /** Storage's schema version as last read (at least the version in force at start). */
  get version(): number {
    return Math.max(this.seen, this.known);
  }

  /** Whether storage is at a version this collector knows (as last read). */
  get current(): boolean {
    return this.seen <= this.known;
  }

  /** Re-reads storage's version when the last read is `checkMs` old (one read at a time). */
  refresh(): Promise<void> {
    if (this.now() - this.checkedAt < this.checkMs) return Promise.resolve();
    this.pending ??= this.store
      .schemaVersion()
      .then((v) => {
        this.seen = Math.max(this.seen, v);
        this.checkedAt = this.now();
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }

  /** Throws 503 `schema_newer` once storage is newer than this collector (after a refresh when due). */
  async check(): Promise<void> {
    await this.refresh();
    this.assertCurrent();
  }

  /** The synchronous form for fences: throws on the last read; starts a refresh when one is due. */
  assertCurrent(): void {
    if (!this.current) throw SchemaGate.error(this.seen, this.known, 'serve');
    this.refresh().catch(() => {}); // a failed read keeps the last answer; the next call retries
  }
}
