/**
 * Step 6 of a pass (compactor.ts): closed UTC days packed — the hour rows of a (day, metric,
 * series, key version) and its current hour pack, and likewise its quarter-hour rows and
 * quarter pack, opened through rollup/rows.ts, become one day pack of each kind
 * (rollup/days.ts) that seals the list of what it holds; and derived UTC hours likewise: the
 * minute rows of an (hour, metric, series, key version) and its current minute pack become one
 * minute pack. Then the finish protocol (finish.ts).
 */
import { sealRollup } from '../at-rest/records.js';
import { encodeAggregate, encodeDayPack, mergeInto, type Aggregate } from '../rollup/index.js';
import { DAY_PART_PREFIX, slotEntry } from '../rollup/days.js';
import { LEVEL, PACKS, packUnitStart, type PackLevel } from '../rollup/levels.js';
import { compactionRow, openRow, RowReader, type CompactionRow } from '../rollup/rows.js';
import { isCompacted } from '../rollup/supersedes.js';
import type { DayToPack, RollupRow, StoredRollup } from '../storage/types.js';
import type { FinishProtocol } from './finish.js';
import { BUSY_PACK_RECHECK_MS, byAccount, decoded, keysOfAccounts, newPart, packedBeforeOf, refOf, sameList, type CompactionReport, type PassContext } from './pass.js';

export class DayPacker {
  /** Per pack level, where the next packDays page starts (undefined: at the first day). */
  private readonly packAfter = new Map<PackLevel, DayToPack | undefined>();
  /** Per pack level, the last look from the first day that found nothing: its boundary and when (performance.now()). */
  private readonly quiet = new Map<PackLevel, { closed: number; at: number }>();

  constructor(
    private readonly c: PassContext,
    private readonly finisher: FinishProtocol,
  ) {}

  /**
   * Step 6 (rollup/days.ts): packs the hour rows of closed UTC days into one row per (day, metric,
   * series, key version), together with the day's pack when there is one (late data: a repack).
   * The pack lists what it holds in `supersedes`; those rows are then deleted and the list
   * emptied (`finish`), the same steps as for merged rows, so a crash never counts anything
   * twice. Only rows whose tick finished (a processed marker) or that compaction wrote are
   * packed; a day with an unfinished merged row or pack waits until that is finished; rows that
   * fail to open stay where they are (counted). Returns whether more days are waiting.
   */
  async packDays(report: CompactionReport): Promise<boolean> {
    let more = false;
    for (const pack of [LEVEL.dayPack, LEVEL.quarterPack, LEVEL.minutePack] as const) if (await this.packLevel(pack, report)) more = true;
    return more;
  }

  /** Packs the closed days (hours) of one kind of pack (hours, quarter hours; minutes); whether more are waiting. */
  private async packLevel(packLevel: PackLevel, report: CompactionReport): Promise<boolean> {
    const limit = this.c.o.maxDayPacks ?? 2000;
    if (limit <= 0) return false;
    const { store } = this.c.o;
    const { of: level, slotMs, slots } = PACKS[packLevel];
    // Only hours derived (derive.ts): closed days, and today's hours in steps (packedBefore).
    // Hour rows of later hours (late points of hours not derived yet) stay rows: their
    // derivation replaces them. Minute rows: of derived hours only (minutesPackedBefore), which
    // derivation never reads again.
    const closed = packedBeforeOf(level, this.c.o, this.c.now(), await this.c.watermark());
    const unitOf = (t: number) => packUnitStart(packLevel, t);
    // Pages in key order, resumed after the last day of the previous page (wrapping round after
    // a short page): days that cannot be packed (no keys, rows that fail to open) never hold up
    // the ones after them.
    // While ingest is busy, a level whose last look found nothing at the same boundary is looked
    // at again only after BUSY_PACK_RECHECK_MS (pass.ts): rows before the boundary come only late.
    const after = this.packAfter.get(packLevel);
    const quiet = this.quiet.get(packLevel);
    if (after === undefined && quiet?.closed === closed && performance.now() - quiet.at < BUSY_PACK_RECHECK_MS && this.c.o.busy?.()) return false;
    const todo = await store.daysToPack({ closed, after, limit, level });
    this.packAfter.set(packLevel, todo.length === limit ? todo.at(-1) : undefined);
    if (after === undefined && todo.length === 0) this.quiet.set(packLevel, { closed, at: performance.now() });
    else this.quiet.delete(packLevel);
    if (todo.length === 0) return false;
    const now = this.c.now();
    const written: RollupRow[] = [];
    const keysOf = await keysOfAccounts(this.c, todo.map((t) => t.accountId));
    // Each day's rows are read by one statement (one snapshot): a pack holds exactly the rows it
    // lists. The page's days of every account at once (one read per run of many accounts).
    const read = await store.rollupsOfDays(todo.filter((d) => keysOf.has(d.accountId)), level);
    const rowsOf = byAccount(read.filter((r) => r.level === packLevel || r.bucket < closed));
    for (const [accountId, keys] of keysOf) {
      const rows = rowsOf.get(accountId) ?? [];
      const groups = new Map<string, typeof rows>();
      for (const r of rows) {
        const k = `${r.metric}|${unitOf(r.bucket)}|${r.series}|${r.keyVersion}`;
        const list = groups.get(k);
        if (list) list.push(r);
        else groups.set(k, [r]);
      }
      for (const list of groups.values()) {
        await this.c.opening(report, list.length);
        const version = list[0]!.keyVersion;
        const key = keys.find((k) => k.version === version);
        if (!key || list.some((r) => r.supersedes.length > 0)) {
          report.skippedGroups++; // a destroyed key version, or not what compaction leaves: left alone
          continue;
        }
        const first = list.find((r) => r.level === packLevel) ?? list[0]!;
        const day = unitOf(first.bucket); // a minute pack: its UTC hour
        const id = { accountId, bucket: day, metric: first.metric, series: first.series, tagKeys: first.tagKeys, tagValues: first.tagValues };
        // Every row of the day read by the one reader (rollup/rows.ts): the lists sealed in the
        // pack and in merged rows say which rows came back after they took them (listed again
        // below, not counted again); a pack that fails to open or decode, or a second pack,
        // leaves the day as it is.
        const sources: StoredRollup[] = [];
        let broken = false;
        let added = 0; // rows of `level` counted or listed: without any, the pack stays as it is
        const reader = new RowReader<CompactionRow>({
          accountId,
          dataKey: (v) => (v === version ? key.dataKey : undefined),
          level: ({ r }) => {
            if (r.level === level && !r.marked) {
              report.unmarkedRows++; // a tick in flight or orphaned: never packed
              return 'skip';
            }
            return r.level;
          },
          // other tag pseudonyms than its series: not what the processor writes
          accept: ({ r }) => r.level === packLevel || (sameList(r.tagKeys, first.tagKeys) && sameList(r.tagValues, first.tagValues)),
          failed: ({ r }) => {
            if (r.level === packLevel) broken = true;
          },
          replaced: ({ r }) => {
            sources.push(r); // back after a row of this day took it: listed and deleted, not counted again
            added++;
          },
        });
        const slotAggs = new Map<number, Aggregate>();
        let pack: StoredRollup | undefined;
        let undecodable = 0;
        // a copy storage made of a row (counted): packed once, the delete removes both
        for (const { o, t, bytes } of reader.cells(list.map(compactionRow))) {
          const agg = decoded(bytes);
          const slot = Math.floor((t - day) / slotMs);
          const cur = slotAggs.get(slot);
          try {
            if (!agg) throw new Error('undecodable');
            if (cur) mergeInto(cur, agg); // throws before changing anything
            else slotAggs.set(slot, agg);
          } catch {
            undecodable++;
            if (o.level === packLevel) broken = true;
            continue;
          }
          if (o.level === packLevel) pack = o.row.r;
          else {
            sources.push(o.row.r);
            added++;
          }
        }
        if (pack) sources.push(pack);
        report.failedRows += reader.failed + undecodable;
        report.tamperedRows += reader.tampered; // copies, and rows back after this day's pack or merged rows took them
        if (broken) {
          this.c.o.log.warn({ accountId, day, level: packLevel }, 'rollup compaction: a day pack failed to open or decode, or a second pack is stored; day left as it is');
          continue;
        }
        if (added === 0) continue; // no row to add
        const part = newPart(DAY_PART_PREFIX);
        // Its list also names what its sources replaced (the sealed list of a derived or merged
        // row, of the older pack): once those sources are deleted, a row they replaced that comes
        // back is still named by a list a reader knows (today is packed in steps: packedBefore).
        const listed = new Set(sources.map((r) => (r.level === packLevel ? r.part : slotEntry(packLevel, r.bucket, r.part))));
        for (const r of sources) {
          if (!isCompacted(r.part)) continue;
          for (const e of openRow(key.dataKey, r, r.agg)?.supersedes ?? []) listed.add(r.level === packLevel ? e : slotEntry(packLevel, r.bucket, e));
        }
        const supersedes = [...listed];
        written.push({
          ...id,
          level: packLevel,
          keyVersion: version,
          part,
          supersedes,
          agg: sealRollup(key.dataKey, { ...id, level: packLevel, keyVersion: version, part }, encodeDayPack([...slotAggs].map(([hour, agg]) => ({ hour, bytes: encodeAggregate(agg) })), slots), supersedes),
          writtenAt: now,
          expiresAt: Math.max(...sources.map((r) => r.expiresAt)),
        });
      }
    }
    if (written.length > 0) {
      this.c.o.fence?.();
      await store.insertRollups(written);
      report.packedDays += written.length;
      await this.c.o.hook?.('packed');
      const kept = await this.finisher.dropIfKeyGone(written);
      const rows = kept.map((r) => ({ ...refOf(r), supersedes: r.supersedes ?? [] }));
      const done = await this.finisher.finish([], rows);
      report.unfinished += rows.length - done.size;
      this.c.o.onCompacted?.([...new Set(kept.map((r) => r.accountId))]);
    }
    return todo.length === limit;
  }
}
