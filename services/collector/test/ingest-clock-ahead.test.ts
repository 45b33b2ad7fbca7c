/**
 * A sender whose clock runs ahead (docs/protocol.md, "A sender's clock ahead"): a batch whose
 * header time is later than its arrival by more than the tolerated 5 minutes was refused `400
 * timestamp_out_of_range`, so every batch of a device with a fast clock was lost. No batch is
 * made after it arrives, so the collector now takes such a batch (up to 30 days ahead), checks
 * its points in the sender's frame and moves them back by the difference. Real collector on
 * 127.0.0.1 with a frozen clock (no assertion depends on timing), real chDB, `POST /v1/query`.
 */
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** The collector's clock: 20 minutes into an hour, so a few minutes either way stay in that hour. */
const T = Math.floor(Date.now() / HOUR) * HOUR - 3 * HOUR + 20 * 60_000;

let c: TestCollector;
let a: TestAccount;
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

async function hourly(): Promise<[number, number | null][]> {
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: T - 20 * 60_000 - 2 * HOUR, to: T - 20 * 60_000 + 4 * HOUR }),
  });
  expect(res.status, await res.clone().text()).toBe(200);
  const body = (await res.json()) as { series: { points: [number, number | null][] }[] };
  return body.series[0]!.points.filter(([, v]) => v !== null && v !== 0); // (empty hours of a sum answer 0)
}

// inline, and in the tick worker of the compiled collector (the batch's header time crosses to it)
describe.each([{ fromDist: false }, { fromDist: true }])('ticks from dist: $fromDist', ({ fromDist }) => {
it("a batch from a clock running 2 hours ahead is taken, its points moved back to the collector's time; 30 days ahead is the limit", async () => {
  await c?.stop();
  c = await startTestCollector({ now: () => T, fromDist });
  a = await createAccount(c);
  // 2 hours ahead: made "at" T + 2 h, its points at T + 2 h + 1 s and + 2 s of the sender's clock
  const ahead = T + 2 * HOUR;
  const fast = envelope(a, points(2, (i) => ({ name: 'orders', value: 3 + i, time: ahead + 1000 * (i + 1) })), { createdAt: ahead });
  expect((await post(c.url, fast.bytes)).status).toBe(202);
  // within the tolerated skew (4 minutes ahead): taken as it is, as before
  const near = envelope(a, points(1, () => ({ name: 'orders', value: 5, time: T + 4 * 60_000 })), { createdAt: T + 4 * 60_000 });
  expect((await post(c.url, near.bytes)).status).toBe(202);
  // beyond 30 days ahead: refused
  const far = await post(c.url, envelope(a, points(1, () => ({ name: 'orders', time: T + 31 * DAY })), { createdAt: T + 31 * DAY }).bytes);
  expect([far.status, (await far.json()).error.code]).toEqual([400, 'timestamp_out_of_range']);
  await c.services.processor!.drain();

  const hourOfT = T - 20 * 60_000;
  expect(await hourly()).toEqual([[hourOfT, 3 + 4 + 5]]); // nothing at T + 2 h: every point in T's hour
  expect((await c.services.store.rejects(a.accountId)).invalid_timestamp).toBeUndefined();
});
});
