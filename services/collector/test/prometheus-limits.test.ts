/**
 * The read token's limits apply to /prometheus as to POST /v1/query (a collector of its own:
 * chDB holds one data directory per process).
 */
import { expect, it } from 'vitest';
import { createAccount, envelope, post, startTestCollector } from './support/collector.js';

const HOUR = 3_600_000;
const MIN = 60_000;
const H = Math.floor(Date.now() / HOUR) * HOUR - 3 * HOUR;

it('rows budget spent: 429 unavailable with Retry-After', async () => {
  const small = await startTestCollector({ config: { queryRowsPerMinute: 1 } });
  try {
    const acc = await createAccount(small);
    const t = H + 10 * MIN;
    const res = await post(small.url, envelope(acc, [0, 1].map((id) => ({ id, kind: 'counter' as const, name: 'orders', value: 1, time: t + id * MIN, tags: {} }))).bytes);
    expect(res.status).toBe(202);
    await small.services.processor!.drain();
    const ask = () => fetch(`${small.url}/prometheus/api/v1/query?query=${encodeURIComponent('sum(sum_over_time(orders[1h]))')}&time=${(H + HOUR) / 1000}`, { headers: { authorization: `Bearer ${acc.readToken}` } });
    const first = await ask(); // reads 2 rows: overdraws the budget of 1
    expect(first.status).toBe(200);
    expect(((await first.json()) as any).data.result[0].value[1]).toBe('2');
    const second = await ask();
    expect(second.status).toBe(429);
    expect(second.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(await second.json()).toMatchObject({ status: 'error', errorType: 'unavailable' });
  } finally {
    await small.stop();
  }
});
