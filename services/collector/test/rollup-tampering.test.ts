/**
 * What storage can and cannot do to an answer by adding, copying or relabelling whole rollup
 * rows. Each row's identity (account, level, bucket, metric, series, tag pseudonyms, key version
 * and part) is its associated data (record format 2, src/at-rest/records.ts); rows compaction writes
 * (merged rows, day packs) also seal the list of rows they replace (format 3; 4 since schema 14, in binary), and readers go by
 * that sealed list only (rollup/supersedes.ts). Points go over HTTP through the real processor
 * into chDB; the tampering is SQL on the real table; every answer is compared with the untampered
 * one, before and after compaction of the tampered table.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { Compactor, type CompactionReport } from '../src/compaction/compactor.js';
import { listMetrics, runQuery, type QueryResult } from '../src/query/index.js';
import { WorkerMergers } from '../src/query/mergers.js';
import { createLogger } from '../src/logger.js';
import { openRollupRow } from '../src/at-rest/records.js';
import type { Params } from '../src/storage/types.js';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { expectSameAnswers, generatePoints, type GenPoint } from './query-support.js';
import { connectionOf } from '../src/storage/index.js';

const H = 3_600_000;
const NOW = Date.UTC(2026, 3, 1, 12);
const FROM = NOW - 2 * 86_400_000;
const offset = NOW - Date.now();
const now = () => Date.now() + offset;
let c: TestCollector;
let a: TestAccount;

const QUERIES = ['count', 'sum', 'p95', 'last'].flatMap((aggregation) => [
  { metric: 'orders', aggregation, interval: 'hour', groupBy: ['country'] },
  { metric: 'revenue', aggregation, interval: 'day', timezone: 'Asia/Kolkata' }, // minute rows
  { metric: 'page.load', aggregation, interval: 'day' }, // hour rows, day packs after compaction
  { metric: 'orders', aggregation, interval: 'hour', timezone: 'Asia/Kathmandu' }, // quarter-hour rows
]);
const deps = () => ({ store: c.services.store, keyring: c.services.keyring, now });
// The compiled query workers (what the service uses for all but small reads; two: one query's
// statements merged by both), for every read: their counters are the inline path's, and their
// answers too (sums up to float64 addition order: parts merged by two workers add in another order).
const workers = new WorkerMergers({ url: new URL('../dist/query/worker.js', import.meta.url), size: 2, inlineBytes: 0 });
const ask = async (): Promise<QueryResult[]> => {
  const out: QueryResult[] = [];
  for (const q of QUERIES) {
    const body = { ...q, from: FROM, to: NOW };
    const inline = await runQuery(deps(), { accountId: a.accountId }, body);
    const viaWorkers = await runQuery({ ...deps(), mergers: workers }, { accountId: a.accountId }, body);
    expect(viaWorkers.meta).toEqual(inline.meta);
    expectSameAnswers([inline], [viaWorkers]);
    out.push(inline);
  }
  return out;
};
const failed = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.failedRows, 0);
const tampered = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.tamperedRows, 0);
const sql = (text: string, params: Params = {}) => connectionOf(c.services.store).exec(text, { a: a.accountId, ...params });
const select = <T>(text: string, params: Params = {}) => connectionOf(c.services.store).query<T>(text, { a: a.accountId, ...params });
const listing = () => listMetrics(deps(), a.accountId);
const volume = async () => (await listing()).metrics.map((m) => [m.name, m.points24h]);
const registry = new Registry(); // compaction's Prometheus counters
const compact = async (): Promise<CompactionReport> => {
  const compactor = new Compactor({ store: c.services.store, keyring: c.services.keyring, log: createLogger({ level: 'silent' }), now, registry });
  const first = await compactor.runUntilDone();
  await compactor.runUntilDone(); // groups whose lists a first pass cleaned up are merged now
  return first;
};
const ingest = async (pts: GenPoint[], per: number) => {
  for (let i = 0; i < pts.length; i += per) {
    const res = await post(c.url, envelope(a, pts.slice(i, i + per).map((p, j) => ({ ...p, id: j })), { createdAt: now() }).bytes);
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
  }
};
/** The account's rollup rows as they are now, to go back to after each tampering. */
const save = async (name: string) => {
  await sql(`DROP TABLE IF EXISTS ${name}`);
  await sql(`CREATE TABLE ${name} ENGINE = MergeTree ORDER BY tuple() AS SELECT * FROM rollups WHERE account_id = {a:String}`);
};
const restore = async (name: string) => {
  await sql(`ALTER TABLE rollups DELETE WHERE account_id = {a:String} SETTINGS mutations_sync = 2`);
  await sql(`INSERT INTO rollups SELECT * FROM ${name}`);
};
/** Rows of a group (account, level, metric, bucket, series) that has more than one, as [part of one, part of another], at most `n`. */
const pairs = (where: string, n = 40) =>
  select<{ l: number; m: string; b: string; s: string; p: string; q: string; b2: string }>(
    `SELECT level AS l, toString(metric) AS m, toString(toUnixTimestamp64Milli(bucket)) AS b, toString(series) AS s, ps[1] AS p, ps[2] AS q, '' AS b2
     FROM (SELECT level, metric, bucket, series, groupArray(part) AS ps FROM rollups WHERE account_id = {a:String} AND ${where}
           GROUP BY level, metric, bucket, series HAVING length(ps) > 1)
     LIMIT ${n}`,
  );
/** Sets the stored `supersedes` of one row (the mutation applied before it returns). */
const list = (r: { l: number; m: string; b: string; s: string }, part: string, entries: string[]) =>
  sql(
    `ALTER TABLE rollups UPDATE supersedes = {e:Array(String)}
     WHERE account_id = {a:String} AND level = {l:UInt8} AND metric = toUInt64({m:String}) AND series = toUInt64({s:String})
       AND bucket = fromUnixTimestamp64Milli(toInt64({b:String}), 'UTC') AND part = {p:String}
     SETTINGS mutations_sync = 2`,
    { l: Number(r.l), m: r.m, s: r.s, b: r.b, p: part, e: entries },
  );

beforeAll(async () => {
  // No periodic recovery: it would delete the rows copied under another part (they have no
  // processed marker) at whatever moment its interval fires, between two reads of one answer.
  c = await startTestCollector({ now, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0', CIPHERSTAT_PROCESS_RECOVERY_INTERVAL_MS: '0' } });
  a = await createAccount(c);
  await ingest(generatePoints(11, 300, FROM, NOW), 30);
  // several processing ticks in the same hours and minutes: groups of many rows, merged by compaction
  await ingest(generatePoints(12, 120, NOW - 2 * H, NOW - H - 50 * 60_000), 15);
  await ingest(generatePoints(13, 120, FROM + H, FROM + H + 10 * 60_000), 15);
});
afterAll(async () => {
  await workers.close();
  await c?.stop();
});

/**
 * Copies every row, copies every row under another part, and lists rows in other rows' stored
 * `supersedes`: every answer and the `/v1/metrics` volume stay those of the untampered table, the
 * tampering is counted (`meta.tamperedRows`, or `meta.failedRows` for rows that do not open), and
 * compaction of the tampered table changes no answer either.
 */
async function tamperings(label: string, base: QueryResult[], baseVolume: unknown, packs: boolean): Promise<void> {
  await save('saved_rollups');

  // 1. a copy of every row (same identity): read once
  await sql(`INSERT INTO rollups SELECT * FROM rollups WHERE account_id = {a:String}`);
  let r = await ask();
  expectSameAnswers(base, r); // (float sums up to summation order)
  expect(failed(r), label).toBe(0);
  for (const [i, x] of r.entries()) expect(x.meta.tamperedRows, `${label} copy ${JSON.stringify(QUERIES[i])}`).toBeGreaterThan(0);
  expect(await volume()).toEqual(baseVolume); // the catalog's 24-hour volume counts each row once too
  expect((await listing()).tamperedRows).toBeGreaterThan(0);
  let report = await compact();
  expect(report.tamperedRows, label).toBeGreaterThan(0);
  expectSameAnswers(base, await ask());
  await restore('saved_rollups');

  // 2. every row copied under another part (a compaction part stays one): does not open
  await sql(`INSERT INTO rollups SELECT * REPLACE (concat(part, 'x') AS part) FROM rollups WHERE account_id = {a:String}`);
  r = await ask();
  expectSameAnswers(base, r);
  for (const [i, x] of r.entries()) expect(x.meta.failedRows, `${label} re-part ${JSON.stringify(QUERIES[i])}`).toBeGreaterThan(0);
  expect(tampered(r)).toBe(0);
  expect(await volume()).toEqual(baseVolume);
  report = await compact();
  expect(report.failedRows + report.unmarkedRows).toBeGreaterThan(0); // (a tick row under another part has no processed marker)
  expectSameAnswers(base, await ask());
  await restore('saved_rollups');

  // 3. a row listed in another row's stored `supersedes`: in every group of two or more rows,
  // one row lists the other; with packs, every pack lists the hour rows of its day beside it
  const listed = await pairs('1');
  expect(listed.length, `${label}: groups of several rows`).toBeGreaterThan(0);
  for (const g of listed) await list(g, g.p, [g.q]);
  let packLists = 0;
  if (packs) {
    const late = await select<{ m: string; d: string; s: string; v: number; pack: string; entries: string[] }>(
      `SELECT toString(p.metric) AS m, toString(toUnixTimestamp64Milli(p.bucket)) AS d, toString(p.series) AS s, p.part AS pack,
         groupArray(concat(toString(intDiv(toUnixTimestamp64Milli(h.bucket) - toUnixTimestamp64Milli(p.bucket), 3600000)), '/', h.part)) AS entries
       FROM rollups AS p INNER JOIN rollups AS h
         ON h.account_id = p.account_id AND h.metric = p.metric AND h.series = p.series AND h.key_version = p.key_version
       WHERE p.account_id = {a:String} AND p.level = 2 AND h.level = 1 AND toStartOfDay(h.bucket) = p.bucket
       GROUP BY p.metric, p.bucket, p.series, p.part`,
    );
    for (const p of late) {
      await list({ l: 2, m: p.m, b: p.d, s: p.s }, p.pack, p.entries);
      packLists++;
    }
    expect(packLists, `${label}: packs with hour rows beside them`).toBeGreaterThan(0);
  }
  r = await ask();
  expectSameAnswers(base, r);
  expect(failed(r)).toBe(0);
  expect(tampered(r), label).toBeGreaterThan(0);
  expect(await volume()).toEqual(baseVolume);
  report = await compact(); // deletes nothing a list names only in storage
  expect(report.tamperedRows, label).toBeGreaterThan(0);
  expectSameAnswers(base, await ask());
  await restore('saved_rollups');
}

let untampered: QueryResult[];

it('tick rows (record format 2): a copy, a copy under another part, a row listed in another row\'s supersedes move no number and are counted', async () => {
  untampered = await ask();
  expect(failed(untampered)).toBe(0);
  expect(tampered(untampered)).toBe(0);
  const baseVolume = await volume();
  expect(baseVolume.some(([, n]) => Number(n) > 0)).toBe(true);
  await tamperings('tick rows', untampered, baseVolume, false);
  expectSameAnswers(untampered, await ask()); // restored
}, 600_000);

it('merged rows and day packs (record formats 3 and 4): the same tamperings, and rows replayed after compaction deleted them, move no number and are counted', async () => {
  await save('before_compaction');
  const report = await compact();
  expect(report.writtenRows).toBeGreaterThan(0);
  expect(report.packedDays).toBeGreaterThan(0);
  expect(report.tamperedRows).toBe(0);
  expectSameAnswers(untampered, await ask());
  const kinds = await select<{ packs: string; merged: string; open: string }>(
    `SELECT countIf(level = 2) AS packs, countIf(level < 2 AND startsWith(part, 'c:')) AS merged, countIf(notEmpty(supersedes)) AS open
     FROM rollups WHERE account_id = {a:String}`,
  );
  expect(Number(kinds[0]!.packs)).toBeGreaterThan(0);
  expect(Number(kinds[0]!.merged)).toBeGreaterThan(0);
  expect(Number(kinds[0]!.open)).toBe(0); // every stored list emptied: only the sealed ones say what was merged

  // late data for the packed days and more for today: hour rows beside packs, tick rows beside merged rows
  await ingest(generatePoints(14, 60, FROM, FROM + 20 * H), 20);
  await ingest(generatePoints(15, 60, NOW - 2 * H, NOW - H - 50 * 60_000), 20);
  const base = await ask();
  expect(failed(base) + tampered(base)).toBe(0);
  const baseVolume = await volume();
  await tamperings('compacted rows', base, baseVolume, true);

  // 4. replay: the rows compaction merged and deleted, as saved before it, put back. Those a stored
  // merged row or pack names in its sealed list are left out and counted.
  const keys = c.services.keyring.accountKeys(a.accountId)!;
  const stored = await select<{ l: number; b: string; m: string; s: string; k: string[]; t: string[]; v: number; p: string; g: string }>(
    `SELECT level AS l, toString(toUnixTimestamp64Milli(bucket)) AS b, toString(metric) AS m, toString(series) AS s,
       arrayMap(x -> toString(x), tag_keys) AS k, arrayMap(x -> toString(x), tag_values) AS t, key_version AS v, part AS p, base64Encode(agg) AS g
     FROM rollups WHERE account_id = {a:String} AND startsWith(part, 'c:')`,
  );
  const named: string[] = []; // `level|bucket|metric|series|part` of the rows the sealed lists name
  for (const r of stored) {
    const key = keys.find((k) => k.version === Number(r.v))!;
    const id = { accountId: a.accountId, level: Number(r.l) as 0 | 1 | 2, bucket: Number(r.b), metric: r.m, series: r.s, tagKeys: r.k, tagValues: r.t, keyVersion: Number(r.v), part: r.p };
    const o = openRollupRow(key.dataKey, id, new Uint8Array(Buffer.from(r.g, 'base64')));
    expect(o?.supersedes?.length, 'a row compaction wrote seals its list').toBeGreaterThan(0);
    for (const e of o!.supersedes!) {
      const slash = id.level === 2 ? e.indexOf('/') : -1;
      if (slash < 0) named.push(`${id.level}|${id.bucket}|${r.m}|${r.s}|${e}`);
      else named.push(`1|${id.bucket + Number(e.slice(0, slash)) * H}|${r.m}|${r.s}|${e.slice(slash + 1)}`);
    }
  }
  expect(named.length).toBeGreaterThan(0);
  const refSql = `concat(toString(level), '|', toString(toUnixTimestamp64Milli(bucket)), '|', toString(metric), '|', toString(series), '|', part)`;
  await sql(`INSERT INTO rollups SELECT * FROM before_compaction WHERE ${refSql} IN {named:Array(String)}`, { named });
  const replayed = await select<{ n: string }>(
    `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND ${refSql} IN (SELECT ${refSql} FROM before_compaction)`,
  );
  expect(Number(replayed[0]!.n)).toBeGreaterThan(0);
  const r = await ask();
  expectSameAnswers(base, r);
  expect(failed(r)).toBe(0);
  expect(tampered(r)).toBeGreaterThan(0);
  expect(await volume()).toEqual(baseVolume);
  const after = await compact(); // lists the replayed rows again (and deletes them) without counting them
  expect(after.tamperedRows).toBeGreaterThan(0);
  expectSameAnswers(base, await ask());
  const left = await select<{ n: string }>(
    `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND ${refSql} IN {named:Array(String)}
       AND ${refSql} IN (SELECT ${refSql} FROM before_compaction)`,
    { named },
  );
  expect(Number(left[0]!.n)).toBe(0); // gone: listed again by compaction and deleted

  // the Prometheus counter counts what queries through the server found
  await sql(`INSERT INTO rollups SELECT * FROM rollups WHERE account_id = {a:String}`);
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...QUERIES[1], from: FROM, to: NOW }),
  });
  const body = (await res.json()) as QueryResult;
  expect(res.status).toBe(200);
  expect(body.meta.tamperedRows).toBeGreaterThan(0);
  const metrics = await (await fetch(`${c.url}/metrics`)).text();
  expect(Number(/^cipherstat_query_tampered_rows_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(0);
  const compaction = await registry.metrics();
  expect(Number(/^cipherstat_compaction_rows_total\{outcome="tampered"\} (\d+)/m.exec(compaction)?.[1])).toBeGreaterThan(0);
}, 900_000);
