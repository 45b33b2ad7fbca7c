/**
 * What storage can and cannot do to an answer by adding or changing whole rollup rows. Each
 * row's identity (account, level, bucket, metric, series, tag pseudonyms, key version and part)
 * is its associated data (record format 2, src/records.ts): a row copied under another part
 * does not open, and a second row with the same identity is a copy, counted once. Points go
 * over HTTP through the real processor into chDB; the tampering is SQL on the real table.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Compactor } from '../src/compactor.js';
import { listMetrics, runQuery, type QueryResult } from '../src/query/index.js';
import { createLogger } from '../src/logger.js';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { expectSameAnswers, generatePoints, type GenPoint } from './query-support.js';

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
]);
const ask = async (): Promise<QueryResult[]> => {
  const out: QueryResult[] = [];
  for (const q of QUERIES) out.push(await runQuery({ store: c.services.store, keyring: c.services.keyring }, { accountId: a.accountId }, { ...q, from: FROM, to: NOW }));
  return out;
};
const failed = (rs: QueryResult[]) => rs.reduce((n, r) => n + r.meta.failedRows, 0);
const sql = (text: string) => c.services.store.exec(text, { a: a.accountId });

beforeAll(async () => {
  c = await startTestCollector({ now, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
  a = await createAccount(c);
  const pts: GenPoint[] = generatePoints(11, 300, FROM, NOW);
  for (let i = 0; i < pts.length; i += 30) {
    const res = await post(c.url, envelope(a, pts.slice(i, i + 30).map((p, j) => ({ ...p, id: j })), { createdAt: now() }).bytes);
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
  }
});
afterAll(async () => c?.stop());

it('a duplicated row and a row copied under another part move no number, and are counted in meta.failedRows; compaction neither', async () => {
  const before = await ask();
  expect(failed(before)).toBe(0);
  const volume = async () => (await listMetrics({ store: c.services.store, keyring: c.services.keyring, now }, a.accountId)).metrics.map((m) => [m.name, m.points24h]);
  const volumeBefore = await volume();
  expect(volumeBefore.some(([, n]) => Number(n) > 0)).toBe(true);
  // a copy of every hour and minute row with the same identity, and a copy of each under a new part
  await sql(`INSERT INTO rollups SELECT * FROM rollups WHERE account_id = {a:String} AND level IN (0, 1)`);
  await sql(`INSERT INTO rollups SELECT * REPLACE (concat('forged', part) AS part) FROM rollups WHERE account_id = {a:String} AND level IN (0, 1) AND NOT startsWith(part, 'forged') LIMIT 1 BY level, metric, bucket, series`);
  const tampered = await ask();
  expectSameAnswers(before, tampered); // (float sums up to summation order)
  expect(failed(tampered)).toBeGreaterThan(0);
  for (const [i, r] of tampered.entries()) expect(r.meta.failedRows, JSON.stringify(QUERIES[i])).toBeGreaterThan(0); // every answer read some
  expect(await volume()).toEqual(volumeBefore); // the catalog's 24-hour volume counts each row once too

  // compaction merges and packs each row once, copies or not; the answers stay the same
  const report = await new Compactor({ store: c.services.store, keyring: c.services.keyring, log: createLogger({ level: 'silent' }), now }).runUntilDone();
  expect(report.failedRows).toBeGreaterThan(0);
  const compacted = await ask();
  expectSameAnswers(before, compacted);
});
