/**
 * GET /v1/metrics: what an account has recorded. Metric names and kinds come from the
 * encrypted dictionary; which tag keys and values occur with a metric from the hour
 * rollups and day packs of the last 30 days (ClickHouse counts distinct pseudonyms; labels are
 * decrypted here); the 24-hour volume by opening the hour rollups and day packs of the last 24 hours
 * — minute rollups for the hours whose hour rollups are not derived yet (compaction/derive.ts).
 */
import { decodeAggregate } from '../rollup/index.js';
import { accountContext, allDictionary, lookupDictionary, type QueryDeps } from './context.js';
import { LEVEL, readRows, RowReader } from '../rollup/rows.js';

/** A tag key lists its values when it has at most this many. */
export const MAX_LISTED_VALUES = 100;
const TAGS_WINDOW_MS = 30 * 86_400_000;
const HOUR = 3_600_000;
const VOLUME_ROW_LIMIT = 500_000;

export interface MetricTag {
  key: string;
  /** Distinct values seen in the last 30 days (sorted), or null when there are more than MAX_LISTED_VALUES. */
  values: string[] | null;
  distinctValues: number;
}

export interface MetricInfo {
  name: string;
  kind: string;
  tags: MetricTag[];
  /** Points recorded in the hour buckets from 23 hours before the current hour up to now. */
  points24h: number;
}

export interface MetricsListing {
  metrics: MetricInfo[];
  /** Rejected points and dropped batches, by stable error code, since the account exists. */
  rejects: Record<string, number>;
  /** Hour-rollup rows of the last 24 hours that failed to open (never counted). */
  failedRows: number;
  /** Of those rows, the ones found tampered with and left out (copies, rows back after compaction merged them, forged lists). */
  tamperedRows: number;
  /** Start of the 24-hour volume window (epoch ms). */
  volumeSince: number;
}

export async function listMetrics(deps: QueryDeps & { now?: () => number }, accountId: string): Promise<MetricsListing> {
  const ctx = await accountContext(deps, accountId);
  const now = (deps.now ?? Date.now)();
  const volumeSince = Math.floor(now / HOUR) * HOUR - 23 * HOUR;

  const names = await allDictionary(deps, ctx, 0);
  // Hours from the derivation watermark on have no hour rows yet: their minute rows instead (compaction/derive.ts).
  const minuteFrom = await deps.store.derivedUntil();
  const tagRows = await deps.store.tagValueCounts({ accountId, since: now - TAGS_WINDOW_MS, listed: MAX_LISTED_VALUES, minuteFrom });
  // Like the query engine: the hour rows of the window and the packs of the days it overlaps
  // (their hours inside it), minute rows in the hours not derived yet.
  const volumeRows = readRows(await deps.store.selectRollups({ accountId, level: LEVEL.hour, from: volumeSince, to: volumeSince + 24 * HOUR, minuteFrom, limit: VOLUME_ROW_LIMIT }));

  // Labels of tag keys, and of the values of keys with few values.
  const keyLabels = await lookupDictionary(deps, ctx, 1, new Set(tagRows.map((r) => r.key)));
  const few = tagRows.filter((r) => r.distinct <= MAX_LISTED_VALUES);
  const valueLabels = await lookupDictionary(deps, ctx, 2, new Set(few.flatMap((r) => r.values)));

  // Volume: the rows that count (rows.ts: opened, a copy once, a row a merged row or pack
  // replaces not at all, one pack per day). The metric is part of a row's identity: a series
  // pseudonym depends on the tags only and one processing tick writes one part, so rows of
  // different metrics with the same tags, hour and tick share (level, bucket, series, version, part).
  const volume = new Map<string, number>();
  const reader = new RowReader({
    accountId,
    dataKey: (v) => ctx.byVersion.get(v)?.dataKey,
    level: (r) => {
      if (r.l === LEVEL.dayPack) return LEVEL.dayPack;
      const minutes = r.b >= minuteFrom;
      if (r.l === LEVEL.minutePack) return minutes ? LEVEL.minutePack : 'fail'; // only after storage moved the watermark back
      if (r.l === LEVEL.minute) return minutes ? LEVEL.minute : 'fail';
      return minutes ? 'skip' : LEVEL.hour; // hours not derived yet: counted from their minute rows
    },
  });
  let undecodable = 0;
  const volumeEnd = volumeSince + 24 * HOUR;
  for (const { o, t, bytes } of reader.cells(volumeRows, volumeSince, volumeEnd)) {
    if (o.level === LEVEL.dayPack && t >= minuteFrom) continue;
    let count = 0;
    try {
      count = decodeAggregate(bytes, false).count;
    } catch {
      undecodable++;
      continue;
    }
    volume.set(o.metric, (volume.get(o.metric) ?? 0) + count);
  }
  const failedRows = reader.failed + undecodable;
  const tamperedRows = reader.tampered;

  // One entry per name: key versions give one name several pseudonyms.
  const byName = new Map<string, { kind: string; pseudonyms: string[] }>();
  for (const [p, e] of names.entries) {
    const m = byName.get(e.text);
    if (m) m.pseudonyms.push(p);
    else byName.set(e.text, { kind: e.extra ?? 'unknown', pseudonyms: [p] });
  }
  const tagsOf = new Map<string, typeof tagRows>();
  for (const r of tagRows) {
    const list = tagsOf.get(r.metric);
    if (list) list.push(r);
    else tagsOf.set(r.metric, [r]);
  }
  const metrics: MetricInfo[] = [...byName.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, { kind, pseudonyms }]) => {
      const tags = new Map<string, { values: Set<string> | null; n: number }>();
      for (const r of pseudonyms.flatMap((p) => tagsOf.get(p) ?? [])) {
        const key = keyLabels.entries.get(r.key)?.text;
        if (key === undefined) continue;
        const t = tags.get(key) ?? { values: new Set<string>(), n: 0 };
        tags.set(key, t);
        const n = r.distinct;
        t.n = Math.max(t.n, n);
        if (n > MAX_LISTED_VALUES || t.values === null) t.values = null;
        else for (const v of r.values) {
          const label = valueLabels.entries.get(v)?.text;
          if (label !== undefined) t.values.add(label);
        }
      }
      return {
        name,
        kind,
        tags: [...tags.entries()]
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([key, t]) => {
            const values = t.values && t.values.size <= MAX_LISTED_VALUES ? [...t.values].sort() : null;
            return { key, values, distinctValues: values ? values.length : t.n };
          }),
        points24h: pseudonyms.reduce((n, p) => n + (volume.get(p) ?? 0), 0),
      };
    });

  const failed = names.failed + keyLabels.failed + valueLabels.failed;
  if (failedRows) deps.onFailedRows?.(failedRows);
  if (tamperedRows) deps.onTamperedRows?.(tamperedRows);
  if (failed || failedRows || tamperedRows) deps.log?.warn({ accountId, failedDictionary: failed, failedRows, tamperedRows }, 'metrics listing: entries failed to open or were tampered with');
  return { metrics, rejects: await deps.store.rejects(accountId), failedRows, tamperedRows, volumeSince };
}
