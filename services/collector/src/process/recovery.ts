/**
 * Exactly once after failures (processor.ts): every tick writes its rollup rows under one random
 * `part`, then the processed markers naming it. A tick that fails in this process has its rows
 * removed before its batches are retried (and nothing else is written until that succeeded);
 * a crash leaves rows whose part no marker names, which `recoverCrashed` deletes (at start, and
 * periodically for parts old enough never to be a live tick's).
 *
 * Under a lease (services.ts), `takeOver` first fences the partition with the new epoch
 * (storage/fences.ts): from then on a marker the previous holder commits late does not count,
 * so its batches stay pending for this holder and its rows stay orphans; recovery deletes both
 * (rows of an older epoch at once, whatever their age: no marker of theirs can count any more).
 */
import type { Logger } from '../logger.js';
import type { Partition, RollupRef, Store } from '../storage/types.js';

/** The processor's options it reads (live: the same object). */
export interface TickRecoveryOptions {
  readonly store: Store;
  readonly log: Logger;
  /** This node's share of accounts (default: all of them). */
  readonly partition?: Partition;
  /** How far back crashed parts (and pending batches) are looked for (default LOOKBACK_MS). */
  readonly lookbackMs?: number;
}

/** Most fenced markers deleted per recovery round. */
const FENCED_MARKERS = 10_000;

/** Default of `lookbackMs`: two days. */
export const LOOKBACK_MS = 2 * 86_400_000;

export class TickRecovery {
  /** Parts of failed ticks whose rollup rows are not known to be gone yet: nothing is processed until they are. */
  private readonly dirty = new Map<string, { refs: RollupRef[]; at: number }>();

  constructor(
    private readonly o: TickRecoveryOptions,
    private readonly now: () => number,
  ) {}

  /** A tick failed after it may have written `refs` (at `at`): removed now if storage answers, else before the next tick. */
  async tickFailed(part: string, refs: RollupRef[], at: number): Promise<void> {
    this.dirty.set(part, { refs, at });
    await this.cleanupPart(part, refs, at).catch((err) =>
      this.o.log.warn({ part, err: err instanceof Error ? err.message : String(err) }, 'could not remove the rollup rows of a failed tick yet'),
    );
  }

  /**
   * Removes the rollup rows of a failed tick unless its processed markers made it to storage
   * (an error after the insert was committed). Waits for the delete to apply: the batches are
   * processed again right after. Throws when storage cannot tell (kept for the next attempt).
   * The delete is issued only when some of those rows are there: a failed insert wrote nothing
   * (an insert is all or nothing), and a mutation started on a full disk can leave its entry file
   * empty, which chDB then refuses at the next start ("Cannot attach table ... rollups").
   */
  private async cleanupPart(part: string, refs: RollupRef[], at: number): Promise<void> {
    const marked = await this.o.store.partMarkedSince(part, at);
    if (!marked && refs.length && (await this.o.store.findRollups(refs)).length) await this.o.store.deleteRollups(refs, { wait: true });
    this.dirty.delete(part);
  }

  /** Before a tick writes: the rows of earlier failed ticks go first (throws while storage cannot tell). */
  async cleanupFailedTicks(): Promise<void> {
    for (const [part, { refs, at }] of [...this.dirty]) await this.cleanupPart(part, refs, at);
  }

  /**
   * Deletes rollup rows of ticks that never wrote their processed markers (a crash). Rows a
   * compaction pass wrote (parts `c:…`) have no marker by design and are left alone; the
   * compactor never merges rows without a marker, so nothing deleted here was merged.
   * Only this node's partition; with `minAgeMs`, only parts written at least that long ago
   * (a tick still running on another node or in this process is never touched).
   */
  async recoverCrashed(opts: { minAgeMs?: number; epoch?: number; writing?: ReadonlySet<string> } = {}): Promise<number> {
    const now = this.now();
    const since = now - (this.o.lookbackMs ?? LOOKBACK_MS);
    const { store, partition, log } = this.o;
    // Markers a fence made stale first (their parts are orphans either way: no count depends on the order).
    if (opts.epoch) {
      const stale = await store.fencedMarkers({ since, partition, limit: FENCED_MARKERS });
      if (stale.length) {
        await store.deleteMarkers(stale);
        log.warn({ markers: stale.length, epochs: [...new Set(stale.map((m) => m.epoch))] }, 'removed processed markers a stale lease holder committed after it was fenced');
      }
    }
    // Not a part this process is writing (its markers may still come, whatever its stamp's age).
    const orphans = (await store.orphanParts({ since, writtenBefore: now - (opts.minAgeMs ?? 0) + 1, epochBelow: opts.epoch, partition })).filter((p) => !opts.writing?.has(p));
    if (orphans.length) {
      await store.deleteRollupParts(orphans);
      log.warn({ parts: orphans.length }, 'removed rollup rows of interrupted processing ticks');
    }
    return orphans.length;
  }

  /**
   * A new lease holder's first step (epoch `epoch`): the fence, then every orphan of the
   * partition (the previous holder stopped before this lease was free; whatever it commits from
   * now on does not count) and the markers already fenced.
   */
  async takeOver(epoch: number, holder: string): Promise<number> {
    await this.o.store.fencePartition({ partition: this.o.partition ?? { index: 0, count: 1 }, epoch, holder });
    return this.recoverCrashed({ epoch });
  }
}
