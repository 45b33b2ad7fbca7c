/**
 * A step of a pass (compactor.ts), before day packing: hour and quarter-hour rows derived from
 * minute rows. A tick writes minute rows only for points of recent hours (process/tick.ts,
 * LATE_HOUR_MS); once a UTC hour ended DERIVE_LAG_MS ago, this step sums the minute rows of each
 * (account, metric, series, key version, hour) into one hour row and one row per quarter hour
 * with points. Each is a row compaction wrote (part `c:`) that replaces, through the list it
 * seals, every hour-level row its group already holds — rows of old ticks (a rolling upgrade),
 * of late points (written by the tick at all three levels), of an earlier derivation — so a
 * derivation done twice counts nothing twice; then the finish protocol deletes what it replaced.
 *
 * The derivation watermark (`derivedUntil`, storage) says which hours queries read from hour
 * rows: a sweep over [watermark, closed hour) derives every series-hour with minute rows, then
 * moves the watermark to the first hour it could not finish (a row of an unfinished tick or
 * compaction in it) or to its end. Queries read minute rows from the watermark on, hour and
 * quarter-hour rows and day packs before it — never both for one hour. ARCHITECTURE.md, "Hour
 * rows derived from minute rows", says why nothing is lost or counted twice.
 */
import { sealRollup } from '../at-rest/records.js';
import { encodeAggregate, mergeInto, type Aggregate } from '../rollup/index.js';
import { DERIVE_LAG_MS, LEVEL } from '../rollup/levels.js';
import { HOUR_MS } from '../rollup/days.js';
import { compactionRow, RowReader, type CompactionRow } from '../rollup/rows.js';
import { isCompacted } from '../rollup/supersedes.js';
import { COMPACTION_PART_PREFIX, type HourToDerive, type RollupRow, type StoredRollup } from '../storage/types.js';
import type { FinishProtocol } from './finish.js';
import { byAccount, decoded, keysOfAccounts, newPart, refOf, sameList, type CompactionReport, type PassContext } from './pass.js';

const MINUTE_MS = 60_000;
const QUARTER_MS = 900_000;
const hourOf = (t: number): number => t - (((t % HOUR_MS) + HOUR_MS) % HOUR_MS);

interface Sweep {
  from: number;
  to: number;
  after?: HourToDerive;
  /** The first hour the sweep could not finish (the watermark stops there). */
  hold: number;
  /** Held by a compaction not finished yet (the next pass finishes it first): derive again soon. */
  unfinished?: boolean;
}

export class Deriver {
  private sweep: Sweep | undefined;

  constructor(
    private readonly c: PassContext,
    private readonly finisher: FinishProtocol,
  ) {}

  /** One page of the current sweep (a new one when none runs); whether more is waiting. */
  async derive(report: CompactionReport): Promise<boolean> {
    const { store } = this.c.o;
    const limit = Math.max(1, this.c.o.maxGroups ?? 2000);
    if (!this.sweep) {
      const from = await this.c.watermark();
      const to = hourOf(this.c.now() - DERIVE_LAG_MS);
      if (to <= from) return false;
      this.sweep = { from, to, hold: to };
    }
    const sweep = this.sweep;
    const todo = await store.hoursToDerive({ from: sweep.from, to: sweep.to, after: sweep.after, limit });
    const written: RollupRow[] = [];
    const keysOf = await keysOfAccounts(this.c, todo.map((t) => t.accountId));
    // The page's rows of every account at once (one read per run of many accounts, each hour's rows in one read)
    const rowsOf = byAccount(await store.rollupsOfHours(todo.filter((h) => keysOf.has(h.accountId))));
    for (const [accountId, keys] of keysOf) {
      const groups = new Map<string, StoredRollup[]>();
      for (const r of rowsOf.get(accountId) ?? []) {
        const k = `${r.metric}|${hourOf(r.bucket)}|${r.series}|${r.keyVersion}`;
        const list = groups.get(k);
        if (list) list.push(r);
        else groups.set(k, [r]);
      }
      for (const rows of groups.values()) {
        await this.c.opening(report, rows.length);
        const hour = hourOf(rows[0]!.bucket);
        const key = keys.find((k) => k.version === rows[0]!.keyVersion);
        if (!key) continue; // a destroyed key version: a wipe deletes these rows
        // A tick not finished (its markers may still come) or a compaction not finished: later.
        const unmarked = rows.filter((r) => !r.marked).length;
        const unfinished = rows.some((r) => r.supersedes.length > 0);
        if (unmarked > 0 || unfinished) {
          report.unmarkedRows += unmarked;
          if (unfinished) sweep.unfinished = true;
          report.skippedGroups++;
          sweep.hold = Math.min(sweep.hold, hour);
          continue;
        }
        // Minutes packed: the hour was derived before they were (packing stays behind the
        // watermark), and every minute row written for it since is late, written with its own hour
        // and quarter-hour rows by its tick. Deriving it again (a sweep from a watermark storage
        // moved back, or one begun before another node packed the hour) would sum only the minute
        // rows left outside the pack and replace the derived row that counts the packed ones.
        if (rows.some((r) => r.level === LEVEL.minutePack)) continue;
        if (derivedAlready(rows)) continue;
        written.push(...this.deriveHour(rows, hour, key.dataKey, report));
      }
    }
    if (written.length > 0) {
      this.c.o.fence?.();
      await store.insertRollups(written);
      report.writtenRows += written.length;
      await this.c.o.hook?.('derived');
      const kept = await this.finisher.dropIfKeyGone(written);
      const lists = kept.filter((r) => r.supersedes?.length).map((r) => ({ ...refOf(r), supersedes: r.supersedes! }));
      if (lists.length > 0) {
        const done = await this.finisher.finish([], lists);
        report.unfinished += lists.length - done.size;
      }
      this.c.o.onCompacted?.([...new Set(kept.map((r) => r.accountId))]);
    }
    if (todo.length === limit) {
      sweep.after = todo.at(-1);
      return true;
    }
    // The sweep went through: hours before `hold` have complete hour and quarter-hour rows.
    this.sweep = undefined;
    if (sweep.hold > sweep.from) {
      this.c.o.fence?.();
      await store.setDerivedUntil(sweep.hold);
      this.c.moved(sweep.hold);
      await this.c.o.hook?.('watermark');
    }
    // Held by an unfinished compaction: more to do once the next pass finished it. (Held by a
    // tick's rows without markers: recovery or the tick decides; the scheduler's period is soon enough.)
    return sweep.unfinished === true;
  }

  /**
   * The derived rows of one (metric, series, key version, hour): the sum of its minute rows that
   * count, as an hour row and a row per quarter hour, each replacing the group's rows of its
   * level and bucket that count (sealed list). Minute rows that fail to open are left out (a
   * query fails them too) and counted.
   */
  private deriveHour(rows: StoredRollup[], hour: number, dataKey: Uint8Array, report: CompactionReport): RollupRow[] {
    const version = rows[0]!.keyVersion;
    const first = rows.find((r) => r.level === LEVEL.minute) ?? rows[0]!;
    const replaced = new Map<string, StoredRollup[]>(); // `${level}|${bucket}` → rows the derived row replaces
    const replace = (r: StoredRollup) => {
      const k = `${r.level}|${r.bucket}`;
      const list = replaced.get(k);
      if (list) list.push(r);
      else replaced.set(k, [r]);
    };
    const reader = new RowReader<CompactionRow>({
      accountId: first.accountId,
      dataKey: (v) => (v === version ? dataKey : undefined),
      level: ({ r }) => r.level,
      // other tag pseudonyms than its series: not what the processor writes
      accept: ({ r }) => sameList(r.tagKeys, first.tagKeys) && sameList(r.tagValues, first.tagValues),
      replaced: ({ r }) => {
        if (r.level !== LEVEL.minute) replace(r); // back after a merged row took it: listed again and deleted
      },
    });
    let hourAgg: Aggregate | undefined;
    const quarters = new Map<number, Aggregate>();
    // How long rows live after their bucket ends (the account's retention when they were written).
    let keep = 0;
    let undecodable = 0;
    for (const o of reader.rows(rows.map(compactionRow))) {
      const r = o.row.r;
      if (r.level !== LEVEL.minute) {
        replace(r);
        continue;
      }
      // decoded twice: one copy for the hour, one for its quarter hour
      const a = decoded(o.payload);
      const b = decoded(o.payload);
      const q = r.bucket - ((r.bucket - hour) % QUARTER_MS);
      const qa = quarters.get(q);
      try {
        if (!a || !b) throw new Error('undecodable');
        if (hourAgg) mergeInto(hourAgg, a); // throws before changing anything
        if (qa) mergeInto(qa, b); // the same kinds of values as the hour's: does not throw after the hour's went through
        hourAgg ??= a;
        if (!qa) quarters.set(q, b);
      } catch {
        undecodable++;
        continue;
      }
      keep = Math.max(keep, r.expiresAt - (r.bucket + MINUTE_MS));
    }
    report.failedRows += reader.failed + undecodable;
    report.tamperedRows += reader.tampered;
    if (!hourAgg) return []; // no minute row opened: the group's rows stay as they are
    const out: RollupRow[] = [];
    const now = this.c.now();
    const row = (level: typeof LEVEL.hour | typeof LEVEL.quarter, bucket: number, ms: number, agg: Aggregate): RollupRow => {
      const sources = replaced.get(`${level}|${bucket}`) ?? [];
      const supersedes = sources.map((s) => s.part);
      const part = newPart(COMPACTION_PART_PREFIX);
      const id = { accountId: first.accountId, level, bucket, metric: first.metric, series: first.series, tagKeys: first.tagKeys, tagValues: first.tagValues, keyVersion: version, part };
      return {
        ...id,
        supersedes,
        agg: sealRollup(dataKey, id, encodeAggregate(agg), supersedes),
        writtenAt: now,
        expiresAt: Math.max(bucket + ms + keep, ...sources.map((s) => s.expiresAt)),
      };
    };
    out.push(row(LEVEL.hour, hour, HOUR_MS, hourAgg));
    for (const [q, agg] of quarters) out.push(row(LEVEL.quarter, q, QUARTER_MS, agg));
    report.derivedHours++;
    return out;
  }
}

/**
 * Whether a group was derived and nothing came since: its one hour-level row per bucket is a
 * row compaction wrote no later than every other row of the group.
 */
function derivedAlready(rows: StoredRollup[]): boolean {
  const derived = rows.find((r) => r.level === LEVEL.hour && isCompacted(r.part));
  if (!derived) return false;
  const buckets = new Set<string>();
  for (const r of rows) {
    if (r.level === LEVEL.minute) {
      if (r.writtenAt > derived.writtenAt) return false;
      continue;
    }
    const k = `${r.level}|${r.bucket}`;
    if (!isCompacted(r.part) || buckets.has(k)) return false;
    buckets.add(k);
  }
  return true;
}
