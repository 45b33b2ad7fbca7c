/**
 * Step 6 of a pass (compactor.ts): closed UTC days packed — the hour rows of a (day, metric,
 * series, key version) and its current hour pack, and likewise its quarter-hour rows and
 * quarter pack, opened through rollup/rows.ts, become one day pack of each kind
 * (rollup/days.ts) that seals the list of what it holds; then the finish protocol (finish.ts).
 */
import { sealRollup } from '../at-rest/records.js';
import { decodeAggregate, encodeAggregate, encodeDayPack, forEachInDayPack, mergeInto, type Aggregate } from '../rollup/index.js';
import { DAY_PART_PREFIX, dayOf, slotEntry } from '../rollup/days.js';
import { LEVEL, PACKS, isPack, type PackLevel } from '../rollup/levels.js';
import { openRow } from '../rollup/rows.js';
import { Supersession, type RowHandle } from '../rollup/supersedes.js';
import type { DayToPack, RollupRow } from '../storage/types.js';
import type { FinishProtocol } from './finish.js';
import { decoded, newPart, refOf, sameList, type CompactionReport, type PassContext } from './pass.js';

export class DayPacker {
  /** Per pack level, where the next packDays page starts (undefined: at the first day). */
  private readonly packAfter = new Map<PackLevel, DayToPack | undefined>();

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
    for (const pack of [LEVEL.dayPack, LEVEL.quarterPack] as const) if (await this.packLevel(pack, report)) more = true;
    return more;
  }

  /** Packs the closed days of one kind of pack (hours, quarter hours); whether more are waiting. */
  private async packLevel(packLevel: PackLevel, report: CompactionReport): Promise<boolean> {
    const limit = this.c.o.maxDayPacks ?? 2000;
    if (limit <= 0) return false;
    const { store } = this.c.o;
    const { of: level, slotMs, slots } = PACKS[packLevel];
    const closed = dayOf(this.c.now() - (this.c.o.dayPackLagMs ?? 15 * 60_000));
    // Pages in key order, resumed after the last day of the previous page (wrapping round after
    // a short page): days that cannot be packed (no keys, rows that fail to open) never hold up
    // the ones after them.
    const todo = await store.daysToPack({ closed, after: this.packAfter.get(packLevel), limit, level });
    this.packAfter.set(packLevel, todo.length === limit ? todo.at(-1) : undefined);
    if (todo.length === 0) return false;
    const byAccount = new Map<string, typeof todo>();
    for (const r of todo) {
      const list = byAccount.get(r.accountId);
      if (list) list.push(r);
      else byAccount.set(r.accountId, [r]);
    }
    const now = this.c.now();
    const written: RollupRow[] = [];
    for (const [accountId, days] of byAccount) {
      const keys = await this.c.o.keyring.accountKeys(accountId);
      if (!keys?.length) continue;
      // Each day's rows are read by one statement (one snapshot): a pack holds exactly the rows it lists.
      const rows = await store.rollupsOfDays(accountId, days, level);
      const groups = new Map<string, typeof rows>();
      for (const r of rows) {
        const k = `${r.metric}|${dayOf(r.bucket)}|${r.series}|${r.keyVersion}`;
        const list = groups.get(k);
        if (list) list.push(r);
        else groups.set(k, [r]);
      }
      for (const list of groups.values()) {
        await this.c.opening(report, list.length);
        const version = list[0]!.keyVersion;
        const key = keys.find((k) => k.version === version);
        const packs = list.filter((r) => r.level === packLevel);
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
          if (r.level === level && !r.marked) {
            report.unmarkedRows++;
            continue;
          }
          const o = r.level === packLevel || (sameList(r.tagKeys, first.tagKeys) && sameList(r.tagValues, first.tagValues))
            ? openRow(key.dataKey, { ...id, level: r.level, bucket: r.bucket, tagKeys: r.tagKeys, tagValues: r.tagValues, keyVersion: version, part: r.part }, r.agg)
            : null; // other tag pseudonyms than its series: not what the processor writes
          if (!o) {
            report.failedRows++;
            if (r.level === packLevel) broken = true;
            continue;
          }
          // a copy storage made of a row (counted): packed once, the delete removes both
          const h = day_.add(r.part, r.level, r.bucket, r.metric, r.series, version, o);
          if (h) opened.push({ r, h, payload: o.payload });
        }
        if (broken) {
          report.tamperedRows += day_.tampered;
          // the day stays as it is: its pack and hour rows are read as they are
          this.c.o.log.warn({ accountId, day, failedRows: 1 }, 'rollup compaction: a day pack failed to open; day left as it is');
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
        const current = opened.filter((o) => o.r.level === packLevel && !replaced.has(o));
        if (current.length > 1) {
          report.skippedGroups++; // two packs neither of which replaces the other: not what compaction leaves
          continue;
        }
        if (current[0]) {
          try {
            forEachInDayPack(current[0].payload, (h, bytes) => addHour(h, decodeAggregate(bytes)), slots);
          } catch {
            report.failedRows++;
            this.c.o.log.warn({ accountId, day, failedRows: 1 }, 'rollup compaction: a day pack failed to decode; day left as it is');
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
          if (isPack(o.r.level)) continue; // (counted above)
          const agg = decoded(o.payload);
          if (!agg) {
            report.failedRows++;
            continue;
          }
          addHour(Math.floor((o.r.bucket - day) / slotMs), agg);
          sources.push(o.r);
          hours++;
        }
        if (hours === 0) continue; // no hour row to add
        const part = newPart(DAY_PART_PREFIX);
        const supersedes = sources.map((r) => (r.level === packLevel ? r.part : slotEntry(packLevel, r.bucket, r.part)));
        written.push({
          ...id,
          level: packLevel,
          keyVersion: version,
          part,
          supersedes,
          agg: sealRollup(key.dataKey, { ...id, level: packLevel, keyVersion: version, part }, encodeDayPack([...hourAggs].map(([hour, agg]) => ({ hour, bytes: encodeAggregate(agg) })), slots), supersedes),
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
