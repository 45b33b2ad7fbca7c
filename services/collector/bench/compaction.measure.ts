/**
 * What compaction buys a small shop, measured through the real Processor: every batch is its
 * own processing tick (as at low traffic), so every (bucket, series) collects one partial row
 * per batch. Prints rows stored and rows each query opens before and after compaction, and
 * checks the answers did not change. A measurement, so it runs in `npm run bench`, not in
 * `npm test` (vitest.measure.config.ts); compaction's correctness is compactor-correctness.test.ts.
 *
 *   npm run bench compaction
 *   CIPHERSTAT_MEASURE_ALL=1 npm run bench compaction  # + one batch every 5 s
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeInner, randomBytes, seal, toHex } from '@cipherstat/protocol';
import { Compactor } from '../src/compaction/compactor.js';
import { createLogger } from '../src/logger.js';
import { executeQuery, type QueryResult, type QueryStats } from '../src/query/engine.js';
import { parseQuery } from '../src/query/request.js';
import type { BatchRow } from '../src/storage/types.js';
import { createAccount, startTestCollector, type TestCollector } from '../test/support/collector.js';
import { expectSameAnswers, generatePoints } from '../test/query-support.js';
import { connectionOf } from '../src/storage/index.js';

const DAY = 86_400_000;
const NOW = Date.now();
let c: TestCollector;

interface Scenario {
  name: string;
  batches: number;
  /** Time between two batches. */
  everyMs: number;
  /** Runs only with CIPHERSTAT_MEASURE_ALL=1 (each scenario is ~25 s of processing). */
  optional?: boolean;
}
const SCENARIOS: Scenario[] = [
  { name: '2000 batches of 5 points over 2 days (one every 86 s)', batches: 2000, everyMs: (2 * DAY) / 2000 },
  { name: '2000 batches of 5 points, one every 5 s (2.8 hours)', batches: 2000, everyMs: 5000, optional: true },
];

/** Processes `n` batches of 5 points, one tick each, ending now; returns the account id. */
async function ingest(s: Scenario, seed: number): Promise<string> {
  const { accountId } = await createAccount(c);
  const publicKey = c.services.keyring.accountKeys(accountId)![0]!.publicKey;
  const processor = c.services.processor!;
  for (let i = 0; i < s.batches; i++) {
    const t = NOW - (s.batches - i) * s.everyMs;
    const points = generatePoints(seed * 100_000 + i, 5, t - 60_000, t).map((p, id) => ({ ...p, id }));
    const batchId = toHex(randomBytes(16));
    const row: BatchRow = {
      accountId, batchId, receivedAt: t + 500, createdAt: t, pointCount: points.length, sdk: 'test/0',
      sealed: seal(encodeInner(accountId, batchId, points), publicKey), expiresAt: NOW + DAY,
    };
    processor.enqueue([row]);
    await processor.drain();
  }
  return accountId;
}

const QUERIES = [
  { label: 'hourly sum, 2 days', metric: 'orders', aggregation: 'sum', interval: 'hour' },
  { label: 'hourly p95 by country', metric: 'page.load', aggregation: 'p95', interval: 'hour', groupBy: ['country'] },
  { label: 'daily count, Asia/Kolkata (minute rows)', metric: 'orders', aggregation: 'count', interval: 'day', timezone: 'Asia/Kolkata' },
];

async function measure(accountId: string): Promise<{ rows: number[]; ms: number[]; results: QueryResult[] }> {
  const deps = { store: c.services.store, keyring: c.services.keyring };
  const rows: number[] = [];
  const ms: number[] = [];
  const results: QueryResult[] = [];
  for (const { label: _, ...body } of QUERIES) {
    const q = parseQuery({ ...body, from: NOW - 2 * DAY - 3_600_000, to: NOW });
    const times: number[] = [];
    let last: QueryResult | undefined;
    for (let i = 0; i < 5; i++) {
      const stats: QueryStats = { storageMs: 0, mergeMs: 0, rows: 0 };
      last = await executeQuery(deps, accountId, q, stats);
      times.push(stats.storageMs + stats.mergeMs);
    }
    rows.push(last!.meta.rows);
    ms.push(times.sort((x, y) => x - y)[2]!);
    results.push(last!);
  }
  return { rows, ms, results };
}

async function stored(accountId: string): Promise<{ rows: number; groups: number }> {
  const [r] = await connectionOf(c.services.store).query<{ rows: string; groups: string }>(
    'SELECT count() AS rows, uniqExact(level, metric, bucket, series) AS groups FROM rollups WHERE account_id = {a:String}',
    { a: accountId },
  );
  return { rows: Number(r!.rows), groups: Number(r!.groups) };
}

beforeAll(async () => {
  c = await startTestCollector({ env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } });
});
afterAll(async () => c?.stop());

describe('compaction, measured', () => {
  SCENARIOS.forEach((s, n) => {
    it.skipIf(s.optional && !process.env.CIPHERSTAT_MEASURE_ALL)(s.name, { timeout: 300_000 }, async () => {
      const t0 = performance.now();
      const accountId = await ingest(s, n + 1);
      const ingestMs = performance.now() - t0;
      const before = { table: await stored(accountId), ...(await measure(accountId)) };

      const compactor = new Compactor({ store: c.services.store, keyring: c.services.keyring, log: createLogger({ level: 'silent' }) });
      const report = await compactor.runUntilDone();
      const after = { table: await stored(accountId), ...(await measure(accountId)) };

      const lines = [
        `${s.name}: ${s.batches} ticks processed in ${(ingestMs / 1000).toFixed(1)} s; compaction ${report.tookMs} ms` +
          ` (${report.mergedRows} rows → ${report.writtenRows}, ${report.groups} groups)`,
        `  rollup rows stored: ${before.table.rows} → ${after.table.rows} (groups: ${after.table.groups})`,
        ...QUERIES.map(
          (q, i) => `  ${q.label}: rows opened ${before.rows[i]} → ${after.rows[i]}, query ${before.ms[i]!.toFixed(1)} → ${after.ms[i]!.toFixed(1)} ms (median of 5)`,
        ),
      ];
      console.log(lines.join('\n'));

      expect(report).toMatchObject({ failedRows: 0, unmarkedRows: 0, unfinished: 0, more: false });
      expect(after.table.rows).toBe(after.table.groups);
      expect(after.table.rows).toBeLessThan(before.table.rows);
      after.results.forEach((r, i) => expect(r.meta.rows).toBeLessThanOrEqual(before.results[i]!.meta.rows));
      expectSameAnswers(before.results, after.results);
    });
  });
});
