/**
 * Backpressure: when processing falls behind (the oldest batch waiting for a tick waited longer
 * than CIPHERSTAT_MAX_PROCESS_LAG_MS), ingest answers 503 overloaded with Retry-After instead
 * of acknowledging more than it can process; once processing catches up it accepts again, and
 * everything acknowledged is processed exactly once.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';

let c: TestCollector;
let a: TestAccount;

beforeAll(async () => {
  c = await startTestCollector({ config: { maxProcessLagMs: 50 } });
  a = await createAccount(c);
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('ingest backpressure', () => {
  it('answers 503 overloaded while processing is behind, accepts again once it caught up', async () => {
    const processor = c.services.processor!;
    await processor.stop(); // processing halts: hand-offs wait in its queue
    const first = envelope(a, points(10));
    expect((await post(c.url, first.bytes)).status).toBe(202);
    await new Promise((r) => setTimeout(r, 120)); // the waiting batch is now older than 50 ms
    const refused = await post(c.url, envelope(a, points(10)).bytes);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await refused.json()).error.code).toBe('overloaded');
    expect((await fetch(`${c.url}/healthz`)).status).toBe(200);

    processor.start(); // the poll picks the stored batch up
    await expect.poll(async () => (await post(c.url, envelope(a, points(10)).bytes)).status, { timeout: 20_000, interval: 200 }).toBe(202);
    await processor.drain();
    const [row] = await c.services.store.query<{ n: string; pts: string }>(
      'SELECT count() AS n, sum(accepted) AS pts FROM processed FINAL WHERE account_id = {a:String}',
      { a: a.accountId },
    );
    expect(Number(row!.n)).toBeGreaterThanOrEqual(2); // the first batch and the one accepted again
    expect(Number(row!.pts)).toBe(Number(row!.n) * 10);
  });
});
