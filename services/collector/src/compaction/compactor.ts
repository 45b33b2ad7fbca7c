/**
 * Compaction of rollup partials. Every processing tick writes its own partial row per
 * (account, level, bucket, metric, series), so at low traffic a group collects one row per
 * batch and queries open them all. A pass merges the rows of such a group into ONE row and
 * deletes the sources, exactly once whatever crashes:
 *
 * 1. find unfinished merged rows (non-empty `supersedes`: a pass that crashed or timed out);
 *    they are finished in step 5 with this pass's own.
 * 2. find groups with more than one row and no unfinished merged row, in key order, bounded.
 * 3. read them; only rows whose tick finished (a processed marker names the part) or that a
 *    pass wrote (`c:` parts) are merged: a tick in flight, or the orphans of a crashed tick
 *    that `Processor.recover()` deletes, never are. Rows of different key versions are never
 *    merged; rows that fail to open or decode are left where they are (counted, logged).
 * 4. write the merged rows: each its own part `c:<random>`, `supersedes` = the source parts, written_at =
 *    now, expires_at = the latest of the sources. From this insert on, readers (the query
 *    engine, this compactor) ignore the sources: the merged row alone counts.
 * 5. delete the sources; once they are gone (checked by reading), empty the merged rows'
 *    `supersedes`. Both are queued mutations polled for, not waited for inside ClickHouse:
 *    chDB runs one statement at a time, and a waiting mutation would stall ingest and queries
 *    for about a second per statement.
 *
 * 6. derive the hour and quarter-hour rows of closed hours from their minute rows (derive.ts:
 *    ticks write minute rows only for recent hours) and move the derivation watermark; then
 *    pack closed UTC days before it (rollup/days.ts): the hour rows of a (day, series, key version) and its
 *    current pack, if any, become one new day pack that lists them all, and its quarter-hour
 *    rows one quarter pack likewise; then step 5 for them. Hour and quarter-hour groups of
 *    closed days are not merged in step 3: they go into their day's pack.
 *
 * A crash (or a timeout) after 4 (or the pack insert of 6) leaves merged rows and sources,
 * never both counted; the next pass finishes them. A list is emptied only once its sources are gone, and a group holding an
 * unfinished merged row is not compacted again until then, so a deleted merged row can never
 * make rows it replaced visible again (no chains).
 *
 * One compactor for all accounts: services.ts runs it on the partition-0 process node only
 * (or the one `all` node); passes in this process never overlap.
 *
 * Scheduling: a pass at start, then one every `intervalMs`, or `catchUpMs` after a pass that
 * stopped at its bounds. A scheduled pass yields to ingest: while `busy()` says batches arrive
 * at load rate, it waits (asking again every COMPACTION_YIELD_CHECK_MS), at most `yieldMaxMs`
 * from when it was due, then runs anyway — compaction's reads and deletes leave the engine to
 * the group commits during a burst, and still progress under load that never stops. Waiting
 * changes only when a pass runs, never what it does (every step above is safe at any time).
 *
 * This file is the scheduler and runs the steps of a pass: finish.ts (steps 1 and 5, the finish
 * protocol), merge.ts (step 3), day-packs.ts (step 6); pass.ts holds what they share. Every
 * stored row is opened through the rollup row model (rollup/rows.ts).
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { isPack } from '../rollup/levels.js';
import type { RollupGroupCount } from '../storage/types.js';
import { DayPacker } from './day-packs.js';
import { Deriver } from './derive.js';
import { FinishProtocol } from './finish.js';
import { GroupMerger } from './merge.js';
import {
  COMPACTION_SLICE_ROWS,
  COMPACTION_YIELD_CHECK_MS,
  DEFAULT_COMPACTION_INTERVAL_MS,
  DEFAULT_COMPACTION_YIELD_MAX_MS,
  dayId,
  emptyReport,
  groupId,
  refId,
  refOf,
  type CompactionReport,
  type CompactorOptions,
  type PassContext,
} from './pass.js';

export {
  COMPACTION_SLICE_ROWS,
  DEFAULT_COMPACTION_INTERVAL_MS,
  DEFAULT_COMPACTION_YIELD_MAX_MS,
  type CompactionReport,
  type CompactionStep,
  type CompactorOptions,
} from './pass.js';
export { COMPACTION_PART_PREFIX } from '../storage/types.js';

interface Sweep {
  /** Only groups with a row written at or after this (undefined: all groups). */
  since: number | undefined;
  startedAt: number;
  after: RollupGroupCount | undefined;
}

function counters(registry: Registry | undefined) {
  if (!registry) return undefined;
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  return {
    passes: get('cipherstat_compaction_passes_total', () =>
      new Counter({ name: 'cipherstat_compaction_passes_total', help: 'Rollup compaction passes by result (ok, error)', labelNames: ['result'], registers: [registry] })),
    rows: get('cipherstat_compaction_rows_total', () =>
      new Counter({
        name: 'cipherstat_compaction_rows_total',
        help: 'Rollup rows seen by compaction by outcome (merged, written, failed, tampered, unmarked)',
        labelNames: ['outcome'],
        registers: [registry],
      })),
    yielded: get('cipherstat_compaction_yield_seconds_total', () =>
      new Counter({ name: 'cipherstat_compaction_yield_seconds_total', help: 'Seconds scheduled compaction passes waited for a busy ingest before running', registers: [registry] })),
    seconds: get('cipherstat_compaction_pass_seconds', () =>
      new Histogram({ name: 'cipherstat_compaction_pass_seconds', help: 'Duration of rollup compaction passes', buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120], registers: [registry] })),
  };
}

export class Compactor {
  private sweep: Sweep | undefined;
  /** `since` of the next sweep (undefined until a sweep completes: look at everything). */
  private nextSince: number | undefined;
  private running: Promise<CompactionReport> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private closing = false;
  private readonly m: ReturnType<typeof counters>;
  private readonly finisher: FinishProtocol;
  private readonly merger: GroupMerger;
  private readonly packer: DayPacker;
  private readonly deriver: Deriver;

  constructor(private readonly o: CompactorOptions) {
    this.m = counters(o.registry);
    const c: PassContext = {
      o,
      now: () => this.now(),
      opening: (report, n) => this.opening(report, n),
      closing: () => this.closing,
      watermark: () => (this.watermark ??= o.store.derivedUntil()),
      // storage's watermark is the highest one set (not read yet in this pass: the next read asks storage)
      moved: (until) => {
        this.watermark = this.watermark?.then((w) => Math.max(w, until));
      },
    };
    this.finisher = new FinishProtocol(c);
    this.merger = new GroupMerger(c);
    this.packer = new DayPacker(c, this.finisher);
    this.deriver = new Deriver(c, this.finisher);
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Rows opened in this pass since the event loop last had a turn. */
  private opened = 0;
  /** The derivation watermark as this pass read it (PassContext.watermark); undefined until read. */
  private watermark: Promise<number> | undefined;

  /** Counts `n` rows opened; every `sliceRows` of them, gives the event loop a turn (pending I/O first). */
  private async opening(report: CompactionReport, n = 1): Promise<void> {
    this.opened += n;
    if (this.opened < Math.max(1, this.o.sliceRows ?? COMPACTION_SLICE_ROWS)) return;
    this.opened = 0;
    report.slices++;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Starts the scheduler: a pass at once (call after `Processor.recover()`), then periodically; each yields to a busy ingest (above). */
  start(): void {
    const interval = this.o.intervalMs ?? DEFAULT_COMPACTION_INTERVAL_MS;
    if (!this.stopped || interval <= 0) return;
    this.stopped = false;
    this.closing = false;
    const maxYield = this.o.yieldMaxMs ?? DEFAULT_COMPACTION_YIELD_MAX_MS;
    /** When the pass waiting to run became due (performance.now()), and whether it has waited for ingest. */
    let dueAt: number | undefined;
    let yielded = false;
    const loop = async () => {
      if (this.stopped) return;
      dueAt ??= performance.now();
      const waited = performance.now() - dueAt;
      if (waited < maxYield && this.o.busy?.()) {
        yielded = true;
        this.timer = setTimeout(loop, Math.min(COMPACTION_YIELD_CHECK_MS, maxYield - waited));
        this.timer.unref();
        return;
      }
      if (yielded) this.m?.yielded.inc(waited / 1000);
      dueAt = undefined;
      yielded = false;
      let more = false;
      try {
        more = (await this.runPass()).more;
      } catch {
        // logged and counted by the pass
      }
      if (!this.stopped) {
        this.timer = setTimeout(loop, more ? (this.o.catchUpMs ?? 1000) : interval);
        this.timer.unref();
      }
    };
    this.timer = setTimeout(loop, 0);
  }

  /** Stops the scheduler and waits for a pass in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.closing = true; // a pass in flight stops polling
    clearTimeout(this.timer);
    await this.running?.catch(() => {});
  }

  /** One pass (concurrent calls share it). */
  runPass(): Promise<CompactionReport> {
    return (this.running ??= this.pass().finally(() => (this.running = undefined)));
  }

  /** Passes until one finds nothing left to do (tests, tools); at most `maxPasses`. */
  async runUntilDone(maxPasses = 1000): Promise<CompactionReport> {
    const total = emptyReport();
    for (let i = 0; i < maxPasses; i++) {
      const r = await this.runPass();
      for (const k of Object.keys(total) as (keyof CompactionReport)[]) {
        if (k !== 'more' && k !== 'unfinished') (total[k] as number) += r[k] as number;
      }
      total.more = r.more;
      total.unfinished = r.unfinished;
      if (!r.more) break;
    }
    return total;
  }

  private async pass(): Promise<CompactionReport> {
    const started = performance.now();
    const endTimer = this.m?.seconds.startTimer();
    const report = emptyReport();
    this.opened = 0;
    this.watermark = undefined; // read again by each pass
    try {
      await this.compact(report);
      this.m?.passes.inc({ result: 'ok' });
    } catch (e) {
      this.m?.passes.inc({ result: 'error' });
      this.o.log.warn({ err: e instanceof Error ? e.message : String(e), ...report }, 'rollup compaction pass failed; the next pass resumes');
      throw e;
    } finally {
      endTimer?.();
      report.tookMs = Math.round(performance.now() - started);
    }
    const did = report.finished + report.unfinished + report.writtenRows + report.failedRows + report.tamperedRows;
    if (did > 0) this.o.log.info(report, 'rollup compaction pass');
    else this.o.log.debug(report, 'rollup compaction pass: nothing to do');
    if (this.m) {
      this.m.rows.inc({ outcome: 'merged' }, report.mergedRows);
      this.m.rows.inc({ outcome: 'written' }, report.writtenRows);
      this.m.rows.inc({ outcome: 'failed' }, report.failedRows);
      this.m.rows.inc({ outcome: 'tampered' }, report.tamperedRows);
      this.m.rows.inc({ outcome: 'unmarked' }, report.unmarkedRows);
    }
    return report;
  }

  private get limits() {
    const maxRows = Math.max(2, this.o.maxRows ?? 20_000);
    return {
      maxGroups: Math.max(1, this.o.maxGroups ?? 2000),
      maxRows,
      perGroup: Math.max(2, Math.min(maxRows, this.o.maxRowsPerGroup ?? 2000)),
    };
  }

  private async compact(report: CompactionReport): Promise<void> {
    const { store } = this.o;
    const { maxGroups, maxRows, perGroup } = this.limits;
    const touched = new Set<string>();

    // 1. Unfinished merged rows of earlier passes (finished in step 5), as far as their sealed lists go.
    const earlier = await this.finisher.checkLists(await store.supersedingRollups(maxGroups), report);

    // 2. Groups to compact, within this pass's bounds.
    const sweep: Sweep = this.sweep ?? { since: this.nextSince, startedAt: this.now(), after: undefined };
    const found = await store.rollupGroupsToCompact({ since: sweep.since, after: sweep.after, limit: maxGroups });
    const taken: RollupGroupCount[] = [];
    let budget = maxRows;
    for (const g of found) {
      const n = Math.min(g.rows, perGroup);
      if (taken.length > 0 && n > budget) break;
      taken.push(g);
      budget -= n;
    }

    // 3. Read and merge. An hour row an unfinished day pack lists is counted in that pack: its
    // group waits until the pack is finished (with a full list of unfinished rows, every hour group).
    const packing = earlier.length === maxGroups ? 'all' : new Set(earlier.filter((r) => isPack(r.level)).map(dayId));
    const merged = taken.length > 0 ? await this.merger.mergeGroups(taken, perGroup, report, packing) : [];

    // Resume after the last group done whole: a group merged only in part (more rows than
    // perGroup) is looked at again, unless this pass could merge nothing of it (its oldest rows
    // are unmarked or fail to open): then it must not hold the sweep up.
    const progressed = new Set(merged.map(groupId));
    const partial = taken.findIndex((g) => g.rows > perGroup && progressed.has(groupId(g)));
    const sweepDone = taken.length === found.length && found.length < maxGroups && partial < 0;
    const after = partial < 0 ? taken.at(-1) ?? sweep.after : partial > 0 ? taken[partial - 1] : sweep.after;
    report.more = !sweepDone || earlier.length === maxGroups;

    // 4. From this insert on, readers count the merged rows instead of their sources.
    let kept = merged;
    if (merged.length > 0) {
      this.o.fence?.();
      await store.insertRollups(merged);
      report.writtenRows = merged.length;
      for (const m of merged) touched.add(m.accountId);
      await this.o.hook?.('inserted');
      kept = await this.finisher.dropIfKeyGone(merged);
    }

    // 5. Sources out, then lists emptied: this pass's merged rows and earlier unfinished ones.
    const finishing = [...earlier, ...kept.map((m) => ({ ...refOf(m), supersedes: m.supersedes ?? [] }))];
    if (finishing.length > 0) {
      const done = await this.finisher.finish(earlier, finishing);
      for (const r of earlier) if (done.has(refId(r))) touched.add(r.accountId);
      report.finished = earlier.filter((r) => done.has(refId(r))).length;
      report.unfinished = finishing.length - done.size;
    }

    // 6. Hour and quarter-hour rows of closed hours derived from minute rows, then day packs of
    // closed UTC days before the derivation watermark that have hour rows (never packed, or late data).
    if (await this.deriver.derive(report)) report.more = true;
    if (await this.packer.packDays(report)) report.more = true;

    // The sweep moves on only after a pass that went through.
    if (sweepDone) {
      this.nextSince = sweep.startedAt - (this.o.windowSlackMs ?? 600_000);
      this.sweep = undefined;
    } else {
      this.sweep = { ...sweep, after };
    }
    if (touched.size) this.o.onCompacted?.([...touched]);
  }
}
