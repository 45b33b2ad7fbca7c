/**
 * Rollup compaction end to end: seeded points posted over HTTP in small batches (each its own
 * processing tick, so every bucket and series collects many partial rows), processed into
 * chDB, then compacted. Query answers (every aggregation, grouped, filtered, hour/day/minute/
 * quarter hour, UTC, Asia/Kolkata and Asia/Kathmandu) must be the same before and after, and equal to a plaintext
 * reference, through simulated crashes between the steps of a pass, a real restart, ticks
 * running during passes, rows without a processed marker, tampered rows, and a shred.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { Compactor, type CompactionStep } from '../src/compaction/compactor.js';
import { PACK_STEP_MS } from '../src/compaction/pass.js';
import { listMetrics, runQuery, type QueryResult } from '../src/query/index.js';
import { createLogger } from '../src/logger.js';
import type { RollupRow } from '../src/storage/types.js';
import { openRollup, sealRollup } from '../src/at-rest/records.js';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { checkAgainstReference, expectSameAnswers, generatePoints, type GenPoint, type RefQuery } from './query-support.js';
import { connectionOf } from '../src/storage/index.js';
import { Lease } from '../src/keyring/leases.js';
import { tempDirs } from './support/temp-dirs.js';

const NOW = Date.UTC(2026, 3, 1, 12);
const FROM = NOW - 2 * 86_400_000;
const FAR = Date.UTC(2099, 0, 1); // hand-made rows: not expired by TTL on the real clock
const TODAY = Date.UTC(2026, 3, 1); // the UTC day of NOW: not closed
// today's hours from its last 6-hour step on (PACK_STEP_MS) before NOW: never packed
const UNPACKED = TODAY + PACK_STEP_MS;
const offset = NOW - Date.now();
const now = () => Date.now() + offset;
const silent = createLogger({ level: 'silent' });

let c: TestCollector;
let a: TestAccount;
let b: TestAccount;
const sent = new Map<string, GenPoint[]>();

/** Posts `pts` in batches of `size`, each processed on its own (one tick per batch). */
async function ingest(account: TestAccount, pts: GenPoint[], size = 5): Promise<void> {
  for (let i = 0; i < pts.length; i += size) {
    const batch = pts.slice(i, i + size);
    const res = await post(c.url, envelope(account, batch.map((p, j) => ({ ...p, id: j })), { createdAt: now() }).bytes);
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
    sent.set(account.accountId, [...(sent.get(account.accountId) ?? []), ...batch]);
  }
}

const QUERIES: RefQuery[] = [];
for (const aggregation of ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p95', 'p99', 'last']) {
  for (const shape of [
    { metric: 'orders' },
    { metric: 'orders', groupBy: ['country', 'channel'] },
    { metric: 'revenue', groupBy: ['country'], filter: { channel: 'web' } },
    { metric: 'page.load', groupBy: ['page'] },
    { metric: 'temperature' },
  ]) {
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'UTC' });
    QUERIES.push({ ...shape, aggregation, interval: 'day', timezone: 'Asia/Kolkata' }); // quarter-hour rollups and quarter packs
    QUERIES.push({ ...shape, aggregation, interval: 'hour', timezone: 'Asia/Kathmandu' }); // quarter-hour rollups and quarter packs
  }
}

/** The crash and concurrency tests check fewer aggregations (every shape, both levels). */
const SOME = QUERIES.filter((q) => ['count', 'sum', 'p95', 'last'].includes(q.aggregation));

const deps = () => ({ store: c.services.store, keyring: c.services.keyring });
/** Every answer matches the reference of what was sent, and no row failed. */
async function checkAll(account: TestAccount, queries = SOME): Promise<QueryResult[]> {
  const res: QueryResult[] = [];
  for (const q of queries) {
    const r = await runQuery(deps(), { accountId: account.accountId }, { ...q, from: FROM, to: NOW });
    expect(r.meta.failedRows).toBe(0);
    checkAgainstReference(q, r, sent.get(account.accountId)!);
    res.push(r);
  }
  return res;
}
interface Shape {
  rows: number;
  groups: number;
  pending: number;
}
async function shape(accountId: string): Promise<Shape> {
  const [r] = await connectionOf(c.services.store).query<{ rows: string; groups: string; pending: string }>(
    `SELECT count() AS rows, uniqExact(level, metric, bucket, series) AS groups, countIf(notEmpty(supersedes)) AS pending
     FROM rollups WHERE account_id = {a:String} AND level != 2`,
    { a: accountId },
  );
  return { rows: Number(r!.rows), groups: Number(r!.groups), pending: Number(r!.pending) };
}
/** Hour (or quarter-hour: level 3) rows stored for closed UTC days (compaction packs them into day packs). */
async function closedHourRows(accountId: string, level = 1): Promise<number> {
  const [r] = await connectionOf(c.services.store).query<{ n: string }>(
    `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND level = {l:UInt8} AND bucket < fromUnixTimestamp64Milli({t:Int64}, 'UTC')`,
    { a: accountId, t: TODAY, l: level },
  );
  return Number(r!.n);
}
/** Day packs (level 2: hours; 4: quarter hours) per (day, metric, series, key version), and how many are stored. */
async function dayPacks(accountId: string, level = 2): Promise<{ rows: number; days: number }> {
  const [r] = await connectionOf(c.services.store).query<{ rows: string; days: string }>(
    `SELECT count() AS rows, uniqExact(metric, bucket, series, key_version) AS days FROM rollups WHERE account_id = {a:String} AND level = {l:UInt8}`,
    { a: accountId, l: level },
  );
  return { rows: Number(r!.rows), days: Number(r!.days) };
}

function compactor(
  o: { hook?: (step: CompactionStep) => void | Promise<void>; fence?: () => void; maxRows?: number; maxGroups?: number; maxRowsPerGroup?: number; maxDayPacks?: number; log?: typeof silent } = {},
): Compactor {
  return new Compactor({ store: c.services.store, keyring: c.services.keyring, log: silent, now, ...o });
}
/** Passes until done finish the `pending` merged rows an interrupted pass left: one row per group, the same answers. */
async function finishedByNextPasses(before: QueryResult[], pending: number): Promise<void> {
  const r = await compactor().runUntilDone();
  expect(r.finished).toBe(pending);
  const s2 = await shape(a.accountId);
  expect(s2).toEqual({ rows: s2.groups, groups: s2.groups, pending: 0 });
  expectSameAnswers(before, await checkAll(a));
}
const crashAt = (at: CompactionStep) => (step: CompactionStep) => {
  if (step === at) throw new Error(`simulated crash after step ${step}`);
};

beforeAll(async () => {
  // No scheduled passes: every pass in this file is started by hand.
  c = await startTestCollector({ now, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
  a = await createAccount(c);
  b = await createAccount(c);
  await ingest(a, generatePoints(11, 600, FROM, NOW - 60_000));
  await ingest(b, generatePoints(12, 100, FROM, NOW - 60_000));
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('rollup compaction', () => {
  it('leaves one row per group and the same answers (every aggregation, grouped, filtered)', async () => {
    const before = await checkAll(a, QUERIES);
    const beforeB = await checkAll(b, QUERIES);
    const listing = await listMetrics({ ...deps(), now }, a.accountId); // its 24 hours reach into a closed day
    const s0 = await shape(a.accountId);
    expect(s0.rows).toBeGreaterThan(s0.groups);

    const report = await compactor({ maxRows: 2000, maxGroups: 300, maxDayPacks: 40 }).runUntilDone(); // small bounds: several passes
    expect(report).toMatchObject({ failedRows: 0, unmarkedRows: 0, unfinished: 0, more: false });
    const s1 = await shape(a.accountId);
    // one row per group; the hour rows of closed days are in their day packs now
    expect(s1).toEqual({ rows: s1.groups, groups: s1.groups, pending: 0 });
    expect(s1.groups).toBeLessThan(s0.groups);
    expect(await closedHourRows(a.accountId)).toBe(0);
    expect(await closedHourRows(a.accountId, 3)).toBe(0);
    const sB = await shape(b.accountId);
    expect(sB.rows).toBe(sB.groups);

    const after = await checkAll(a, QUERIES);
    expectSameAnswers(before, after);
    expect(await listMetrics({ ...deps(), now }, a.accountId)).toEqual(listing);
    expect(listing.metrics.find((m) => m.name === 'orders')?.points24h).toBeGreaterThan(0);
    expectSameAnswers(beforeB, await checkAll(b, QUERIES));
    const opened = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.rows, 0);
    expect(opened(after)).toBeLessThan(opened(before));

    // Closed UTC days are packed, one row per (day, metric, series) of each kind (hours, quarter hours).
    expect(report.packedDays).toBeGreaterThan(0);
    const packs = await dayPacks(a.accountId);
    expect(packs.rows).toBe(packs.days);
    expect(packs.rows).toBeGreaterThan(0);
    const quarterPacks = await dayPacks(a.accountId, 4);
    expect(quarterPacks).toEqual(packs); // the same (day, metric, series, key version)s
    // a zone's hours over the closed days open one quarter pack per day and series, as UTC hours open one hour pack
    const zone = (await checkAll(a, [{ metric: 'orders', groupBy: ['country', 'channel'], aggregation: 'sum', interval: 'hour', timezone: 'Asia/Kathmandu' }]))[0]!;
    const utc = (await checkAll(a, [{ metric: 'orders', groupBy: ['country', 'channel'], aggregation: 'sum', interval: 'hour', timezone: 'UTC' }]))[0]!;
    expect(zone.meta.level).toBe('quarter');
    expect(zone.meta.rows).toBeLessThan(4 * utc.meta.rows); // today's rows: 4 quarter hours per hour

    // Nothing left to do; recovery leaves compacted rows and day packs (no processed marker) alone.
    expect(await compactor().runPass()).toMatchObject({ writtenRows: 0, packedDays: 0 });
    expect(await c.services.processor!.recover()).toBe(0);
    expect(await shape(a.accountId)).toEqual(s1);
    expect(await dayPacks(a.accountId)).toEqual(packs);
    expect(await dayPacks(a.accountId, 4)).toEqual(quarterPacks);
  });

  it('day packs: late data for a packed day is counted once, before and after the repack', async () => {
    const x = await createAccount(c);
    const dayStart = Math.floor(NOW / 86_400_000) * 86_400_000 - 86_400_000; // yesterday (closed)
    await ingest(x, generatePoints(19, 200, dayStart - 43_200_000, NOW - 60_000));
    expect((await compactor().runUntilDone()).packedDays).toBeGreaterThan(0);
    const q = { metric: 'orders', aggregation: 'sum', interval: 'hour', from: dayStart - 43_200_000, to: NOW };
    const packed = await runQuery(deps(), { accountId: x.accountId }, q);
    // late points inside the packed day: its pack is stale until the next pass repacks it
    await ingest(x, generatePoints(20, 40, dayStart + 3_600_000, dayStart + 5 * 3_600_000));
    const stale = await checkAll(x);
    const late = await runQuery(deps(), { accountId: x.accountId }, q);
    expect(late.meta.rows).toBeGreaterThan(packed.meta.rows); // the day is read from its hour rows
    const report = await compactor().runUntilDone();
    expect(report.packedDays).toBeGreaterThan(0);
    expectSameAnswers(stale, await checkAll(x));
    const repacked = await runQuery(deps(), { accountId: x.accountId }, q);
    expectSameAnswers([late], [repacked]);
    expect(repacked.meta.rows).toBeLessThan(late.meta.rows);
    expect(repacked.meta.failedRows).toBe(0);
  });

  it('counts nothing twice after a crash between a day pack insert and the deletion of its hour rows', async () => {
    const x = await createAccount(c);
    await ingest(x, generatePoints(21, 150, FROM, NOW - 60_000));
    const before = await checkAll(x);
    await expect(compactor({ hook: crashAt('packed') }).runPass()).rejects.toThrow(/simulated crash/);
    const pendingPacks = async () => {
      const [r] = await connectionOf(c.services.store).query<{ n: string }>(
        'SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND level IN (2, 4) AND notEmpty(supersedes)',
        { a: x.accountId },
      );
      return Number(r!.n);
    };
    expect(await pendingPacks()).toBeGreaterThan(0); // packs written, their hour rows still stored
    expect(await closedHourRows(x.accountId)).toBeGreaterThan(0);
    expect(await closedHourRows(x.accountId, 3)).toBeGreaterThan(0);
    expectSameAnswers(before, await checkAll(x));
    // Late data into the packed days meanwhile: hour groups holding a packed row are not merged
    // until the pack is finished (the pack already counts that row).
    await ingest(x, generatePoints(22, 60, FROM, TODAY - 60_000));
    const late = await checkAll(x);
    const r = await compactor().runUntilDone();
    expect(r.finished).toBeGreaterThan(0);
    expect(await pendingPacks()).toBe(0);
    expect(await closedHourRows(x.accountId)).toBe(0);
    expect(await closedHourRows(x.accountId, 3)).toBe(0);
    expectSameAnswers(late, await checkAll(x));
  });

  it('counts nothing twice after a crash between the merged-row insert and the source delete', async () => {
    await ingest(a, generatePoints(13, 100, FROM, NOW - 60_000)); // new partial rows next to the merged ones
    const before = await checkAll(a);
    const s0 = await shape(a.accountId);

    await expect(compactor({ hook: crashAt('inserted') }).runPass()).rejects.toThrow(/simulated crash/);
    const s1 = await shape(a.accountId);
    expect(s1.pending).toBeGreaterThan(0); // merged rows written, sources still there
    expect(s1.rows).toBe(s0.rows + s1.pending);
    expectSameAnswers(before, await checkAll(a));

    // A real restart on the same data: recovery, then a pass finishes the job.
    await c.close();
    c = await startTestCollector({ now, dataDir: c.dataDir, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
    expect(await c.services.processor!.recover()).toBe(0);
    expectSameAnswers(before, await checkAll(a));
    await finishedByNextPasses(before, s1.pending);
  });

  it('a pass whose compactor lease runs out writes nothing more (fenced by the lease); the next holder finishes it', async () => {
    await ingest(a, generatePoints(23, 100, FROM, NOW - 60_000)); // new partial rows next to the merged ones
    const before = await checkAll(a);
    const s0 = await shape(a.accountId);
    // The fence services.ts gives the compactor of a process node: its lease with a third left.
    // A lease far longer than any pass: it ends when the stall below gives it up, never by the
    // clock (a 300 ms lease once ran out before the first write on a loaded machine).
    const lease = new Lease(tempDirs('cs-compactor-lease-')(), 'compactor', 600_000);
    expect(lease.acquireOrRenew().held).toBe(true);
    let fenced = 0;
    const fence = () => {
      if (!lease.validFor(100)) {
        fenced++;
        throw new Error('compactor lease not valid long enough: pass abandoned');
      }
    };
    // The pass stalls right after its merged-row insert and loses its lease meanwhile (as when it
    // runs out, or another node takes it: validFor is false from then on).
    const stall = async (step: CompactionStep) => {
      if (step !== 'inserted') return;
      expect(lease.validFor(100)).toBe(true); // every write so far was fenced by a valid lease
      lease.release();
    };
    await expect(compactor({ fence, hook: stall }).runPass()).rejects.toThrow(/pass abandoned/);
    expect(fenced).toBe(1); // its next write (the sources' delete) was refused
    const s1 = await shape(a.accountId);
    expect(s1.pending).toBeGreaterThan(0); // merged rows written before, sources untouched after
    expect(s1.rows).toBe(s0.rows + s1.pending);
    expectSameAnswers(before, await checkAll(a));
    // The next holder's passes finish the job.
    await finishedByNextPasses(before, s1.pending);
  });

  it('counts nothing twice after a crash between the source delete and emptying the lists', async () => {
    await ingest(a, generatePoints(14, 60, FROM, NOW - 60_000));
    const before = await checkAll(a);
    await expect(compactor({ hook: crashAt('deleted') }).runPass()).rejects.toThrow(/simulated crash/);
    const s1 = await shape(a.accountId);
    expect(s1.pending).toBeGreaterThan(0);
    // Every source the unfinished merged rows list is gone. (Not "one row per group": whether the
    // late hour rows of the last hour are merged or left to their derivation or day pack depends
    // on where the test clock, running on from NOW, is when this test runs.)
    const [left] = await connectionOf(c.services.store).query<{ n: string }>(
      `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND (level, metric, bucket, series, part) IN
         (SELECT level, metric, bucket, series, arrayJoin(supersedes) FROM rollups WHERE account_id = {a:String} AND notEmpty(supersedes) AND level IN (0, 1, 3))`,
      { a: a.accountId },
    );
    expect(Number(left!.n)).toBe(0);
    expectSameAnswers(before, await checkAll(a));
    const r = await compactor().runPass();
    expect(r.finished).toBe(s1.pending);
    expect((await shape(a.accountId)).pending).toBe(0);
    expectSameAnswers(before, await checkAll(a));
  });

  it('never merges rows whose tick has no processed marker (in flight, or orphaned by a crash)', async () => {
    const x = await createAccount(c);
    await ingest(x, generatePoints(15, 100, FROM, NOW - 60_000));
    // A tick in flight: its rows are stored, its markers not yet. A finished row's aggregate
    // sealed again as a row of a new part without a marker (the part is bound into the row).
    const [row] = await connectionOf(c.services.store).query<{ level: number; b: string; m: string; s: string; v: number; a: string; tk: string[]; tv: string[]; p: string }>(
      `SELECT level, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, key_version AS v,
         base64Encode(agg) AS a, arrayMap(x -> toString(x), tag_keys) AS tk, arrayMap(x -> toString(x), tag_values) AS tv, part AS p
       FROM rollups WHERE account_id = {a:String} AND level = 1 AND bucket >= fromUnixTimestamp64Milli({t:Int64}, 'UTC')
         AND bucket < fromUnixTimestamp64Milli({u:Int64}, 'UTC') LIMIT 1`,
      // an hour before the watermark (merged, not derived again) whenever the test clock, which
      // runs on from NOW, reaches this test: the last hour's rows are late data once NOW + 5 min
      // passed, and not derived or merged before NOW + 11 min (DERIVE_LAG_MS)
      { a: x.accountId, t: UNPACKED, u: NOW - 2 * 3_600_000 },
    );
    const identity = { accountId: x.accountId, level: row!.level as 0 | 1, bucket: Number(row!.b), metric: row!.m, series: row!.s, tagKeys: row!.tk, tagValues: row!.tv, keyVersion: Number(row!.v) };
    const dataKey = c.services.keyring.accountKeys(x.accountId)!.find((k) => k.version === identity.keyVersion)!.dataKey;
    const plain = openRollup(dataKey, { ...identity, part: row!.p }, new Uint8Array(Buffer.from(row!.a, 'base64')))!;
    const part = 'inflight0000000000000000000000000';
    const inflight: RollupRow = { ...identity, part, agg: sealRollup(dataKey, { ...identity, part }, plain), writtenAt: now(), expiresAt: FAR };
    await c.services.store.insertRollups([inflight]);
    const report = await compactor().runUntilDone();
    expect(report.unmarkedRows).toBe(1);
    const group = { accountId: x.accountId, level: inflight.level, bucket: inflight.bucket, metric: inflight.metric, series: inflight.series };
    const left = (await c.services.store.rollupsOfGroups([group], 100)).map((r) => r.part);
    expect(left).toHaveLength(2); // the group's finished rows (merged into one, or one alone) + the unmarked one
    expect(left).toContain(inflight.part);
    const listed = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM rollups WHERE has(supersedes, {p:String})', { p: inflight.part });
    expect(Number(listed[0]!.n)).toBe(0);

    // The tick finishes (its marker lands): the next pass merges the row.
    await c.services.store.markProcessed([{ accountId: x.accountId, batchId: 'f'.repeat(32), processedAt: now(), accepted: 1, rejected: 0, part: inflight.part }]);
    const r2 = await compactor().runUntilDone();
    expect(r2).toMatchObject({ groups: 1, mergedRows: 2, unmarkedRows: 0 });
    expect((await c.services.store.rollupsOfGroups([group], 100)).map((r) => r.part)).toEqual([expect.stringMatching(/^c:/)]);
  });

  it('stays exact while processing ticks run during the passes', async () => {
    const x = await createAccount(c);
    const pts = generatePoints(16, 300, FROM, NOW - 60_000);
    await ingest(x, pts.slice(0, 100));
    let stop = false;
    const passes = (async () => {
      let n = 0;
      while (!stop) {
        await compactor().runPass();
        n++;
      }
      return n;
    })();
    await ingest(x, pts.slice(100));
    stop = true;
    expect(await passes).toBeGreaterThan(0);
    // Tiny bounds: groups merged a few rows at a time over many passes (the sweep revisits them).
    await compactor({ maxRowsPerGroup: 3, maxGroups: 40 }).runUntilDone();
    const s = await shape(x.accountId);
    expect(s).toEqual({ rows: s.groups, groups: s.groups, pending: 0 });
    await checkAll(x);
  });

  it('leaves rows that fail to open in place, and counts them', async () => {
    const x = await createAccount(c);
    await ingest(x, generatePoints(17, 60, FROM, NOW - 60_000));
    // A tampered row in a group with a marked part: garbage ciphertext under a real tick's part.
    const [row] = await connectionOf(c.services.store).query<{ level: number; b: string; m: string; s: string; part: string }>(
      `SELECT level, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, part
       FROM rollups WHERE account_id = {a:String} AND level = 1 AND bucket >= fromUnixTimestamp64Milli({t:Int64}, 'UTC')
         AND bucket < fromUnixTimestamp64Milli({u:Int64}, 'UTC') LIMIT 1`,
      // an hour before the watermark (merged, not derived again) whenever the test clock, which
      // runs on from NOW, reaches this test: the last hour's rows are late data once NOW + 5 min
      // passed, and not derived or merged before NOW + 11 min (DERIVE_LAG_MS)
      { a: x.accountId, t: UNPACKED, u: NOW - 2 * 3_600_000 },
    );
    const group = { accountId: x.accountId, level: row!.level as 0 | 1, bucket: Number(row!.b), metric: row!.m, series: row!.s };
    const bad = 'tampered000000000000000000000000';
    await c.services.store.insertRollups([
      { ...group, tagKeys: [], tagValues: [], keyVersion: 1, part: bad, agg: randomBytes(60), writtenAt: now(), expiresAt: FAR },
    ]);
    await c.services.store.markProcessed([{ accountId: x.accountId, batchId: 'e'.repeat(32), processedAt: now(), accepted: 1, rejected: 0, part: bad }]);
    const report = await compactor({ log: c.services.log }).runUntilDone();
    expect(report.failedRows).toBe(1);
    const left = await c.services.store.rollupsOfGroups([group], 100);
    expect(left).toHaveLength(2); // the good rows (one, or merged into one) and the tampered one
    expect(left.find((r) => r.part === bad)?.agg.length).toBe(60);
    expect(c.logs.join('')).toMatch(/rows failed to open and were left in place/);
    // queries leave it out, as before
    const res = await runQuery(deps(), { accountId: x.accountId }, { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: NOW });
    expect(res.meta.failedRows).toBeLessThanOrEqual(1);
  });

  it('never merges a row whose tag pseudonyms storage rewrote (they are bound into its identity)', async () => {
    const x = await createAccount(c);
    await ingest(x, generatePoints(18, 60, FROM, NOW - 60_000));
    const [row] = await connectionOf(c.services.store).query<{ level: number; b: string; m: string; s: string; tk: string[]; tv: string[]; a: string }>(
      `SELECT level, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s,
         arrayMap(x -> toString(x), tag_keys) AS tk, arrayMap(x -> toString(x), tag_values) AS tv, base64Encode(agg) AS a
       FROM rollups WHERE account_id = {a:String} AND level = 1 AND notEmpty(tag_values) AND bucket >= fromUnixTimestamp64Milli({t:Int64}, 'UTC') LIMIT 1`,
      { a: x.accountId, t: UNPACKED },
    );
    const group = { accountId: x.accountId, level: row!.level as 0 | 1, bucket: Number(row!.b), metric: row!.m, series: row!.s };
    // A genuine ciphertext copied into a second row of its group, its tag values relabelled.
    const moved = 'relabelled0000000000000000000000';
    const tagValues = row!.tv.map((v, i) => (i === 0 ? '12345' : v));
    await c.services.store.insertRollups([
      { ...group, tagKeys: row!.tk, tagValues, keyVersion: 1, part: moved, agg: new Uint8Array(Buffer.from(row!.a, 'base64')), writtenAt: now(), expiresAt: FAR },
    ]);
    await c.services.store.markProcessed([{ accountId: x.accountId, batchId: 'f'.repeat(32), processedAt: now(), accepted: 1, rejected: 0, part: moved }]);
    const report = await compactor().runUntilDone();
    expect(report.failedRows).toBeGreaterThanOrEqual(1); // (the earlier test's tampered row is retried too)
    const left = await c.services.store.rollupsOfGroups([group], 100);
    expect(left).toHaveLength(2); // the genuine row (or its merged row) and the relabelled copy, untouched
    expect(left.find((r) => r.part === moved)?.tagValues).toEqual(tagValues);
    expect(left.filter((r) => r.part !== moved).every((r) => r.tagValues[0] === row!.tv[0])).toBe(true);
    const res = await runQuery(deps(), { accountId: x.accountId }, { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: NOW });
    expect(res.meta.failedRows).toBeLessThanOrEqual(1);
  });

  it('skips shredded accounts (no keys to open them): their rows stay for the purge', async () => {
    const x = await createAccount(c);
    await ingest(x, generatePoints(18, 40, NOW - 3_600_000, NOW - 60_000));
    const s0 = await shape(x.accountId);
    expect(s0.rows).toBeGreaterThan(s0.groups);
    c.services.keyring.shred(x.accountId); // keys gone, purge not run yet
    const r = await compactor().runPass();
    expect(r.skippedGroups).toBeGreaterThan(0);
    expect(await shape(x.accountId)).toEqual(s0);
  });

  it('exports its progress as Prometheus counters', async () => {
    await ingest(b, generatePoints(19, 20, NOW - 3 * 3_600_000, NOW - 60_000)); // today's hours: merged, not packed
    await c.services.compactor!.runUntilDone();
    const text = await c.services.metrics.registry.metrics();
    expect(text).toMatch(/cipherstat_compaction_passes_total\{result="ok"\} [1-9]/);
    expect(text).toMatch(/cipherstat_compaction_rows_total\{outcome="merged"\} [1-9]/);
    await checkAll(b);
  });
});
