/**
 * Week (ISO, Monday) and month intervals end to end: seeded points from October 2025 to mid
 * January 2026 posted over HTTP (the clock moved along so every batch is recent), processed
 * into chDB, then queried through POST /v1/query in UTC, Europe/Berlin and America/New_York —
 * before compaction (hour rows) and after it (closed UTC days in day packs) — and checked
 * against a plaintext reference that buckets the points by their local wall date
 * (query-support.ts › localLabel, Intl only, not rollup/time.ts). The data crosses Berlin's
 * fall-back (2025-10-26), New York's (2025-11-02) and the new year, whose ISO week 1 starts on
 * Monday 2025-12-29.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor } from '../src/compaction/compactor.js';
import { createLogger } from '../src/logger.js';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { checkAgainstReference, generatePoints, query, queryServer, type GenPoint, type RefQuery } from './query-support.js';
import { connectionOf } from '../src/storage/index.js';

const H = 3_600_000;
const FROM = Date.UTC(2025, 9, 1); // 2025-10-01
const NOW = Date.UTC(2026, 0, 15, 12); // 2026-01-15T12:00Z
let offset = NOW - Date.now();
const now = () => Date.now() + offset;

let c: TestCollector;
let q: Awaited<ReturnType<typeof queryServer>>;
let a: TestAccount;
const sent = generatePoints(2025, 4000, FROM, NOW - 60_000).sort((x, y) => x.time - y.time);

const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York'];
const SHAPES: Omit<RefQuery, 'aggregation' | 'interval' | 'timezone'>[] = [
  { metric: 'orders' },
  { metric: 'orders', groupBy: ['country', 'channel'] },
  { metric: 'revenue', groupBy: ['country'], filter: { channel: 'web' } },
  { metric: 'page.load', groupBy: ['page'] },
  { metric: 'temperature' },
];
const ALL = ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p90', 'p95', 'p99', 'last'];

/** Wall clock of an instant in a zone (Intl, independent of the collector). */
function wall(ms: number, timeZone: string): { date: string; weekday: string; time: string } {
  const f = new Intl.DateTimeFormat('en-CA', { timeZone, hourCycle: 'h23', weekday: 'short', year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const p = Object.fromEntries(f.formatToParts(ms).map((x) => [x.type, x.value]));
  return { date: `${p.year}-${p.month}-${p.day}`, weekday: p.weekday!, time: `${p.hour}:${p.minute}:${p.second}` };
}

async function checkAll(aggregations: string[], expectLevel?: string, shapes = SHAPES): Promise<number> {
  c.services.queryCache.invalidate([a.accountId]); // answers computed here, not remembered from an earlier check
  let rows = 0;
  for (const timezone of ZONES) {
    for (const interval of ['week', 'month'] as const) {
      for (const aggregation of aggregations) {
        for (const shape of shapes) {
          const rq: RefQuery = { ...shape, aggregation, interval, timezone };
          const r = await query(q.url, a.readToken, { ...rq, from: FROM, to: NOW });
          expect(r.status, JSON.stringify(r.json)).toBe(200);
          expect(r.json.meta.interval).toBe(interval);
          expect(r.json.meta.failedRows).toBe(0);
          expect(r.json.meta.cached).toBe(false);
          if (expectLevel) expect(r.json.meta.level).toBe(expectLevel);
          checkAgainstReference(rq, r.json, sent);
          // every bucket starts at local midnight of a Monday / of the 1st
          for (const s of r.json.series) {
            for (const [t] of s.points as [number, number | null][]) {
              const w = wall(t, timezone);
              expect(w.time).toBe('00:00:00');
              if (interval === 'week') expect(w.weekday).toBe('Mon');
              else expect(w.date.slice(8)).toBe('01');
            }
          }
          rows += r.json.meta.rows;
        }
      }
    }
  }
  return rows;
}

beforeAll(async () => {
  // No scheduled compaction: the pass below is started by hand.
  c = await startTestCollector({ now, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
  q = await queryServer(c);
  a = await createAccount(c, { retentionDays: 3650 }); // rows of 2025 are not expired on the real clock
  // Time-ordered batches, each posted with the clock just after its newest point (points may be
  // at most 30 days old when they arrive).
  for (let i = 0; i < sent.length; i += 400) {
    const batch: GenPoint[] = sent.slice(i, i + 400);
    offset = batch[batch.length - 1]!.time + 60_000 - Date.now();
    const res = await post(c.url, envelope(a, batch.map((p, j) => ({ ...p, id: j })), { createdAt: now() }).bytes);
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
  }
  offset = NOW - Date.now();
});

afterAll(async () => {
  await q?.close();
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('week and month intervals', () => {
  it('match the plaintext reference from hour rows (UTC, Europe/Berlin, America/New_York)', async () => {
    await checkAll(['sum', 'max', 'p95'], 'hour');
  }, 600_000);

  it('match it from day packs after compaction, every aggregation, opening fewer rows', async () => {
    const before = await checkAll(['count']);
    const compactor = new Compactor({ store: c.services.store, keyring: c.services.keyring, log: createLogger({ level: 'silent' }), now, onCompacted: (ids) => c.services.queryCache.invalidate(ids) });
    expect((await compactor.runUntilDone()).packedDays).toBeGreaterThan(0);
    const [stored] = await connectionOf(c.services.store).query<{ packs: string; closedHours: string }>(
      `SELECT countIf(level = 2) AS packs, countIf(level = 1 AND bucket < fromUnixTimestamp64Milli({t:Int64}, 'UTC')) AS closedHours
       FROM rollups WHERE account_id = {a:String}`,
      { a: a.accountId, t: Date.UTC(2026, 0, 15) },
    );
    expect(Number(stored!.packs)).toBeGreaterThan(0);
    expect(Number(stored!.closedHours)).toBe(0); // closed days are answered from their packs only
    const after = await checkAll(['count']);
    expect(after).toBeLessThan(before); // sparse seeded data: a day pack holds few hours of a series here
    await checkAll(ALL, 'hour', SHAPES.slice(1, 4)); // grouped, filtered, a histogram
  }, 600_000);

  it('weeks across a DST change last 169 hours; ISO week 1 of 2026 starts on Monday 2025-12-29', async () => {
    const body = { metric: 'orders', aggregation: 'count', from: '2025-10-20T12:00:00Z', to: '2025-11-09T12:00:00Z' };
    const berlin = (await query(q.url, a.readToken, { ...body, interval: 'week', timezone: 'Europe/Berlin' })).json;
    const starts: number[] = berlin.series[0].points.map(([t]: [number]) => t);
    expect(starts.map((t) => new Date(t).toISOString())).toEqual(['2025-10-19T22:00:00.000Z', '2025-10-26T23:00:00.000Z', '2025-11-02T23:00:00.000Z']);
    expect((starts[1]! - starts[0]!) / H).toBe(169); // holds Sunday 2025-10-26, a 25-hour day
    const ny = (await query(q.url, a.readToken, { ...body, interval: 'week', timezone: 'America/New_York' })).json;
    const nyStarts: number[] = ny.series[0].points.map(([t]: [number]) => t);
    expect(nyStarts.map((t) => new Date(t).toISOString())).toEqual(['2025-10-20T04:00:00.000Z', '2025-10-27T04:00:00.000Z', '2025-11-03T05:00:00.000Z']);
    expect((nyStarts[2]! - nyStarts[1]!) / H).toBe(169); // holds Sunday 2025-11-02
    expect(ny.meta.to).toBe(Date.UTC(2025, 10, 10, 5));

    const year = { metric: 'revenue', aggregation: 'sum', from: '2025-12-20T00:00:00Z', to: '2026-01-10T00:00:00Z', timezone: 'UTC' };
    const weeks = (await query(q.url, a.readToken, { ...year, interval: 'week' })).json;
    expect(weeks.series[0].points.map(([t]: [number]) => new Date(t).toISOString().slice(0, 10))).toEqual(['2025-12-15', '2025-12-22', '2025-12-29', '2026-01-05']);
    const inWeek1 = sent.filter((p) => p.name === 'revenue' && p.time >= Date.UTC(2025, 11, 29) && p.time < Date.UTC(2026, 0, 5));
    expect(inWeek1.some((p) => p.time < Date.UTC(2026, 0, 1)) && inWeek1.some((p) => p.time >= Date.UTC(2026, 0, 1))).toBe(true);
    const want = inWeek1.reduce((s, p) => s + p.value, 0);
    expect(Math.abs(weeks.series[0].points[2][1] - want)).toBeLessThanOrEqual(1e-6 * want);
    const months = (await query(q.url, a.readToken, { ...year, interval: 'month' })).json;
    expect(months.series[0].points.map(([t]: [number]) => t)).toEqual([Date.UTC(2025, 11, 1), Date.UTC(2026, 0, 1)]);
    expect(months.meta.to).toBe(Date.UTC(2026, 1, 1));
  });

  it('a year of months and of weeks is one query; a month in Asia/Kolkata reads quarter-hour rows and quarter packs', async () => {
    const months = await query(q.url, a.readToken, { metric: 'orders', aggregation: 'count', interval: 'month', from: NOW - 365 * 24 * H, to: NOW, groupBy: ['country'] });
    expect(months.status).toBe(200);
    expect(months.json.series[0].points).toHaveLength(13);
    const weeks = await query(q.url, a.readToken, { metric: 'orders', aggregation: 'count', interval: 'week', from: NOW - 365 * 24 * H, to: NOW });
    expect(weeks.status).toBe(200);
    expect(weeks.json.series[0].points).toHaveLength(53);
    const rq: RefQuery = { metric: 'orders', aggregation: 'count', interval: 'month', timezone: 'Asia/Kolkata', groupBy: ['country'] };
    const kolkata = await query(q.url, a.readToken, { ...rq, from: FROM, to: NOW });
    expect(kolkata.json.meta.level).toBe('quarter');
    checkAgainstReference(rq, kolkata.json, sent);
    // a UTC day is read from one kind (its quarter pack, or hour rows and quarter-hour rows only
    // at the hour holding local midnight), never from both packs: about as many rows as UTC months
    const utc = await query(q.url, a.readToken, { ...rq, timezone: 'UTC', from: FROM, to: NOW });
    expect(kolkata.json.meta.rows).toBeLessThan(1.5 * utc.json.meta.rows);
  });
});
