/**
 * /prometheus when storage fails: the collector on the test ClickHouse HTTP endpoint behind a
 * fault proxy that refuses connections for real. The answer is Prometheus's error envelope
 * (Grafana shows its `error`), 503 `unavailable` with Retry-After, as Prometheus answers when it
 * cannot serve; /v1/query keeps its own `{ error: { code } }` form. A file of its own: the shim
 * holds a chDB data directory, one per process.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, type TestAccount, type TestCollector } from './support/collector.js';
import { collectorBehindFaultProxy, type FaultProxy } from './support/fault-proxy.js';

let proxy: FaultProxy;
let c: TestCollector;
let close: (() => Promise<void>) | undefined;
let account: TestAccount;

beforeAll(async () => {
  ({ c, proxy, close } = await collectorBehindFaultProxy());
  account = await createAccount(c);
});
afterAll(async () => close?.());

it('storage refusing: 503 in the Prometheus envelope (errorType unavailable, Retry-After) on every route; /v1/query keeps its form', async () => {
  const auth = { authorization: `Bearer ${account.readToken}` };
  await proxy.mode('refuse');
  const now = Math.floor(Date.now() / 1000);
  for (const path of ['query?query=sum(sum_over_time(orders[1h]))', `query_range?query=sum_over_time(orders[1h])&start=${now - 7200}&end=${now}&step=3600`, 'labels', 'label/__name__/values', 'series?match[]=orders', 'metadata']) {
    const res = await fetch(`${c.url}/prometheus/api/v1/${path}`, { headers: auth });
    expect(res.status, path).toBe(503);
    expect(res.headers.get('retry-after'), path).toMatch(/^\d+$/);
    const body = (await res.json()) as Record<string, string>;
    expect(body, path).toMatchObject({ status: 'error', errorType: 'unavailable' });
    expect(body.error, path).toMatch(/^storage_unavailable: /);
  }
  const q = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: Date.now() - 3_600_000, to: Date.now() }),
  });
  expect(q.status).toBe(503);
  expect(await q.json()).toMatchObject({ error: { code: 'storage_unavailable' } });
  await proxy.mode('pass');
});
