/**
 * Step 3 of a pass (compactor.ts): the rows of each taken group read (rollup/rows.ts) and
 * merged into one row that seals the list of its sources. Only rows whose tick finished or that
 * compaction wrote are merged; rows of different key versions never; rows that fail to open or
 * decode stay where they are (counted).
 */
import type { AccountKeys } from '../keyring/index.js';
import { sealRollup } from '../at-rest/records.js';
import { encodeAggregate, mergeInto, type Aggregate } from '../rollup/index.js';
import { isPack, LEVEL, packOf } from '../rollup/levels.js';
import { compactionRow, RowReader, type CompactionRow } from '../rollup/rows.js';
import { COMPACTION_PART_PREFIX, type RollupGroupCount, type RollupRow, type StoredRollup } from '../storage/types.js';
import { BUSY_MINUTE_GROUP_ROWS, dayId, decoded, groupId, minutesPackedBefore, newPart, packedBefore, sameList, type CompactionReport, type PassContext } from './pass.js';

export class GroupMerger {
  constructor(private readonly c: PassContext) {}

  async mergeGroups(all: RollupGroupCount[], perGroup: number, report: CompactionReport, packing: Set<string> | 'all'): Promise<RollupRow[]> {
    // Hour and quarter-hour rows of packed hours (closed days, today's steps: packedBefore) go
    // into their day's pack directly (step 6), never into a merged row first: the pack is what
    // seals the list naming them, so a row replayed after the pack took it is recognised (a
    // merged row would not see the pack's list).
    // Hour and quarter-hour rows of hours not derived yet are not merged either: their derived rows
    // replace them (derive.ts), and that row's sealed list must name them, not a merged row.
    // Minute rows of hours packed into minute packs (derived hours: minutesPackedBefore) likewise.
    // While ingest is busy, minute groups of a few rows wait (pass.ts BUSY_MINUTE_GROUP_ROWS):
    // their hour's derivation and minute pack read them anyway.
    const derived = all.some((g) => packOf(g.level) !== undefined) ? await this.c.watermark() : 0;
    const packs = (this.c.o.maxDayPacks ?? 2000) > 0;
    const closed = packs ? packedBefore(this.c.o, this.c.now(), derived) : -Infinity;
    const minutesClosed = packs ? minutesPackedBefore(this.c.o, this.c.now(), derived) : -Infinity;
    const minuteRows = packs && this.c.o.busy?.() ? Math.max(2, this.c.o.busyMinuteGroupRows ?? BUSY_MINUTE_GROUP_ROWS) : 2;
    const taken = all.filter((g) => {
      if (g.level !== LEVEL.minute) return packOf(g.level) === undefined || (g.bucket >= closed && g.bucket < derived);
      if (g.bucket < minutesClosed) return false;
      if (g.rows >= minuteRows) return true;
      report.skippedGroups++;
      return false;
    });
    if (taken.length === 0) return [];
    const rows = await this.c.o.store.rollupsOfGroups(taken, perGroup);
    const byGroup = new Map<string, StoredRollup[]>();
    for (const r of rows) {
      const k = groupId(r);
      const list = byGroup.get(k);
      if (list) list.push(r);
      else byGroup.set(k, [r]);
    }
    const keysOf = new Map<string, AccountKeys[] | undefined>();
    const now = this.c.now();
    const out: RollupRow[] = [];
    for (const g of taken) {
      if (isPack(g.level)) continue; // day packs are not merged: a repack replaces them (packDays)
      if (packOf(g.level) !== undefined && (packing === 'all' || packing.has(dayId(g)))) {
        report.skippedGroups++;
        continue;
      }
      const groupRows = byGroup.get(groupId(g)) ?? [];
      if (!keysOf.has(g.accountId)) keysOf.set(g.accountId, await this.c.o.keyring.accountKeys(g.accountId));
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
        const merged = await this.merge(g, version, key.dataKey, candidates, report);
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
   * Opens and merges a group's candidate rows (rollup/rows.ts's reader; the event loop gets a
   * turn every `sliceRows` rows); rows that fail are left out (and stay stored). A row a merged row
   * among them seals in its list came back after that row took it (a replay): it is listed by
   * the new row (and deleted) without being counted again.
   */
  private async merge(
    g: RollupGroupCount,
    version: number,
    dataKey: Uint8Array,
    candidates: StoredRollup[],
    report: CompactionReport,
  ): Promise<{ agg: Aggregate; sources: StoredRollup[] } | undefined> {
    let first: StoredRollup | undefined;
    const sources: StoredRollup[] = [];
    const reader = new RowReader<CompactionRow>({
      accountId: g.accountId,
      dataKey: (v) => (v === version ? dataKey : undefined),
      level: () => g.level,
      // the row's own tag pseudonyms open it (a row whose tag_values storage rewrote fails); the
      // same series pseudonym with other tag pseudonyms is not what the processor writes
      accept: ({ r }) => sameList(r.tagKeys, (first ??= r).tagKeys) && sameList(r.tagValues, first.tagValues),
      replaced: ({ r }) => sources.push(r), // back after a merged row took it: listed, not counted again
    });
    let agg: Aggregate | undefined;
    let failed = 0;
    // a copy storage made of a row (same part, counted): merged once; the delete removes both
    for (const o of reader.rows(candidates.map(compactionRow))) {
      await this.c.opening(report);
      const a = decoded(o.payload);
      try {
        if (!a) throw new Error('undecodable');
        if (agg === undefined) agg = a;
        else mergeInto(agg, a); // throws before changing anything
      } catch {
        failed++;
        continue;
      }
      sources.push(o.row.r);
    }
    failed += reader.failed;
    report.tamperedRows += reader.tampered;
    if (failed) {
      report.failedRows += failed;
      this.c.o.log.warn({ accountId: g.accountId, level: g.level, bucket: g.bucket, failedRows: failed }, 'rollup compaction: rows failed to open and were left in place');
    }
    return agg && sources.length >= 2 ? { agg, sources } : undefined;
  }
}
