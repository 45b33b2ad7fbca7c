/**
 * Queries that explain themselves, through the HTTP API of a real collector: a metric never
 * recorded is a 404 `unknown_metric` naming the closest recorded ones; sums carry no binary
 * float tail (19.99 + 179.4 is 199.39, not 199.39000000000001).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';

let c: TestCollector;
let account: TestAccount;
const HOUR = 3_600_000;
const t = Math.floor(Date.now() / HOUR) * HOUR - HOUR + 60_000;

beforeAll(async () => {
  c = await startTestCollector();
  account = await createAccount(c);
  const points = [
    { id: 0, kind: 'counter' as const, name: 'revenue', value: 19.99, time: t, tags: {} },
    { id: 1, kind: 'counter' as const, name: 'revenue', value: 179.4, time: t + 1000, tags: {} },
    { id: 2, kind: 'histogram' as const, name: 'page.load_ms', value: 812, time: t, tags: {} },
  ];
  expect((await post(c.url, envelope(account, points).bytes)).status).toBe(202);
  await c.services.processor!.drain();
});
afterAll(async () => c?.stop());

const query = (body: unknown) =>
  fetch(`${c.url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

it('a metric never recorded: 404 unknown_metric with the closest recorded names', async () => {
  const res = await query({ metric: 'page.load', aggregation: 'p95', interval: 'hour', from: t - HOUR, to: t + HOUR });
  expect(res.status).toBe(404);
  const { error } = (await res.json()) as { error: { code: string; message: string } };
  expect(error.code).toBe('unknown_metric');
  expect(error.message).toBe('no metric "page.load" was ever recorded; did you mean "page.load_ms"?');
  const far = await query({ metric: 'zzzzzzzzzzzz', aggregation: 'count', interval: 'hour', from: t - HOUR, to: t + HOUR });
  expect(((await far.json()) as { error: { message: string } }).error.message).toContain('(GET /v1/metrics lists them)');
  // a recorded metric without data in the range is not an error: it answers zeros
  const empty = await query({ metric: 'revenue', aggregation: 'sum', interval: 'hour', from: t - 30 * HOUR, to: t - 20 * HOUR });
  expect(empty.status).toBe(200);
});

it('sums are rounded to what float64 supports: no binary tail', async () => {
  expect(19.99 + 179.4).toBe(199.39000000000001); // what plain addition gives
  const res = await query({ metric: 'revenue', aggregation: 'sum', interval: 'hour', from: t - 60_000, to: t + 60_000 });
  const { series } = (await res.json()) as { series: { points: [number, number][] }[] };
  expect(series[0]!.points).toEqual([[t - 60_000, 199.39]]);
});
