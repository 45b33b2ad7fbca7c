/**
 * What happens to stored data while an account lives: confidential mode (no sealed batch
 * outlives its processing), wipe (fresh keys and write key, everything so far unreadable),
 * and retention (ClickHouse TTL in chDB, and the retention job on the service clock).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { countPoints, inventory, openable, rows, snapshot } from './lifecycle-support.js';
import { connectionOf } from '../src/storage/index.js';

const DAY = 86_400_000;
let offset = 0;
const now = () => Date.now() + offset;
let c: TestCollector;

const send = (a: TestAccount, n = 10) => {
  const t = now();
  return post(c.url, envelope(a, points(n, (i) => ({ value: i + 1, time: t - 1000, tags: { plan: i % 2 ? 'pro' : 'free' } })), { createdAt: t }).bytes);
};
const batchesOf = async (id: string) => (await rows(c, id, false)).batches;

beforeAll(async () => {
  c = await startTestCollector({ now });
});
afterAll(async () => c?.stop());

describe('confidential mode', () => {
  it('keeps no sealed batch once processed; the aggregates remain', async () => {
    const a = await createAccount(c, { confidential: true });
    for (let i = 0; i < 3; i++) expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    const r = await rows(c, a.accountId, false);
    expect(r.batches).toBe(0);
    expect(r.processed).toBe(3);
    expect(r.rollups).toBeGreaterThan(0);
    const keys = c.services.keyring.accountKeys(a.accountId)!;
    expect(countPoints(await snapshot(c.services.store, a.accountId), a.accountId, keys[0]!.dataKey)).toBe(30);
    // a retry of a processed (and deleted) batch is still a duplicate, not new data
    const e = envelope(a, points(2), { createdAt: now() });
    expect((await post(c.url, e.bytes)).status).toBe(202);
    await c.services.processor!.drain();
    expect(await (await post(c.url, e.bytes)).json()).toEqual({ batchId: e.batchId, duplicate: true });
  });

  it('turned on later with PATCH: deletes the batches already processed, and every later one', async () => {
    const a = await createAccount(c);
    for (let i = 0; i < 2; i++) expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    expect(await batchesOf(a.accountId)).toBe(2);

    const res = await c.admin('PATCH', `/v1/accounts/${a.accountId}`, { confidential: true });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ confidential: true, state: 'active' });
    expect(await batchesOf(a.accountId)).toBe(0);
    expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    expect(await batchesOf(a.accountId)).toBe(0);
    expect((await rows(c, a.accountId, false)).processed).toBe(3);

    const bad = await c.admin('PATCH', `/v1/accounts/${a.accountId}`, { confidential: 'yes' });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error.code).toBe('invalid_request');
  });
});

describe('wipe', () => {
  it('destroys every old key version, the key pair included: nothing copied before it opens after it; the old write key is refused', async () => {
    const a = await createAccount(c);
    for (let i = 0; i < 3; i++) expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    // what a backup, a disk snapshot or a visitor's offline queue holds: rows and batches copied out of storage
    const before = await snapshot(c.services.store, a.accountId);
    const oldKeys = c.services.keyring.accountKeys(a.accountId)!.map((k) => ({ ...k, dataKey: k.dataKey.slice(), macKey: k.macKey.slice(), secretKey: k.secretKey.slice() }));
    // positive control: before the wipe the keyring opens every copied ciphertext
    expect(openable(before, inventory(c.services.keyring))).toEqual({ rollups: before.rollups.length, dictionary: before.dictionary.length, batches: 3 });

    const res = await c.admin('POST', `/v1/accounts/${a.accountId}/wipe`);
    expect(res.status).toBe(200);
    const report = await res.json();
    expect(report).toMatchObject({ accountId: a.accountId, keyVersion: 2, destroyedKeyVersions: [1] });
    expect(report.deleted).toEqual({ batches: 3, rollups: before.rollups.length, dictionary: before.dictionary.length });
    expect(await rows(c, a.accountId, false)).toMatchObject({ batches: 0, rollups: 0, dictionary: 0 });

    const keys = c.services.keyring.accountKeys(a.accountId)!;
    expect(keys.map((k) => k.version)).toEqual([2]);
    expect(report.writeKey).toBe(Buffer.from(keys[0]!.publicKey).toString('base64')); // returned once, like at creation
    expect(report.writeKey).not.toBe(a.writeKey);
    expect(keys[0]!.secretKey).not.toEqual(oldKeys[0]!.secretKey);
    expect(keys[0]!.dataKey).not.toEqual(oldKeys[0]!.dataKey);
    expect(keys[0]!.macKey).not.toEqual(oldKeys[0]!.macKey);
    // every copy from before the wipe, sealed batches included, opens with nothing the keyring holds
    expect(openable(before, inventory(c.services.keyring))).toEqual({ rollups: 0, dictionary: 0, batches: 0 });

    // the old write key (a deployed SDK config, a queued batch) is refused with a stable code and counted
    const stale = await send(a);
    expect(stale.status).toBe(400);
    expect((await stale.json()).error.code).toBe('stale_write_key');
    await c.services.refusals.flush(); // ingest refusals are counted in memory and flushed in one insert
    expect((await c.services.store.rejects(a.accountId)).stale_write_key).toBe(1);
    expect(await rows(c, a.accountId, false)).toMatchObject({ batches: 0 });

    const fresh = { ...a, writeKey: report.writeKey as string };
    expect((await send(fresh)).status).toBe(202); // the new write key is collected
    await c.services.processor!.drain();
    const after = await snapshot(c.services.store, a.accountId);
    expect(after.rollups.length).toBeGreaterThan(0);
    expect(after.rollups.every((r) => r.keyVersion === 2)).toBe(true);
    expect(countPoints(after, a.accountId, keys[0]!.dataKey)).toBe(10);
    const shown = await (await c.admin('GET', `/v1/accounts/${a.accountId}`)).json();
    expect(shown).toMatchObject({ state: 'active', writeKey: report.writeKey });
  });
});

describe('retention', () => {
  it('ClickHouse TTL removes expired batches and rollups in chDB', async () => {
    const { store } = c.services;
    const id = 'acct_777777777777777777777777';
    const t = Date.now(); // TTL runs on the engine's clock, not the service's
    const rollup = (i: number, expiresAt: number) => ({
      accountId: id, level: 0 as const, bucket: t - 3_600_000 + i * 60_000, metric: '1', series: '2', tagKeys: [], tagValues: [],
      keyVersion: 1, part: `p${i}`, agg: new Uint8Array([i]), writtenAt: t, expiresAt,
    });
    await store.insertRollups([rollup(0, t + 1500), rollup(1, t + 1500), rollup(2, t + DAY)]);
    const batch = (batchId: string, expiresAt: number) => ({ accountId: id, batchId, receivedAt: t, createdAt: t, pointCount: 1, sdk: 'x', sealed: new Uint8Array([1]), expiresAt });
    await store.insertBatches([batch('a', t + 1500), batch('b', t + DAY)]);
    expect(await rows(c, id, false)).toMatchObject({ batches: 2, rollups: 3 });
    await new Promise((r) => setTimeout(r, 2000));
    await connectionOf(store).exec('OPTIMIZE TABLE rollups FINAL');
    await connectionOf(store).exec('OPTIMIZE TABLE batches FINAL');
    expect(await rows(c, id, false)).toMatchObject({ batches: 1, rollups: 1 });
    for (const t of ['rollups', 'batches']) await connectionOf(store).exec(`ALTER TABLE ${t} DELETE WHERE account_id = {id:String} SETTINGS mutations_sync = 2`, { id });
  });

  it('the retention job deletes what is past each account’s retention, on the service clock', async () => {
    const short = await createAccount(c, { retentionDays: 1 });
    const long = await createAccount(c);
    expect((await (await c.admin('GET', `/v1/accounts/${long.accountId}`)).json()).retentionDays).toBe(400);
    for (const a of [short, long]) expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    const longBefore = await rows(c, long.accountId, false);
    const shortRollups = (await rows(c, short.accountId, false)).rollups!;
    expect(shortRollups).toBeGreaterThan(0);

    expect((await c.services.lifecycle.runRetention()).deleted).toEqual({ batches: 0, rollups: 0 });
    offset += 2 * DAY + 3_600_000; // past the short account's retention (bucket end + 1 day)
    const report = await c.services.lifecycle.runRetention();
    expect(report.deleted).toEqual({ batches: 1, rollups: shortRollups });
    expect(await rows(c, short.accountId, false)).toMatchObject({ batches: 0, rollups: 0 });
    expect(await rows(c, long.accountId, false)).toEqual(longBefore);

    // a shorter retention set later applies to rows written from then on
    const res = await c.admin('PATCH', `/v1/accounts/${long.accountId}`, { retentionDays: 1 });
    expect((await res.json()).retentionDays).toBe(1);
    expect((await send(long)).status).toBe(202);
    await c.services.processor!.drain();
    const [r] = await connectionOf(c.services.store).query<{ n: string }>(
      `SELECT count() AS n FROM rollups WHERE account_id = {a:String} AND expires_at < fromUnixTimestamp64Milli({t:Int64}, 'UTC')`,
      { a: long.accountId, t: now() + 2 * DAY },
    );
    expect(Number(r!.n)).toBeGreaterThan(0);
  });
});

// Last: its unopenable batch stays in storage (the retention test above counts batches).
describe('wipe, on a node that did not check the write key', () => {
  it('a batch sealed to the old write key that reached storage anyway (another ingest node) is dropped by the processor and counted as stale_write_key', async () => {
    const a = await createAccount(c);
    const old = envelope(a, points(4), { createdAt: now() });
    expect((await c.admin('POST', `/v1/accounts/${a.accountId}/wipe`)).status).toBe(200);
    const opened = (await import('@cipherstat/protocol')).openEnvelope(old.bytes, { keys: (id) => c.services.keyring.transportKey(id), now: now() });
    expect(opened.ok).toBe(true);
    const t = now();
    await c.services.store.insertBatches([
      { accountId: a.accountId, batchId: old.batchId, receivedAt: t - 60_000, createdAt: t - 60_000, pointCount: 4, sdk: 'test/0', sealed: opened.ok ? opened.value.inner : new Uint8Array(), expiresAt: t + DAY },
    ]);
    await c.services.processor!.poll();
    await c.services.processor!.drain();
    expect((await c.services.store.rejects(a.accountId)).stale_write_key).toBe(1);
    expect((await rows(c, a.accountId, false)).rollups).toBe(0);
  });
});
