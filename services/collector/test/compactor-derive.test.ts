/**
 * Hour and quarter-hour rows derived from minute rows (compaction/derive.ts): ticks write minute
 * rows only for points of recent hours, compaction derives the hour and quarter-hour rows once
 * an hour is closed and moves the derivation watermark, queries read minute rows from the
 * watermark on. Points are posted over HTTP on a moving test clock (one tick per batch), each
 * hour's points while that hour runs; answers (hour, day and minute buckets, UTC, Asia/Kolkata,
 * Asia/Kathmandu) are checked against a plaintext reference before derivation, with derived rows
 * written and the watermark not moved yet, after derivation (today packed in 6-hour steps), with
 * late data after derivation, after packing, and with storage moving the watermark or putting
 * back a row a derived row replaced (after that row went into a pack).
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor, type CompactionStep } from '../src/compaction/compactor.js';
import { PACK_STEP_MS } from '../src/compaction/pass.js';
import { listMetrics, runQuery, type QueryResult } from '../src/query/index.js';
import { createLogger } from '../src/logger.js';
import { connectionOf } from '../src/storage/index.js';
import { DERIVE_LAG_MS, LATE_HOUR_MS, TICK_COMMIT_MAX_MS } from '../src/rollup/levels.js';
import { createAccount, envelope, post, postTicked, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { checkAgainstReference, expectSameAnswers, generatePoints, type GenPoint, type RefQuery } from './query-support.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Date.UTC(2026, 3, 1); // "today"
const FROM = D - DAY; // yesterday 00:00
const silent = createLogger({ level: 'silent' });

// A moving clock set to where a test needs it (ticks, compaction and queries read it).
let offset = 0;
const now = () => Date.now() + offset;
const setClock = (t: number) => {
  offset = t - Date.now();
};

let c: TestCollector;
let a: TestAccount;
const sent: GenPoint[] = [];

/** Posts `pts` in batches of 10 at the clock's time, each processed on its own (one tick per batch). */
const ingest = (account: TestAccount, pts: GenPoint[]): Promise<void> => postTicked(c, account, pts, now, sent);

const QUERIES: RefQuery[] = [];
for (const aggregation of ['count', 'sum', 'p95', 'last']) {
  for (const shape of [{ metric: 'orders' }, { metric: 'orders', groupBy: ['country', 'channel'] }, { metric: 'page.load', groupBy: ['page'] }]) {
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'UTC' });
    QUERIES.push({ ...shape, aggregation, interval: 'day', timezone: 'UTC' });
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'Asia/Kolkata' });
    QUERIES.push({ ...shape, aggregation, interval: 'day', timezone: 'Asia/Kolkata' });
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'Asia/Kathmandu' });
  }
}
QUERIES.push({ metric: 'orders', aggregation: 'sum', interval: 'minute', timezone: 'UTC' });

const deps = () => ({ store: c.services.store, keyring: c.services.keyring });
/** Every answer over [FROM, to) matches the reference of what was sent; no row failed. */
async function checkAll(to: number, queries = QUERIES, pts = sent): Promise<QueryResult[]> {
  const res: QueryResult[] = [];
  for (const q of queries) {
    const from = q.interval === 'minute' ? to - 6 * HOUR : FROM; // at most 10,000 buckets
    const r = await runQuery(deps(), { accountId: a.accountId }, { ...q, from, to });
    expect(r.meta.failedRows).toBe(0);
    checkAgainstReference(q, r, pts);
    res.push(r);
  }
  return res;
}
const opened = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.rows, 0);

/** Rows of the account per level, in [from, to) (default: all). */
async function levels(from = 0, to = 8 * 10 ** 12): Promise<Record<number, number>> {
  const rows = await connectionOf(c.services.store).query<{ l: number; n: string }>(
    `SELECT level AS l, count() AS n FROM rollups WHERE account_id = {a:String}
       AND bucket >= fromUnixTimestamp64Milli({f:Int64}, 'UTC') AND bucket < fromUnixTimestamp64Milli({t:Int64}, 'UTC') GROUP BY level`,
    { a: a.accountId, f: from, t: to },
  );
  return Object.fromEntries(rows.map((r) => [Number(r.l), Number(r.n)]));
}

function compactor(o: { hook?: (step: CompactionStep) => void | Promise<void>; maxGroups?: number } = {}): Compactor {
  return new Compactor({ store: c.services.store, keyring: c.services.keyring, log: silent, now, ...o });
}

// Today's hours 00:00 .. 08:00, each posted while it runs (at hh:56): minute rows only; plus,
// at 08:56, late points of yesterday (written at all three levels by the tick).
const LIVE_HOURS = 8;
beforeAll(async () => {
  setClock(D);
  c = await startTestCollector({ now, config: { compactionIntervalMs: 0 } });
  a = await createAccount(c);
  for (let h = 0; h < LIVE_HOURS; h++) {
    const start = D + h * HOUR;
    setClock(start + 56 * 60_000);
    await ingest(a, generatePoints(100 + h, 60, start, start + 55 * 60_000));
  }
  await ingest(a, generatePoints(99, 60, FROM, D));
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('hour and quarter-hour rows derived from minute rows', () => {
  it('the lags leave room for a tick to commit: DERIVE_LAG_MS > LATE_HOUR_MS + TICK_COMMIT_MAX_MS', () => {
    expect(DERIVE_LAG_MS).toBeGreaterThan(LATE_HOUR_MS + TICK_COMMIT_MAX_MS);
  });

  it('ticks write minute rows only for points of recent hours, all three levels for late points', async () => {
    expect(await levels(D, D + LIVE_HOURS * HOUR)).toEqual({ 0: expect.any(Number) });
    const late = await levels(FROM, D);
    expect(late[0]).toBeGreaterThan(0);
    expect(late[1]).toBeGreaterThan(0);
    expect(late[3]).toBeGreaterThan(0);
    expect(await c.services.store.derivedUntil()).toBe(0); // a new database: nothing derived
  });

  it('answers equal the plaintext reference before derivation, between derived rows and the watermark, after derivation and after packing', async () => {
    const end = D + LIVE_HOURS * HOUR;
    setClock(end + 30 * 60_000);
    const before = await checkAll(end);
    const listing = await listMetrics({ ...deps(), now }, a.accountId);
    const orders24h = sent.filter((p) => p.name === 'orders' && p.time >= listing.volumeSince).reduce((n, p) => n + 1, 0);
    expect(listing.metrics.find((m) => m.name === 'orders')?.points24h).toBe(orders24h);

    // A pass stopped right after its derived rows were written: watermark not moved, the rows
    // they replace still stored. Queries still read minute rows there (never both).
    await expect(compactor({ hook: (s) => { if (s === 'derived') throw new Error('simulated crash'); } }).runPass()).rejects.toThrow(/simulated crash/);
    expect((await levels(D, end))[1]).toBeGreaterThan(0);
    expect(await c.services.store.derivedUntil()).toBe(0);
    expectSameAnswers(before, await checkAll(end));

    // Derivation goes through (from the watermark again: derived rows replace the earlier ones).
    const report = await compactor({ maxGroups: 50 }).runUntilDone(); // small pages: several passes
    expect(report).toMatchObject({ failedRows: 0, unfinished: 0, more: false });
    expect(report.derivedHours).toBe(0); // the stopped pass derived every hour, and nothing came since
    const until = Math.floor((now() - DERIVE_LAG_MS) / HOUR) * HOUR;
    expect(await c.services.store.derivedUntil()).toBe(until);
    // one hour row per series-hour, derived (a `c:` part); yesterday is packed
    const [dup] = await connectionOf(c.services.store).query<{ n: string }>(
      `SELECT count() AS n FROM (SELECT level, bucket, metric, series, count() AS k FROM rollups WHERE account_id = {a:String} AND level IN (1, 3) GROUP BY ALL HAVING k > 1)`,
      { a: a.accountId },
    );
    expect(Number(dup!.n)).toBe(0);
    // the minute rows of derived hours are in minute packs (level 5)
    expect(await levels(FROM, D)).toEqual({ 2: expect.any(Number), 4: expect.any(Number), 5: expect.any(Number) });
    // today (08:30, watermark 08:00) is packed in steps of 6 h: its hours before 06:00 in packs,
    // 06:00 and 07:00 derived rows (PACK_STEP_MS)
    expect(PACK_STEP_MS).toBe(6 * HOUR);
    expect(await levels(D, D + 6 * HOUR)).toEqual({ 2: expect.any(Number), 4: expect.any(Number), 5: expect.any(Number) });
    expect(await levels(D + 6 * HOUR, end)).toEqual({ 1: expect.any(Number), 3: expect.any(Number), 5: expect.any(Number) });
    const after = await checkAll(end);
    expectSameAnswers(before, after);
    expect(opened(after)).toBeLessThan(opened(before));
    expect(await listMetrics({ ...deps(), now }, a.accountId)).toEqual(listing);

    // The next day: today is derived whole and packed.
    setClock(D + DAY + 30 * 60_000);
    await compactor().runUntilDone();
    expect(await levels(D, D + DAY)).toEqual({ 2: expect.any(Number), 4: expect.any(Number), 5: expect.any(Number) });
    expectSameAnswers(before, await checkAll(end));
  });

  it('late data after derivation: counted at once (written at all levels), and after the next passes', async () => {
    setClock(D + DAY + 3.5 * HOUR);
    await compactor().runUntilDone();
    expect(await c.services.store.derivedUntil()).toBe(D + DAY + 3 * HOUR);
    // into a packed day (today, now yesterday), and into a derived hour of the current day
    await ingest(a, generatePoints(200, 40, D + 2 * HOUR, D + 3 * HOUR));
    await ingest(a, generatePoints(201, 20, D + DAY + HOUR, D + DAY + 2 * HOUR));
    expect((await levels(D + DAY + HOUR, D + DAY + 2 * HOUR))[1]).toBeGreaterThan(0);
    const end = D + DAY + 4 * HOUR;
    const late = await checkAll(end);
    await compactor().runUntilDone();
    expectSameAnswers(late, await checkAll(end));
  });

  it('storage moving the watermark: back costs rows read, never a number; forward hides the hours not derived', async () => {
    const end = D + DAY + 4 * HOUR;
    const conn = connectionOf(c.services.store);
    // points of the running hour: minute rows only, not derived yet
    await ingest(a, generatePoints(202, 30, D + DAY + 3 * HOUR, D + DAY + 3 * HOUR + 25 * 60_000));
    const honest = await checkAll(end);
    const real = await c.services.store.derivedUntil();
    expect(real).toBe(D + DAY + 3 * HOUR);
    // back: every hour read from minute rows
    await conn.exec('TRUNCATE TABLE derived');
    expect(await c.services.store.derivedUntil()).toBe(0);
    const back = await checkAll(end);
    expectSameAnswers(honest, back);
    expect(opened(back)).toBeGreaterThan(opened(honest));
    // forward: the hours from the real watermark on answer from hour rows only, which no tick wrote
    await c.services.store.setDerivedUntil(end);
    const hidden = sent.filter((p) => p.time >= real);
    expect(hidden.length).toBeGreaterThan(0);
    await checkAll(end, QUERIES.filter((q) => q.interval === 'hour' && q.timezone === 'UTC'), sent.filter((p) => p.time < real));
    await conn.exec('TRUNCATE TABLE derived');
    await c.services.store.setDerivedUntil(real);
    expectSameAnswers(honest, await checkAll(end));
  });

  it('a row a derived row replaced, put back by storage, is left out and counted', async () => {
    const x = await createAccount(c);
    const conn = connectionOf(c.services.store);
    // hour H written while it ran (minute rows), and late points of hour H − 1 at all three levels
    const H = D + DAY + 6 * HOUR; // the hour before it is after the watermark (03:00): not derived yet
    setClock(H + 56 * 60_000);
    const pts = [...generatePoints(300, 30, H, H + 55 * 60_000), ...generatePoints(301, 30, H - HOUR, H - 10 * 60_000)];
    for (let i = 0; i < pts.length; i += 10) {
      const res = await post(c.url, envelope(x, pts.slice(i, i + 10).map((p, j) => ({ ...p, id: j })), { createdAt: now() }).bytes);
      expect(res.status).toBe(202);
      await c.services.processor!.drain();
    }
    const copy = `SELECT * FROM rollups WHERE account_id = {a:String} AND level = 1 AND NOT startsWith(part, 'c:')`;
    const saved = await conn.query<Record<string, unknown>>(`SELECT count() AS n FROM (${copy})`, { a: x.accountId });
    expect(Number(saved[0]!.n)).toBeGreaterThan(0);
    await conn.exec(`CREATE TABLE kept ENGINE = Memory AS ${copy}`, { a: x.accountId });
    setClock(H + 2 * HOUR);
    await compactor().runUntilDone();
    expect(await c.services.store.derivedUntil()).toBeGreaterThan(H);
    // hour H − 1 (05:00) went into today's pack (the 06:00 step) with its derived rows: the pack's
    // list names the tick's rows those replaced
    const [inRows] = await conn.query<{ n: string }>(
      `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND level IN (1, 3) AND bucket < fromUnixTimestamp64Milli({h:Int64}, 'UTC')`,
      { a: x.accountId, h: H },
    );
    expect(Number(inRows!.n)).toBe(0);
    const q = { metric: 'orders', aggregation: 'sum', interval: 'hour', timezone: 'UTC' } as const;
    const query = () => runQuery(deps(), { accountId: x.accountId }, { ...q, from: H - HOUR, to: H + HOUR });
    const honest = await query();
    checkAgainstReference(q, honest, pts);
    expect(honest.meta.tamperedRows).toBe(0);
    // the tick's hour rows the derived rows replaced come back (a replay from a backup)
    await conn.exec('INSERT INTO rollups SELECT * FROM kept');
    const replayed = await query();
    checkAgainstReference(q, replayed, pts);
    expect(replayed.meta.tamperedRows).toBeGreaterThan(0);
    await conn.exec('DROP TABLE kept');
  });
});

