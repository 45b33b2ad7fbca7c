/**
 * Minute packs (rollup level 5, compaction/day-packs.ts): once a UTC hour is derived
 * (compaction/derive.ts), compaction packs its minute rows into one row per (hour, metric,
 * series, key version) holding the hour's 60 minute slots, deletes them and empties the pack's
 * list — the finish protocol of day packs. Points are posted over HTTP on a moving test clock
 * (one tick per batch), each hour's points while that hour runs. Answers (minute buckets in UTC
 * and Asia/Kathmandu, hour and day buckets, and the hours a day in Asia/Kolkata reads from
 * minute data when it has no quarter-hour rows) are checked against a plaintext reference and
 * must stay the same: after packing, with late data in a packed hour (before and after the
 * repack), through a crash between a pack's insert and the deletion of its minute rows, with
 * storage putting back a minute row a pack holds, and with storage moving the derivation
 * watermark back (also while late data arrives and compaction sweeps a packed hour again).
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor, type CompactionStep } from '../src/compaction/compactor.js';
import { BUSY_MINUTE_GROUP_ROWS } from '../src/compaction/pass.js';
import { runQuery, type QueryResult } from '../src/query/index.js';
import { createLogger } from '../src/logger.js';
import { connectionOf } from '../src/storage/index.js';
import type { Store } from '../src/storage/types.js';
import { createAccount, postTicked, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { checkAgainstReference, expectSameAnswers, generatePoints, type GenPoint, type RefQuery } from './query-support.js';

const MIN = 60_000;
const HOUR = 3_600_000;
const D = Date.UTC(2026, 3, 1); // "today"
const silent = createLogger({ level: 'silent' });

let offset = 0;
const now = () => Date.now() + offset;
const setClock = (t: number) => {
  offset = t - Date.now();
};

let c: TestCollector;
let a: TestAccount;
const sent: GenPoint[] = [];

/** Posts `pts` in batches of 10 at the clock's time, each processed on its own (one tick per batch). */
const ingest = (account: TestAccount, pts: GenPoint[], into = sent): Promise<void> => postTicked(c, account, pts, now, into);

const QUERIES: RefQuery[] = [];
for (const aggregation of ['count', 'sum', 'p95', 'last']) {
  for (const shape of [{ metric: 'orders' }, { metric: 'orders', groupBy: ['country', 'channel'] }, { metric: 'page.load', groupBy: ['page'] }]) {
    QUERIES.push({ ...shape, aggregation, interval: 'minute', timezone: 'UTC' });
    QUERIES.push({ ...shape, aggregation, interval: 'minute', timezone: 'Asia/Kathmandu' });
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'UTC' });
    QUERIES.push({ ...shape, aggregation, interval: 'day', timezone: 'Asia/Kolkata' });
  }
}
const MINUTES = QUERIES.filter((q) => q.interval === 'minute');

/**
 * The store as a database that held rollup rows before quarter-hour rows existed sees it
 * (migration 7 recorded their start later than this data): days in Asia/Kolkata then read hour
 * data and, in the UTC hour holding local midnight, minute data ('hour+minute'), and hours in
 * Asia/Kolkata minute data ('minute').
 */
const withoutQuarters = (store: Store): Store =>
  new Proxy(store, { get: (t, k) => (k === 'rollupLevelSince' ? async () => Date.now() + 600_000 : Reflect.get(t, k)) });

/** Each of `queries` over [from, to) for the account matches the reference of `pts`; no row failed. */
async function answers(accountId: string, queries: readonly RefQuery[], from: number, to: number, pts: GenPoint[]): Promise<QueryResult[]> {
  const res: QueryResult[] = [];
  for (const q of queries) {
    const r = await runQuery({ store: c.services.store, keyring: c.services.keyring }, { accountId }, { ...q, from, to });
    expect(r.meta.failedRows).toBe(0);
    checkAgainstReference(q, r, pts);
    res.push(r);
  }
  return res;
}

/** Every answer over [D, to) matches the reference of `pts`; no row failed. */
async function checkAll(to: number, o: { account?: TestAccount; pts?: GenPoint[]; queries?: RefQuery[] } = {}): Promise<QueryResult[]> {
  const accountId = (o.account ?? a).accountId;
  const res = await answers(accountId, o.queries ?? QUERIES, D, to, o.pts ?? sent);
  // hours and days in Asia/Kolkata without quarter-hour rows: from minute data where a bucket edge is inside a UTC hour
  const store = withoutQuarters(c.services.store);
  for (const interval of ['hour', 'day'] as const) {
    const q: RefQuery = { metric: 'orders', groupBy: ['country'], aggregation: 'sum', interval, timezone: 'Asia/Kolkata' };
    const r = await runQuery({ store, keyring: c.services.keyring }, { accountId }, { ...q, from: D - 30 * MIN, to: to - 30 * MIN });
    expect(r.meta.level).toBe(interval === 'hour' ? 'minute' : 'hour+minute');
    expect(r.meta.failedRows).toBe(0);
    checkAgainstReference(q, r, o.pts ?? sent);
    res.push(r);
  }
  return res;
}
const opened = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.rows, 0);

/** Rows of an account per level, in [from, to). */
async function levels(from: number, to: number, accountId = a.accountId): Promise<Record<number, number>> {
  const rows = await connectionOf(c.services.store).query<{ l: number; n: string }>(
    `SELECT level AS l, count() AS n FROM rollups WHERE account_id = {a:String}
       AND bucket >= fromUnixTimestamp64Milli({f:Int64}, 'UTC') AND bucket < fromUnixTimestamp64Milli({t:Int64}, 'UTC') GROUP BY level`,
    { a: accountId, f: from, t: to },
  );
  return Object.fromEntries(rows.map((r) => [Number(r.l), Number(r.n)]));
}

/** Minute packs stored, per (hour, metric, series, key version), and those with an unfinished list. */
async function minutePacks(accountId = a.accountId): Promise<{ rows: number; hours: number; pending: number }> {
  const [r] = await connectionOf(c.services.store).query<{ rows: string; hours: string; pending: string }>(
    `SELECT count() AS rows, uniqExact(metric, bucket, series, key_version) AS hours, countIf(notEmpty(supersedes)) AS pending
     FROM rollups WHERE account_id = {a:String} AND level = 5`,
    { a: accountId },
  );
  return { rows: Number(r!.rows), hours: Number(r!.hours), pending: Number(r!.pending) };
}

function compactor(o: { hook?: (step: CompactionStep) => void | Promise<void>; maxGroups?: number; maxDayPacks?: number; busy?: () => boolean } = {}): Compactor {
  return new Compactor({ store: c.services.store, keyring: c.services.keyring, log: silent, now, ...o });
}
const crashAt = (at: CompactionStep) => (step: CompactionStep) => {
  if (step === at) throw new Error(`simulated crash after step ${step}`);
};

// Today's hours 00:00 .. 06:00, each posted while it runs (at hh:56): minute rows only.
const LIVE_HOURS = 7;
beforeAll(async () => {
  setClock(D);
  c = await startTestCollector({ now, config: { compactionIntervalMs: 0 } });
  a = await createAccount(c);
  for (let h = 0; h < LIVE_HOURS; h++) {
    const start = D + h * HOUR;
    setClock(start + 56 * MIN);
    await ingest(a, generatePoints(400 + h, 60, start, start + 55 * MIN));
  }
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('minute packs', () => {
  it('packs the minute rows of derived hours into one minute pack per (hour, metric, series, key version); the same answers, fewer rows opened', async () => {
    const end = D + LIVE_HOURS * HOUR;
    setClock(end + 5 * MIN); // derived up to 06:00 (DERIVE_LAG_MS): hour 06:00 stays minute rows
    const before = await checkAll(end);
    const report = await compactor({ maxGroups: 40 }).runUntilDone(); // small pages: several passes
    expect(report).toMatchObject({ failedRows: 0, unmarkedRows: 0, unfinished: 0, more: false });
    expect(await c.services.store.derivedUntil()).toBe(D + 6 * HOUR);
    // hours 00:00–05:00: no minute row left, one minute pack per (hour, metric, series, key version)
    const packed = await levels(D, D + 6 * HOUR);
    expect(packed[0]).toBeUndefined();
    expect(packed[5]).toBeGreaterThan(0);
    const packs = await minutePacks();
    expect(packs).toEqual({ rows: packs.hours, hours: packs.hours, pending: 0 });
    // the hour not derived yet keeps its minute rows, and gets no pack
    expect(await levels(D + 6 * HOUR, end)).toEqual({ 0: expect.any(Number) });
    const after = await checkAll(end);
    expectSameAnswers(before, after);
    const minuteRows = (rs: QueryResult[]) => opened(rs.slice(0, QUERIES.length).filter((_, i) => QUERIES[i]!.interval === 'minute'));
    expect(minuteRows(after)).toBeLessThan(minuteRows(before)); // sparse test data: a pack holds a few minutes
    // nothing left to do; recovery leaves minute packs (no processed marker) alone
    expect(await compactor().runPass()).toMatchObject({ writtenRows: 0, packedDays: 0 });
    expect(await c.services.processor!.recover()).toBe(0);
    expect(await minutePacks()).toEqual(packs);
  });

  it('late data in a packed hour: counted at once, and once after the repack', async () => {
    const end = D + LIVE_HOURS * HOUR;
    const packs = await minutePacks();
    // late points of 02:00 (written at all three levels by the tick: the hour ended long ago)
    await ingest(a, generatePoints(420, 40, D + 2 * HOUR, D + 3 * HOUR));
    expect((await levels(D + 2 * HOUR, D + 3 * HOUR))[0]).toBeGreaterThan(0);
    const late = await checkAll(end);
    const report = await compactor().runUntilDone();
    expect(report.packedDays).toBeGreaterThan(0);
    expect((await levels(D + 2 * HOUR, D + 3 * HOUR))[0]).toBeUndefined();
    const repacked = await minutePacks();
    expect(repacked).toEqual({ rows: repacked.hours, hours: repacked.hours, pending: 0 });
    expect(repacked.hours).toBeGreaterThanOrEqual(packs.hours);
    expectSameAnswers(late, await checkAll(end));
  });

  it('counts nothing twice after a crash between a minute pack insert and the deletion of its minute rows', async () => {
    // hour 07:00 posted while it runs; at 09:05 hours 06:00 and 07:00 are derived and packed
    setClock(D + 7 * HOUR + 56 * MIN);
    await ingest(a, generatePoints(430, 60, D + 7 * HOUR, D + 7 * HOUR + 55 * MIN));
    const end = D + 8 * HOUR;
    setClock(D + 9 * HOUR + 5 * MIN);
    const before = await checkAll(end);
    // day packs first (today's 06:00 step has nothing new), then the minute packs: stopped right after their insert
    await expect(compactor({ hook: crashAt('packed') }).runPass()).rejects.toThrow(/simulated crash/);
    expect((await minutePacks()).pending).toBeGreaterThan(0); // packs written, their minute rows still stored
    expect((await levels(D + 6 * HOUR, end))[0]).toBeGreaterThan(0);
    expectSameAnswers(before, await checkAll(end));
    // late data into those hours meanwhile: counted once, by the rows, until the next repack
    await ingest(a, generatePoints(431, 30, D + 6 * HOUR, D + 8 * HOUR));
    const late = await checkAll(end);
    // a real restart on the same data, then passes finish the packs and repack the late rows
    await c.close();
    c = await startTestCollector({ now, dataDir: c.dataDir, config: { compactionIntervalMs: 0 } });
    expect(await c.services.processor!.recover()).toBe(0);
    expectSameAnswers(late, await checkAll(end));
    const r = await compactor().runUntilDone();
    expect(r.finished + r.packedDays).toBeGreaterThan(0);
    expect(await minutePacks()).toMatchObject({ pending: 0 });
    expect((await levels(D + 6 * HOUR, end))[0]).toBeUndefined();
    expectSameAnswers(late, await checkAll(end));
  });

  it('a minute row a minute pack holds, put back by storage, is left out and counted', async () => {
    const x = await createAccount(c);
    const pts: GenPoint[] = [];
    const H = D + 10 * HOUR;
    setClock(H + 56 * MIN);
    await ingest(x, generatePoints(440, 40, H, H + 55 * MIN), pts);
    const conn = connectionOf(c.services.store);
    const copy = `SELECT * FROM rollups WHERE account_id = {a:String} AND level = 0`;
    await conn.exec(`CREATE TABLE kept_minutes ENGINE = Memory AS ${copy}`, { a: x.accountId });
    setClock(H + 2 * HOUR);
    await compactor().runUntilDone();
    expect(await levels(H, H + HOUR, x.accountId)).toMatchObject({ 5: expect.any(Number) });
    expect((await levels(H, H + HOUR, x.accountId))[0]).toBeUndefined();
    const queries = MINUTES.filter((q) => q.timezone === 'UTC');
    const check = () => answers(x.accountId, queries, H, H + HOUR, pts);
    const honest = await check();
    expect(honest.every((r) => r.meta.tamperedRows === 0)).toBe(true);
    // the tick's minute rows the pack holds come back (a replay from a backup)
    await conn.exec('INSERT INTO rollups SELECT * FROM kept_minutes');
    const replayed = await check();
    expectSameAnswers(honest, replayed);
    expect(replayed.every((r) => r.meta.tamperedRows > 0)).toBe(true);
    // the next passes delete them again (listed by a repack, never counted twice)
    await compactor().runUntilDone();
    expect((await levels(H, H + HOUR, x.accountId))[0]).toBeUndefined();
    expectSameAnswers(honest, await check());
    await conn.exec('DROP TABLE kept_minutes');
  });

  it('storage moving the watermark back costs rows read, never a number', async () => {
    const end = D + 8 * HOUR;
    const conn = connectionOf(c.services.store);
    const honest = await checkAll(end);
    const real = await c.services.store.derivedUntil();
    await conn.exec('TRUNCATE TABLE derived');
    expect(await c.services.store.derivedUntil()).toBe(0);
    // every hour read from minute data: minute packs where the minute rows were packed
    const back = await checkAll(end);
    expectSameAnswers(honest, back);
    await c.services.store.setDerivedUntil(real);
    expectSameAnswers(honest, await checkAll(end));
  });

  it('storage moving the watermark back, then late data in a packed hour and compaction: an hour whose minutes are packed is not derived again (the late rows came with their own hour rows), nothing lost', async () => {
    const end = D + 8 * HOUR;
    const conn = connectionOf(c.services.store);
    await conn.exec('TRUNCATE TABLE derived');
    // late points of 07:00, an hour derived, its minutes packed, its hour row not in a day pack yet
    // (today's 06:00–12:00 step is not closed): minute, hour and quarter rows from the tick
    const stored = await levels(D + 7 * HOUR, D + 8 * HOUR);
    expect(stored[0]).toBeUndefined();
    expect(stored[1]).toBeGreaterThan(0);
    expect(stored[5]).toBeGreaterThan(0);
    await ingest(a, generatePoints(460, 30, D + 7 * HOUR, D + 8 * HOUR));
    const late = await checkAll(end);
    // the deriver sweeps from the moved watermark: 07:00 has minute rows newer than its derived hour row
    const report = await compactor().runUntilDone();
    expect(report).toMatchObject({ failedRows: 0, unfinished: 0, more: false });
    expect((await levels(D + 7 * HOUR, D + 8 * HOUR))[0]).toBeUndefined(); // repacked
    expectSameAnswers(late, await checkAll(end));
  });

  it('a day in Asia/Kolkata without quarter-hour rows reads the UTC hour holding local midnight from its minute pack', async () => {
    const y = await createAccount(c);
    const pts: GenPoint[] = [];
    for (const h of [17, 18]) {
      setClock(D + h * HOUR + 56 * MIN);
      await ingest(y, generatePoints(450 + h, 60, D + h * HOUR, D + h * HOUR + 55 * MIN), pts);
    }
    const store = withoutQuarters(c.services.store);
    const q: RefQuery = { metric: 'orders', groupBy: ['country'], aggregation: 'sum', interval: 'day', timezone: 'Asia/Kolkata' };
    const ask = async () => {
      const r = await runQuery({ store, keyring: c.services.keyring }, { accountId: y.accountId }, { ...q, from: D, to: D + HOUR });
      expect(r.meta.level).toBe('hour+minute');
      expect(r.meta.failedRows).toBe(0);
      checkAgainstReference(q, r, pts);
      return r;
    };
    setClock(D + 20 * HOUR + 5 * MIN);
    const before = await ask();
    await compactor().runUntilDone();
    // 18:00 UTC holds Kolkata's midnight (18:30): read from its minute pack, the other hours from hour rows
    expect(await levels(D + 18 * HOUR, D + 19 * HOUR, y.accountId)).toMatchObject({ 1: expect.any(Number), 5: expect.any(Number) });
    expect((await levels(D + 18 * HOUR, D + 19 * HOUR, y.accountId))[0]).toBeUndefined();
    expectSameAnswers([before], [await ask()]);
  });

  it('a pass while ingest is busy merges minute groups from BUSY_MINUTE_GROUP_ROWS rows only; the smaller ones later, nothing lost or counted twice', async () => {
    const z = await createAccount(c);
    const pts: GenPoint[] = [];
    const H = D + 22 * HOUR; // a running hour: minute rows only, never derived or packed in this test
    setClock(H + 30 * MIN);
    const at = (minute: number, n: number, seed: number): GenPoint[] =>
      Array.from({ length: n }, (_, i) => ({ kind: 'counter', name: 'orders', value: 1 + ((seed + i) % 3), time: H + minute * MIN + i * 100, tags: { country: 'DE' } }));
    await ingest(z, at(10, 20, 1), pts); // two ticks: a group of 2 rows
    await ingest(z, at(20, BUSY_MINUTE_GROUP_ROWS * 10, 2), pts); // a group of BUSY_MINUTE_GROUP_ROWS rows
    const minuteRows = async (minute: number) =>
      (await levels(H + minute * MIN, H + (minute + 1) * MIN, z.accountId))[0];
    expect([await minuteRows(10), await minuteRows(20)]).toEqual([2, BUSY_MINUTE_GROUP_ROWS]);
    const queries = MINUTES.filter((q) => q.timezone === 'UTC');
    const ask = () => answers(z.accountId, queries, H, H + HOUR, pts);
    const before = await ask();
    const busy = await compactor({ busy: () => true }).runPass();
    expect(busy.skippedGroups).toBeGreaterThanOrEqual(1);
    expect([await minuteRows(10), await minuteRows(20)]).toEqual([2, 1]);
    expectSameAnswers(before, await ask());
    await compactor().runPass(); // ingest quiet: every group of two rows or more
    expect([await minuteRows(10), await minuteRows(20)]).toEqual([1, 1]);
    expectSameAnswers(before, await ask());
  });

  it('a busy pass looks for days to pack again only BUSY_PACK_RECHECK_MS after a look found none at the same boundary; a quiet pass always looks', async () => {
    setClock(D + 22 * HOUR + 35 * MIN); // no boundary (an hour derived, a 6 h step) within the test
    const store = c.services.store;
    const looks: { level: number; found: number }[] = [];
    const counted = new Proxy(store, {
      get: (t, k) => {
        if (k === 'daysToPack') {
          return async (o: Parameters<typeof store.daysToPack>[0]) => {
            const r = await store.daysToPack(o);
            looks.push({ level: o.level ?? 1, found: r.length });
            return r;
          };
        }
        const v = Reflect.get(t, k) as unknown;
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    await compactor().runUntilDone(); // nothing left a pass can pack
    const busy = new Compactor({ store: counted, keyring: c.services.keyring, log: silent, now, busy: () => true });
    await busy.runPass();
    const first = looks.splice(0);
    expect(first.map((l) => l.level).sort()).toEqual([0, 1, 3]);
    expect(first.some((l) => l.found === 0)).toBe(true);
    await busy.runPass(); // looks again only where the first look found days (that it could not pack)
    expect(looks.splice(0).map((l) => l.level).sort()).toEqual(first.filter((l) => l.found > 0).map((l) => l.level).sort());
    await new Compactor({ store: counted, keyring: c.services.keyring, log: silent, now }).runPass();
    expect(looks.splice(0).map((l) => l.level).sort()).toEqual([0, 1, 3]);
  });
});
