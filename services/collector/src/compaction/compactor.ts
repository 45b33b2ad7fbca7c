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
 * 6. pack closed UTC days (rollup/days.ts): the hour rows of a (day, series, key version) and its
 *    current pack, if any, become one new day pack that lists them all; then step 5 for it.
 *    Hour groups of closed days are not merged in step 3: they go into their day's pack.
 *
 * A crash (or a timeout) after 4 (or the pack insert of 6) leaves merged rows and sources,
 * never both counted; the next pass finishes them. A list is emptied only once its sources are gone, and a group holding an
 * unfinished merged row is not compacted again until then, so a deleted merged row can never
 * make rows it replaced visible again (no chains).
 *
 * One compactor for all accounts: services.ts runs it on the partition-0 process node only
 * (or the one `all` node); passes in this process never overlap.
 */
import { randomBytes, toHex } from '@cipherstat/protocol';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { AccountKeys } from '../keyring/index.js';
import type { Logger } from '../logger.js';
import { sealRollup } from '../at-rest/records.js';
import { openRow } from '../rollup/rows.js';
import { decodeAggregate, encodeAggregate, encodeDayPack, forEachInDayPack, mergeInto, type Aggregate } from '../rollup/index.js';
import { DAY_PART_PREFIX, HOUR_MS, dayOf, hourEntry, supersededRefs } from '../rollup/days.js';
import { isCompacted, Supersession, type RowHandle } from '../rollup/supersedes.js';
import {
  COMPACTION_PART_PREFIX,
  type DayToPack,
  type RollupGroupCount,
  type RollupGroupKey,
  type RollupRef,
  type RollupRow,
  type Store,
  type StoredRollup,
  type SupersedingRollup,
  type UnfinishedRollup,
} from '../storage/types.js';
import { LEVEL } from '../rollup/levels.js';

export { COMPACTION_PART_PREFIX };

export const DEFAULT_COMPACTION_INTERVAL_MS = 60_000;
/**
 * Rows a pass opens and merges between two turns of the event loop: compaction runs on the
 * main thread beside ingest, queries and /healthz, and must never hold it for long (a pass
 * opens up to `maxRows` rows: ~0.5 s of CPU at once without slices).
 */
export const COMPACTION_SLICE_ROWS = 500;

export type CompactionStep = 'inserted' | 'packed' | 'deleted' | 'cleared';

export interface CompactorOptions {
  store: Store;
  keyring: { accountKeys(accountId: string): AccountKeys[] | undefined | Promise<AccountKeys[] | undefined> };
  log: Logger;
  /** Counters and a pass-duration histogram are registered here (Prometheus /metrics). */
  registry?: Registry;
  now?: () => number;
  /** Period of the scheduler (default 60 s); 0: no scheduler, passes only through `runPass()`. */
  intervalMs?: number;
  /** Delay before the next pass when a pass stopped at its bounds (default 1 s). */
  catchUpMs?: number;
  /** Most groups one pass looks at (default 2000). */
  maxGroups?: number;
  /** Most rows one pass reads and merges (default 20 000). */
  maxRows?: number;
  /** Most rows of one group merged in one pass (default 2000; the rest in the next passes). */
  maxRowsPerGroup?: number;
  /** How long a pass polls for its queued deletes and list updates to apply (default 10 s). */
  settleMs?: number;
  /**
   * After a complete sweep, the next sweep only looks at groups with a row written since this
   * long before the previous sweep started (default 10 min: covers ticks in flight). The first
   * sweep after start looks at every group.
   */
  windowSlackMs?: number;
  /** Most day packs (level 2) one pass writes (default 2000; 0: none). */
  maxDayPacks?: number;
  /** A UTC day is packed once it ended this long ago (default 15 min; late data only costs a repack). */
  dayPackLagMs?: number;
  /** Rows opened between two turns of the event loop (default COMPACTION_SLICE_ROWS). */
  sliceRows?: number;
  /** Told which accounts a pass changed (query caches). */
  onCompacted?: (accountIds: string[]) => void;
  /** Test seam: called after each write step of a pass; throwing there stops the pass like a crash would. */
  hook?: (step: CompactionStep) => void | Promise<void>;
}

export interface CompactionReport {
  /** Merged rows of earlier, interrupted passes finished in this pass. */
  finished: number;
  /** Merged rows (of this pass or earlier ones) still unfinished at the end of the pass. */
  unfinished: number;
  /** Groups merged into one row each. */
  groups: number;
  /** Source rows merged (and deleted). */
  mergedRows: number;
  /** Merged rows written. */
  writtenRows: number;
  /** Rows that failed to open, decode or merge (or carry other tag pseudonyms than their group): left in place. */
  failedRows: number;
  /**
   * Rows found tampered with: a copy of a row (merged once; the delete removes both), or a row
   * a merged row or pack stored with it already holds (back after its deletion: listed by the
   * new row and deleted, not counted again).
   */
  tamperedRows: number;
  /** Rows of ticks without a processed marker (in flight or orphaned): left in place. */
  unmarkedRows: number;
  /** Groups left alone: no keys (shredded) or no key of their version (wiped), or an unfinished merged row. */
  skippedGroups: number;
  /** Day packs (level 2) written or refreshed. */
  packedDays: number;
  /** The pass stopped at its bounds: more work is waiting. */
  more: boolean;
  /** Turns the pass gave the event loop while opening and merging rows (every `sliceRows` rows). */
  slices: number;
  tookMs: number;
}

interface Sweep {
  /** Only groups with a row written at or after this (undefined: all groups). */
  since: number | undefined;
  startedAt: number;
  after: RollupGroupCount | undefined;
}

const emptyReport = (): CompactionReport => ({
  finished: 0, unfinished: 0, groups: 0, mergedRows: 0, writtenRows: 0, failedRows: 0, tamperedRows: 0, unmarkedRows: 0, skippedGroups: 0, packedDays: 0, more: false, slices: 0, tookMs: 0,
});
const groupId = (g: RollupGroupKey): string => `${g.accountId}\u0000${g.level}\u0000${g.bucket}\u0000${g.metric}\u0000${g.series}`;
const refId = (r: RollupRef): string => `${groupId(r)}\u0000${r.part}`;
const refOf = (r: RollupRef): RollupRef => ({ accountId: r.accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series, part: r.part });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** A queued mutation is not queued again for the same row within this time. */
const REQUEUE_MS = 60_000;
const sameList = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
/** An aggregate decoded; undefined when it does not decode. */
function decoded(payload: Uint8Array): Aggregate | undefined {
  try {
    return decodeAggregate(payload);
  } catch {
    return undefined;
  }
}
const newPart = (prefix: string): string => `${prefix}${toHex(randomBytes(16))}`;
/** (account, metric, UTC day, series) of a row: the scope of a day pack. */
const dayId = (r: RollupGroupKey): string => `${r.accountId}\u0000${r.metric}\u0000${dayOf(r.bucket)}\u0000${r.series}`;

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
  /** `d:`/`c:` + row → when a delete (sources) or a list update (merged rows) was last queued for it. */
  private readonly queued = new Map<string, number>();
  /** Where the next packDays page starts (undefined: at the first day). */
  private packAfter: DayToPack | undefined;
  private readonly m: ReturnType<typeof counters>;

  constructor(private readonly o: CompactorOptions) {
    this.m = counters(o.registry);
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** Rows opened in this pass since the event loop last had a turn. */
  private opened = 0;

  /** Counts `n` rows opened; every `sliceRows` of them, gives the event loop a turn (pending I/O first). */
  private async opening(report: CompactionReport, n = 1): Promise<void> {
    this.opened += n;
    if (this.opened < Math.max(1, this.o.sliceRows ?? COMPACTION_SLICE_ROWS)) return;
    this.opened = 0;
    report.slices++;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Starts the scheduler: a pass at once (call after `Processor.recover()`), then periodically. */
  start(): void {
    const interval = this.o.intervalMs ?? DEFAULT_COMPACTION_INTERVAL_MS;
    if (!this.stopped || interval <= 0) return;
    this.stopped = false;
    this.closing = false;
    const loop = async () => {
      if (this.stopped) return;
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
    const earlier = await this.checkLists(await store.supersedingRollups(maxGroups), report);

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
    const packing = earlier.length === maxGroups ? 'all' : new Set(earlier.filter((r) => r.level === LEVEL.dayPack).map(dayId));
    const merged = taken.length > 0 ? await this.mergeGroups(taken, perGroup, report, packing) : [];

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
      await store.insertRollups(merged);
      report.writtenRows = merged.length;
      for (const m of merged) touched.add(m.accountId);
      await this.o.hook?.('inserted');
      kept = await this.dropIfKeyGone(merged);
    }

    // 5. Sources out, then lists emptied: this pass's merged rows and earlier unfinished ones.
    const finishing = [...earlier, ...kept.map((m) => ({ ...refOf(m), supersedes: m.supersedes ?? [] }))];
    if (finishing.length > 0) {
      const done = await this.finish(earlier, finishing);
      for (const r of earlier) if (done.has(refId(r))) touched.add(r.accountId);
      report.finished = earlier.filter((r) => done.has(refId(r))).length;
      report.unfinished = finishing.length - done.size;
    }

    // 6. Day packs of closed UTC days that have hour rows (never packed, or late data).
    if (await this.packDays(report)) report.more = true;

    // The sweep moves on only after a pass that went through.
    if (sweepDone) {
      this.nextSince = sweep.startedAt - (this.o.windowSlackMs ?? 600_000);
      this.sweep = undefined;
    } else {
      this.sweep = { ...sweep, after };
    }
    if (touched.size) this.o.onCompacted?.([...touched]);
  }

  /**
   * Step 1: a stored `supersedes` list is only compaction's to-do list; what a row replaces is the
   * list it seals (record format 3). Entries the sealed list lacks (storage added them), and the
   * whole list of a row no compaction wrote, are counted as tampered and dropped: step 5 deletes
   * only what the sealed list names, then empties the stored list. Rows of accounts or key versions
   * without keys are left alone (the lifecycle deletes them); a merged row written before format 3
   * seals no list: its stored one is taken as it is.
   */
  private async checkLists(rows: UnfinishedRollup[], report: CompactionReport): Promise<SupersedingRollup[]> {
    const keysOf = new Map<string, AccountKeys[] | undefined>();
    const out: SupersedingRollup[] = [];
    for (const r of rows) {
      if (!keysOf.has(r.accountId)) keysOf.set(r.accountId, await this.o.keyring.accountKeys(r.accountId));
      const key = keysOf.get(r.accountId)?.find((k) => k.version === r.keyVersion);
      if (!key) continue;
      const o = openRow(key.dataKey, r, r.agg);
      const sealed = o && isCompacted(r.part) ? (o.supersedes ?? r.supersedes) : [];
      const kept = r.supersedes.filter((e) => sealed.includes(e));
      if (kept.length < r.supersedes.length) {
        report.tamperedRows++;
        this.o.log.warn({ accountId: r.accountId, level: r.level, bucket: r.bucket, entries: r.supersedes.length - kept.length }, 'rollup compaction: a stored supersedes list names rows its row does not seal; ignored');
      }
      out.push({ ...refOf(r), supersedes: kept });
    }
    return out;
  }

  /** Step 3: the merged row of every taken group that has at least two rows to merge. */
  private async mergeGroups(all: RollupGroupCount[], perGroup: number, report: CompactionReport, packing: Set<string> | 'all'): Promise<RollupRow[]> {
    // Hour rows of closed days go into their day's pack directly (step 6), never into a merged
    // hour row first: the pack is what seals the list naming them, so a row replayed after the
    // pack took it is recognised (a merged hour row would not see the pack's list).
    const closed = (this.o.maxDayPacks ?? 2000) > 0 ? dayOf(this.now() - (this.o.dayPackLagMs ?? 15 * 60_000)) : -Infinity;
    const taken = all.filter((g) => g.level !== LEVEL.hour || g.bucket >= closed);
    if (taken.length === 0) return [];
    const rows = await this.o.store.rollupsOfGroups(taken, perGroup);
    const byGroup = new Map<string, StoredRollup[]>();
    for (const r of rows) {
      const k = groupId(r);
      const list = byGroup.get(k);
      if (list) list.push(r);
      else byGroup.set(k, [r]);
    }
    const keysOf = new Map<string, AccountKeys[] | undefined>();
    const now = this.now();
    const out: RollupRow[] = [];
    for (const g of taken) {
      if (g.level === LEVEL.dayPack) continue; // day packs are not merged: a repack replaces them (packDays)
      if (g.level === LEVEL.hour && (packing === 'all' || packing.has(dayId(g)))) {
        report.skippedGroups++;
        continue;
      }
      const groupRows = byGroup.get(groupId(g)) ?? [];
      if (!keysOf.has(g.accountId)) keysOf.set(g.accountId, await this.o.keyring.accountKeys(g.accountId));
      const keys = keysOf.get(g.accountId);
      if (!keys?.length) {
        // Shredded (or wiped meanwhile): no keys, nothing to open; the lifecycle deletes the rows.
        report.skippedGroups++;
        continue;
      }
      if (groupRows.some((r) => r.supersedes.length > 0)) {
        report.skippedGroups++; // an unfinished merged row: finished first
        continue;
      }
      const versions = new Map<number, StoredRollup[]>();
      for (const r of groupRows) {
        if (!r.marked && !r.part.startsWith(COMPACTION_PART_PREFIX)) {
          report.unmarkedRows++;
          continue;
        }
        const list = versions.get(r.keyVersion);
        if (list) list.push(r);
        else versions.set(r.keyVersion, [r]);
      }
      for (const [version, candidates] of versions) {
        if (candidates.length < 2) continue;
        const key = keys.find((k) => k.version === version);
        if (!key) {
          report.skippedGroups++; // a destroyed key version: a wipe deletes these rows
          continue;
        }
        const merged = await this.merge(g, key.dataKey, candidates, report);
        if (!merged) continue;
        const first = merged.sources[0]!;
        const part = newPart(COMPACTION_PART_PREFIX); // one per row: a list entry names exactly one row
        out.push({
          accountId: g.accountId,
          level: g.level,
          bucket: g.bucket,
          metric: g.metric,
          series: g.series,
          tagKeys: first.tagKeys,
          tagValues: first.tagValues,
          keyVersion: version,
          part,
          supersedes: merged.sources.map((s) => s.part),
          // bound to the tag pseudonyms it is stored with (all sources carry the same ones), its key
          // version and part; the list sealed with it (format 3) is what readers go by
          agg: sealRollup(
            key.dataKey,
            { ...g, tagKeys: first.tagKeys, tagValues: first.tagValues, keyVersion: version, part },
            encodeAggregate(merged.agg),
            merged.sources.map((s) => s.part),
          ),
          writtenAt: now,
          expiresAt: Math.max(...merged.sources.map((s) => s.expiresAt)),
        });
        report.groups++;
        report.mergedRows += merged.sources.length;
      }
    }
    return out;
  }

  /**
   * Step 5 for these merged rows (`earlier` among them: unfinished rows of earlier passes): queue
   * the deletion of their sources still stored, poll until
   * they are gone, then queue emptying the lists of the rows whose sources are all gone and
   * poll until that applied. Returns the rows finished (list empty, or the row itself gone).
   */
  private async finish(earlier: SupersedingRollup[], rows: SupersedingRollup[]): Promise<Set<string>> {
    const { store } = this.o;
    // A ClickHouse server waits for mutations without blocking other statements, and only a
    // wait covers every replica (a reader on a lagging replica must not see a list emptied
    // before its sources are gone there). chDB runs one statement at a time: queue and poll.
    const wait = store.kind === 'remote';
    const sourcesOf = supersededRefs;
    const sources = rows.flatMap(sourcesOf);
    // This pass's sources were just read; only those of earlier passes may be gone already.
    const fresh = new Set(earlier.map(refId));
    let present = [
      ...(earlier.length ? await store.findRollups(earlier.flatMap(sourcesOf)) : []),
      ...rows.filter((r) => !fresh.has(refId(r))).flatMap((r) => sourcesOf(r).map((s) => ({ ...s, supersedes: [] as string[] }))),
    ];
    if (present.length > 0) {
      await store.deleteRollups(this.toQueue('d', present), { wait });
      // Reading the rows is the proof (not the table's mutation list: another mutation — a purge,
      // a retention delete — must not hold this pass up).
      const check = async () => (present = await store.findRollups(sources)).length === 0;
      if (!wait || !(await check())) await this.poll(check);
    }
    const stillThere = new Set(present.map(refId));
    const ready = rows.filter((r) => !sourcesOf(r).some((s) => stillThere.has(refId(s))));
    if (ready.length === 0) return new Set();
    await this.o.hook?.('deleted');
    let state = await store.findRollups(ready.map(refOf));
    const pending = () => state.filter((r) => r.supersedes.length > 0);
    if (pending().length > 0) {
      await store.clearSupersedes(this.toQueue('c', pending().map(refOf)), { wait });
      const check = async () => {
        state = await store.findRollups(ready.map(refOf));
        return pending().length === 0;
      };
      if (!wait || !(await check())) await this.poll(check);
    }
    await this.o.hook?.('cleared');
    const open = new Set(pending().map(refId));
    const done = new Set(ready.map(refId).filter((k) => !open.has(k)));
    for (const r of rows) {
      if (!done.has(refId(r))) continue;
      this.queued.delete(`c:${refId(r)}`);
      for (const src of sourcesOf(r)) this.queued.delete(`d:${refId(src)}`);
    }
    return done;
  }

  /** The rows this mutation (`d`elete, `c`lear) was not queued for in the last minute (by a pass that timed out). */
  private toQueue(op: 'd' | 'c', rows: RollupRef[]): RollupRef[] {
    const t = performance.now();
    for (const [k, at] of this.queued) if (t - at > REQUEUE_MS) this.queued.delete(k);
    const out = rows.filter((r) => !this.queued.has(`${op}:${refId(r)}`));
    for (const r of out) this.queued.set(`${op}:${refId(r)}`, t);
    return out.map(refOf);
  }

  /** Polls `done` (after 100 ms, then less often, up to 1 s apart) until it holds, the settle time is over, or stop(). */
  private async poll(done: () => Promise<boolean>): Promise<boolean> {
    const deadline = performance.now() + (this.o.settleMs ?? 10_000);
    for (let wait = 100; ; wait = Math.min(1000, wait * 2)) {
      if (this.closing || performance.now() > deadline) return false;
      await sleep(wait);
      if (await done()) return true;
    }
  }

  /**
   * A wipe or shred that destroyed a key version during the pass: rows just written under it are
   * unreadable noise the lifecycle may already have swept; delete them here. Returns the others.
   */
  private async dropIfKeyGone(written: RollupRow[]): Promise<RollupRow[]> {
    const fresh = new Map<string, AccountKeys[] | undefined>();
    const kept: RollupRow[] = [];
    const gone: RollupRow[] = [];
    for (const m of written) {
      if (!fresh.has(m.accountId)) fresh.set(m.accountId, await this.o.keyring.accountKeys(m.accountId));
      (fresh.get(m.accountId)?.some((k) => k.version === m.keyVersion) ? kept : gone).push(m);
    }
    if (gone.length) {
      await this.o.store.deleteRollups(gone.map(refOf));
      this.o.log.info({ rows: gone.length }, 'rollup compaction: key version destroyed during the pass; rows written removed');
    }
    return kept;
  }

  /**
   * Step 6 (rollup/days.ts): packs the hour rows of closed UTC days into one row per (day, metric,
   * series, key version), together with the day's pack when there is one (late data: a repack).
   * The pack lists what it holds in `supersedes`; those rows are then deleted and the list
   * emptied (`finish`), the same steps as for merged rows, so a crash never counts anything
   * twice. Only rows whose tick finished (a processed marker) or that compaction wrote are
   * packed; a day with an unfinished merged row or pack waits until that is finished; rows that
   * fail to open stay where they are (counted). Returns whether more days are waiting.
   */
  private async packDays(report: CompactionReport): Promise<boolean> {
    const limit = this.o.maxDayPacks ?? 2000;
    if (limit <= 0) return false;
    const { store } = this.o;
    const closed = dayOf(this.now() - (this.o.dayPackLagMs ?? 15 * 60_000));
    // Pages in key order, resumed after the last day of the previous page (wrapping round after
    // a short page): days that cannot be packed (no keys, rows that fail to open) never hold up
    // the ones after them.
    const todo = await store.daysToPack({ closed, after: this.packAfter, limit });
    this.packAfter = todo.length === limit ? todo.at(-1) : undefined;
    if (todo.length === 0) return false;
    const byAccount = new Map<string, typeof todo>();
    for (const r of todo) {
      const list = byAccount.get(r.accountId);
      if (list) list.push(r);
      else byAccount.set(r.accountId, [r]);
    }
    const now = this.now();
    const written: RollupRow[] = [];
    for (const [accountId, days] of byAccount) {
      const keys = await this.o.keyring.accountKeys(accountId);
      if (!keys?.length) continue;
      // Each day's rows are read by one statement (one snapshot): a pack holds exactly the rows it lists.
      const rows = await store.rollupsOfDays(accountId, days);
      const groups = new Map<string, typeof rows>();
      for (const r of rows) {
        const k = `${r.metric}|${dayOf(r.bucket)}|${r.series}|${r.keyVersion}`;
        const list = groups.get(k);
        if (list) list.push(r);
        else groups.set(k, [r]);
      }
      for (const list of groups.values()) {
        await this.opening(report, list.length);
        const version = list[0]!.keyVersion;
        const key = keys.find((k) => k.version === version);
        const packs = list.filter((r) => r.level === LEVEL.dayPack);
        if (!key || list.some((r) => r.supersedes.length > 0)) {
          report.skippedGroups++; // a destroyed key version, or not what compaction leaves: left alone
          continue;
        }
        const first = packs[0] ?? list[0]!;
        const day = dayOf(first.bucket);
        const id = { accountId, bucket: day, metric: first.metric, series: first.series, tagKeys: first.tagKeys, tagValues: first.tagValues };
        // Every row of the day opened first: the lists sealed in the pack and in merged hour rows
        // say which rows came back after they took them (listed again below, not counted again).
        const day_ = new Supersession();
        const opened: { r: (typeof rows)[number]; h: RowHandle; payload: Uint8Array }[] = [];
        let broken = false;
        for (const r of list) {
          const level = r.level as typeof LEVEL.hour | typeof LEVEL.dayPack;
          if (level === LEVEL.hour && !r.marked) {
            report.unmarkedRows++;
            continue;
          }
          const o = level === LEVEL.dayPack || (sameList(r.tagKeys, first.tagKeys) && sameList(r.tagValues, first.tagValues))
            ? openRow(key.dataKey, { ...id, level, bucket: r.bucket, tagKeys: r.tagKeys, tagValues: r.tagValues, keyVersion: version, part: r.part }, r.agg)
            : null; // other tag pseudonyms than its series: not what the processor writes
          if (!o) {
            report.failedRows++;
            if (level === LEVEL.dayPack) broken = true;
            continue;
          }
          // a copy storage made of a row (counted): packed once, the delete removes both
          const h = day_.add(r.part, level, r.bucket, r.metric, r.series, version, o);
          if (h) opened.push({ r, h, payload: o.payload });
        }
        if (broken) {
          report.tamperedRows += day_.tampered;
          // the day stays as it is: its pack and hour rows are read as they are
          this.o.log.warn({ accountId, day, failedRows: 1 }, 'rollup compaction: a day pack failed to open; day left as it is');
          continue;
        }
        const hourAggs = new Map<number, Aggregate>();
        const addHour = (h: number, agg: Aggregate) => {
          const cur = hourAggs.get(h);
          if (cur) mergeInto(cur, agg);
          else hourAggs.set(h, agg);
        };
        const sources: typeof rows = [];
        let hours = 0;
        const replaced = new Set(opened.filter((o) => day_.replaced(o.h)));
        report.tamperedRows += day_.tampered; // copies, and rows back after this day's pack or merged rows took them
        const current = opened.filter((o) => o.r.level === LEVEL.dayPack && !replaced.has(o));
        if (current.length > 1) {
          report.skippedGroups++; // two packs neither of which replaces the other: not what compaction leaves
          continue;
        }
        if (current[0]) {
          try {
            forEachInDayPack(current[0].payload, (h, bytes) => addHour(h, decodeAggregate(bytes)));
          } catch {
            report.failedRows++;
            this.o.log.warn({ accountId, day, failedRows: 1 }, 'rollup compaction: a day pack failed to decode; day left as it is');
            continue;
          }
        }
        for (const o of opened) {
          if (o === current[0]) {
            sources.push(o.r);
            continue;
          }
          if (replaced.has(o)) {
            sources.push(o.r); // back after a row of this day took it: listed and deleted, not counted again
            hours++;
            continue;
          }
          if (o.r.level === LEVEL.dayPack) continue; // (counted above)
          const agg = decoded(o.payload);
          if (!agg) {
            report.failedRows++;
            continue;
          }
          addHour(Math.floor((o.r.bucket - day) / HOUR_MS), agg);
          sources.push(o.r);
          hours++;
        }
        if (hours === 0) continue; // no hour row to add
        const part = newPart(DAY_PART_PREFIX);
        const supersedes = sources.map((r) => (r.level === LEVEL.dayPack ? r.part : hourEntry(r.bucket, r.part)));
        written.push({
          ...id,
          level: LEVEL.dayPack,
          keyVersion: version,
          part,
          supersedes,
          agg: sealRollup(key.dataKey, { ...id, level: LEVEL.dayPack, keyVersion: version, part }, encodeDayPack([...hourAggs].map(([hour, agg]) => ({ hour, bytes: encodeAggregate(agg) }))), supersedes),
          writtenAt: now,
          expiresAt: Math.max(...sources.map((r) => r.expiresAt)),
        });
      }
    }
    if (written.length > 0) {
      await store.insertRollups(written);
      report.packedDays += written.length;
      await this.o.hook?.('packed');
      const kept = await this.dropIfKeyGone(written);
      const rows = kept.map((r) => ({ ...refOf(r), supersedes: r.supersedes ?? [] }));
      const done = await this.finish([], rows);
      report.unfinished += rows.length - done.size;
      this.o.onCompacted?.([...new Set(kept.map((r) => r.accountId))]);
    }
    return todo.length === limit;
  }

  /**
   * Opens and merges a group's candidate rows (in slices); rows that fail are left out (and stay stored). All
   * are opened first: a row a merged row among them seals in its list came back after that row
   * took it (a replay), so it is listed by the new row (and deleted) without being counted again.
   */
  private async merge(
    g: RollupGroupCount,
    dataKey: Uint8Array,
    candidates: StoredRollup[],
    report: CompactionReport,
  ): Promise<{ agg: Aggregate; sources: StoredRollup[] } | undefined> {
    const group = new Supersession();
    const opened: { r: StoredRollup; h: RowHandle; a: Aggregate }[] = [];
    let failed = 0;
    for (const r of candidates) {
      await this.opening(report);
      // the row's own tag pseudonyms: a row whose tag_values storage rewrote fails here
      const o = openRow(dataKey, { ...g, tagKeys: r.tagKeys, tagValues: r.tagValues, keyVersion: r.keyVersion, part: r.part }, r.agg);
      const a = o ? decoded(o.payload) : undefined;
      if (!a) {
        failed++;
        continue;
      }
      if (opened.length > 0 && !(sameList(r.tagKeys, opened[0]!.r.tagKeys) && sameList(r.tagValues, opened[0]!.r.tagValues))) {
        failed++; // same series pseudonym, other tag pseudonyms: not what the processor writes
        continue;
      }
      // a copy storage made of a row (same part, counted): merged once; the delete removes both
      const h = group.add(r.part, g.level, g.bucket, g.metric, g.series, r.keyVersion, o!);
      if (h) opened.push({ r, h, a });
    }
    let agg: Aggregate | undefined;
    const sources: StoredRollup[] = [];
    for (const { r, h, a } of opened) {
      if (!group.replaced(h)) {
        if (agg === undefined) agg = a;
        else {
          try {
            mergeInto(agg, a); // throws before changing anything
          } catch {
            failed++;
            continue;
          }
        }
      }
      sources.push(r);
    }
    report.tamperedRows += group.tampered;
    if (failed) {
      report.failedRows += failed;
      this.o.log.warn({ accountId: g.accountId, level: g.level, bucket: g.bucket, failedRows: failed }, 'rollup compaction: rows failed to open and were left in place');
    }
    return agg && sources.length >= 2 ? { agg, sources } : undefined;
  }
}
