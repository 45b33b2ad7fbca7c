/**
 * Unique visitors from ingest to `uniq`, without a browser: batches posted with an Origin
 * header (as browsers send) from known addresses (X-Forwarded-For through one trusted proxy
 * hop) and user agents; batches without Origin (as the Library in Node sends) carry no visitor.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Point } from '@cipherstat/protocol';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';

let c: TestCollector;
let account: TestAccount;
beforeAll(async () => {
  c = await startTestCollector({ env: { CIPHERSTAT_TRUST_PROXY: '1' } });
  account = await createAccount(c);
});
afterAll(async () => c?.stop());

const views = (n: number, path: string): Point[] => Array.from({ length: n }, (_, i) => ({ id: i, kind: 'counter', name: 'page.views', value: 1, time: Date.now(), tags: { path } }));
const as = (visitor: number) => ({ origin: 'https://shop.example', 'user-agent': `Browser/${visitor % 4}`, 'x-forwarded-for': `198.51.100.${Math.floor(visitor / 4)}` });

async function uniq(groupBy: string[] = []): Promise<Record<string, number>> {
  await c.services.processor!.drain();
  const now = Date.now();
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'page.views', aggregation: 'uniq', interval: 'month', from: now - 60_000, to: now + 60_000, groupBy }),
  });
  const body = (await res.json()) as { series: { tags: Record<string, string>; points: [number, number][] }[] };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return Object.fromEntries(body.series.map((s) => [groupBy.map((k) => s.tags[k]).join(' '), Math.max(...s.points.map(([, v]) => v))]));
}

it('distinct (address, user agent) pairs are distinct visitors; one visitor in many batches counts once; no Origin, no visitor', async () => {
  // 12 visitors (3 addresses × 4 user agents), each in 3 batches; visitors 0-5 also on /cart
  for (let round = 0; round < 3; round++) {
    for (let v = 0; v < 12; v++) {
      expect((await post(c.url, envelope(account, views(2, '/')).bytes, as(v))).status).toBe(202);
      if (v < 6 && round === 0) expect((await post(c.url, envelope(account, views(1, '/cart')).bytes, as(v))).status).toBe(202);
    }
  }
  // server side: no Origin header
  for (let i = 0; i < 3; i++) expect((await post(c.url, envelope(account, views(5, '/')).bytes, { 'user-agent': 'node', 'x-forwarded-for': '198.51.100.99' })).status).toBe(202);
  expect(await uniq(['path'])).toEqual({ '/': 12, '/cart': 6 });
  expect(await uniq()).toEqual({ '': 12 });
});
