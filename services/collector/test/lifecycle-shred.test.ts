/**
 * Deleting an account end to end, on a real collector (real chDB, real keyring files):
 * deactivate → 410 → restore; the scheduler shreds after the grace period on its own;
 * shred now → keys gone, rows purged, late data dropped and counted; and a fresh process
 * on the same data directory cannot open a single ciphertext of the account with any key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { countPoints, files, inventory, keyNeedles, metric, openable, rows, snapshot, until, type Snapshot } from './lifecycle-support.js';
import { KeyringError, hashToken } from '../src/keyring/index.js';
import type { AccountKeys } from '../src/keyring/index.js';
import { connectionOf } from '../src/storage/index.js';

const DAY = 86_400_000;
let offset = 0;
const now = () => Date.now() + offset;
const env = { CIPHERSTAT_LIFECYCLE_INTERVAL_MS: '100' };
let c: TestCollector;
let queryRoutes = false;

const send = async (a: TestAccount, n = 20) => post(c.url, envelope(a, points(n, (i) => ({ value: i, name: i % 2 ? 'orders' : 'page.load_ms', tags: { country: ['DE', 'FR', 'US'][i % 3]! } }))).bytes);
const code = async (r: Response) => ((await r.json()) as { error: { code: string } }).error.code;
const readAs = (a: TestAccount, path: '/v1/metrics' | '/v1/query') =>
  fetch(c.url + path, {
    method: path === '/v1/query' ? 'POST' : 'GET',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: path === '/v1/query' ? JSON.stringify({ metric: 'orders', aggregation: 'sum', from: Date.now() - DAY, to: Date.now() + 60_000, interval: 'hour' }) : undefined,
  });
const account = async (id: string) => (await (await c.admin('GET', `/v1/accounts/${id}`)).json()) as Record<string, any>;

beforeAll(async () => {
  c = await startTestCollector({ now, env, config: { refusalFlushMs: 3_600_000 } }); // refusal counts reach storage when a test flushes them
  const probe = await createAccount(c);
  queryRoutes = (await readAs(probe, '/v1/metrics')).status !== 404;
  expect(queryRoutes, 'the query routes are registered').toBe(true);
});
afterAll(async () => c?.stop());

describe('deactivate and restore', () => {
  it('deactivation stops ingest (503 account_deactivated, not 410) and queries; restore inside the grace period brings ingest back', async () => {
    const a = await createAccount(c);
    expect((await send(a)).status).toBe(202);

    const res = await c.admin('DELETE', `/v1/accounts/${a.accountId}`);
    expect(res.status).toBe(200);
    const d = await res.json();
    expect(d).toMatchObject({ accountId: a.accountId, state: 'deactivated', graceDays: 7 });
    expect(Date.parse(d.shredAfter) - Date.parse(d.deactivatedAt)).toBe(7 * DAY);

    // restorable, so not 410: a retryable refusal with its own code and a slow Retry-After
    const refused = await send(a);
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('3600');
    expect(await code(refused)).toBe('account_deactivated');
    if (queryRoutes) {
      for (const path of ['/v1/metrics', '/v1/query'] as const) expect((await readAs(a, path)).status).toBe(403);
    }
    expect(c.services.keyring.accountKeys(a.accountId)).toHaveLength(1); // keys untouched during the grace period

    const restored = await c.admin('POST', `/v1/accounts/${a.accountId}/restore`);
    expect(restored.status).toBe(200);
    expect(await restored.json()).toMatchObject({ state: 'active', deactivatedAt: null, shredAfter: null });
    expect((await send(a)).status).toBe(202);
  });

  it('rejects a bad grace period and unknown accounts with stable codes', async () => {
    const a = await createAccount(c);
    const bad = await c.admin('DELETE', `/v1/accounts/${a.accountId}?graceDays=-1`);
    expect(bad.status).toBe(400);
    expect(await code(bad)).toBe('invalid_request');
    const ghost = await c.admin('DELETE', '/v1/accounts/acct_000000000000000000000000');
    expect(ghost.status).toBe(404);
    expect(await code(ghost)).toBe('account_not_found');
    const noAuth = await fetch(`${c.url}/v1/accounts/${a.accountId}`, { method: 'DELETE' });
    expect(noAuth.status).toBe(401);
  });
});

describe('after the grace period', () => {
  it('the scheduler shreds by itself once the (simulated) clock passes shredAfter', async () => {
    const a = await createAccount(c);
    expect((await send(a)).status).toBe(202);
    await c.services.processor!.drain();
    expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}?graceDays=2`)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 300)); // a few sweeps: nothing is due yet
    expect((await account(a.accountId)).state).toBe('deactivated');

    offset += 3 * DAY;
    const shredded = await until(async () => {
      const v = await account(a.accountId);
      return v.state === 'shredded' && v.purge?.complete && v;
    }, undefined, 'the scheduled shred and purge');
    expect(shredded.purge).toEqual({ complete: true, pendingRows: 0, tables: { batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0, accounts: 0 } });
    expect(c.services.keyring.isTombstoned(a.accountId)).toBe(true);
    const late = await send(a);
    expect(late.status).toBe(410);
    expect(await code(late)).toBe('account_deleted');
    const restore = await c.admin('POST', `/v1/accounts/${a.accountId}/restore`);
    expect(restore.status).toBe(410);
  });
});

describe('shred now', () => {
  let victim: TestAccount;
  let other: TestAccount;
  let before: Snapshot;
  let otherBefore: Snapshot;
  let victimKeys: AccountKeys[];

  it('shreds at once with a report, drops every cache, purges in the background', async () => {
    victim = await createAccount(c);
    other = await createAccount(c);
    for (let i = 0; i < 5; i++) {
      expect((await send(victim)).status).toBe(202);
      expect((await send(other)).status).toBe(202);
    }
    await c.services.processor!.drain();
    before = await snapshot(c.services.store, victim.accountId);
    otherBefore = await snapshot(c.services.store, other.accountId);
    // copies: the shred zeroes the keyring's own buffers
    victimKeys = c.services.keyring.accountKeys(victim.accountId)!.map((k) => ({ ...k, secretKey: k.secretKey.slice(), dataKey: k.dataKey.slice(), macKey: k.macKey.slice() }));
    // positive control: the account's own keys open everything, so the checks below can see a leak
    expect(before.rollups.length).toBeGreaterThan(0);
    expect(before.dictionary.length).toBeGreaterThan(0);
    expect(before.batches).toHaveLength(5);
    expect(openable(before, { secretKeys: [victimKeys[0]!.dataKey], pairs: [victimKeys[0]!] })).toEqual({
      rollups: before.rollups.length,
      dictionary: before.dictionary.length,
      batches: 5,
    });
    expect(countPoints(before, victim.accountId, victimKeys[0]!.dataKey)).toBe(100);
    const unshredded = await (await c.admin('GET', `/v1/accounts/${victim.accountId}/verify`)).json();
    expect(unshredded.ok).toBe(false);
    expect(unshredded.decryption.rollups.opened).toBeGreaterThan(0);

    const dropped: string[] = [];
    c.services.lifecycle.onShred.push((id) => dropped.push(id));
    const res = await c.admin('DELETE', `/v1/accounts/${victim.accountId}?now=true`);
    const answeredAt = now();
    expect(res.status).toBe(200);
    const report = await res.json();
    expect(report).toMatchObject({ accountId: victim.accountId, state: 'shredded', purge: 'pending' });
    expect(report.destroyed).toEqual([`accounts/${victim.accountId}.json`, 'keys v1', 'in-memory key cache (buffers zeroed)']);
    expect(report.caches).toEqual(expect.arrayContaining(['account state and read-token cache', 'ingest batch-id cache', 'processor batch, dictionary and key caches (every thread, key copies zeroed)']));
    // and the earlier versions of the account row (the tombstone stays); no rejects were counted
    expect(report.rowsToPurge).toEqual({ batches: 5, processed: 5, rollups: before.rollups.length, dictionary: before.dictionary.length, rejects: 0, accounts: expect.any(Number) });
    expect(report.rowsToPurge.accounts).toBeGreaterThanOrEqual(1);
    // the tombstone is written by the shred itself, before it answers (not by the later purge);
    // compared with the answer's arrival, not with a time window a loaded machine can overrun
    expect(Date.parse(report.tombstonedAt)).toBeLessThanOrEqual(answeredAt);
    expect(Date.parse(report.shreddedAt)).toBeLessThanOrEqual(answeredAt);
    expect(dropped).toEqual([victim.accountId]);

    // in this process the keys are gone at once, whatever the cache windows
    expect(c.services.keyring.accountKeys(victim.accountId)).toBeUndefined();
    const late = await send(victim);
    expect(late.status).toBe(410);
    expect(await code(late)).toBe('account_deleted');
    if (queryRoutes) {
      // the read token's hash went with the account row: the token is unknown now
      for (const path of ['/v1/metrics', '/v1/query'] as const) {
        const r = await readAs(victim, path);
        expect(r.status).toBe(401);
        expect(await code(r)).toBe('unauthorized');
      }
    }

    const purged = await until(async () => {
      const v = await account(victim.accountId);
      return v.purge?.complete && v;
    }, undefined, 'the purge');
    expect(purged.state).toBe('shredded');
    expect(purged.writeKey).toBeNull();
    expect(await rows(c, victim.accountId, false)).toEqual({ batches: 0, processed: 0, rollups: 0, dictionary: 0 });
    expect((await rows(c, victim.accountId)).accounts).toBe(1); // the tombstone stays as the record
    expect(await metric(c.url, 'cipherstat_purge_pending_rows')).toBe(0);
  });

  it('drops and counts late data: at ingest (410) and batches stored before the shred was seen', async () => {
    await c.services.lifecycle.stop(); // (no purge of the counts or the batch before they are checked)
    const dropsBefore = await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}');
    for (let i = 0; i < 3; i++) expect((await send(victim)).status).toBe(410);
    expect(await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}')).toBe(dropsBefore + 3);

    // another ingest node stored a batch before it saw the shred: the processor drops and counts it, never opens it
    const t = now();
    await c.services.store.insertBatches([
      { accountId: victim.accountId, batchId: 'f'.repeat(32), receivedAt: t - 60_000, createdAt: t - 60_000, pointCount: 20, sdk: 'test/0', sealed: before.batches[0]!, expiresAt: t + DAY },
    ]);
    await c.services.processor!.poll();
    await c.services.processor!.drain();
    await c.services.refusals.flush(); // ingest counts late batches in memory and writes them per interval
    const rejects = await c.services.store.rejects(victim.accountId);
    // 1 + 3: the late batch of the test before was still counted in memory when that purge ran,
    // so it is written now and goes with the next purge
    expect(rejects.late_batch_dropped).toBe(1 + 3);
    expect(rejects.account_deleted).toBe(20);
    expect((await rows(c, victim.accountId)).rollups).toBe(0);
    expect((await rows(c, victim.accountId, false)).processed).toBe(1);
    c.services.lifecycle.start();
    await until(async () => (await account(victim.accountId)).purge?.complete, undefined, 'the purge of the late batch');
    expect(await rows(c, victim.accountId, false)).toEqual({ batches: 0, processed: 0, rollups: 0, dictionary: 0 });
    expect(await c.services.store.rejects(victim.accountId)).toEqual({}); // per-account counts are purged with the rest
    expect(await metric(c.url, 'cipherstat_batch_rejects_total{code="account_deleted"}')).toBeGreaterThan(dropsBefore); // the service-wide counter stays
  });

  it('after shred and purge, a dump of every table holds nothing of the account but its tombstone', async () => {
    const origin = 'https://tombstone-shop.example';
    const a = await createAccount(c, { allowedOrigins: [origin], retentionDays: 33 });
    expect((await send(a)).status).toBe(202);
    const bad = envelope(a, points(3, (i) => ({ name: i ? 'orders' : ' not a name ' })));
    expect((await post(c.url, bad.bytes)).status).toBe(202); // one point rejected and counted per account
    expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}`)).status).toBe(200);
    expect((await c.admin('POST', `/v1/accounts/${a.accountId}/restore`)).status).toBe(200); // more row versions
    await c.services.processor!.drain();
    expect(Object.keys(await c.services.store.rejects(a.accountId)).length).toBeGreaterThan(0);
    const shredding = Date.now(); // storage's clock (same machine), not the collector's injected one
    expect((await c.admin('DELETE', `/v1/accounts/${a.accountId}?now=true`)).status).toBe(200);
    await until(async () => (await account(a.accountId)).purge?.complete, undefined, 'the purge');

    const tables = await connectionOf(c.services.store).query<{ name: string }>('SELECT name FROM system.tables WHERE database = currentDatabase()');
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(['accounts', 'batches', 'processed', 'rollups', 'dictionary', 'rejects']));
    const mentions: { table: string; row: Record<string, unknown> }[] = [];
    const dump: string[] = [];
    for (const { name } of tables) {
      for (const row of await connectionOf(c.services.store).query<Record<string, unknown>>(`SELECT * FROM ${name}`)) {
        const text = JSON.stringify(row);
        dump.push(text);
        if (text.includes(a.accountId)) mentions.push({ table: name, row });
      }
    }
    const all = dump.join('\n');
    expect(all.includes(origin)).toBe(false);
    expect(all.includes(hashToken(a.readToken))).toBe(false);
    expect(mentions).toHaveLength(1); // every version collapsed into one row
    expect(mentions[0]!.table).toBe('accounts');
    const t = mentions[0]!.row;
    expect(t).toMatchObject({ account_id: a.accountId, state: 'shredded', read_token_hash: '', allowed_origins: [], deactivated_at: null, shred_after: null, retention_days: 0 });
    expect(t.created_at).toBe(t.shredded_at); // no history: the only instant kept is the shred's
    expect(t.updated_at).toBe(t.shredded_at);
    // When storage wrote the tombstone, by its own clock (the background refresh of account
    // state reads rows by it): the shred's moment again, not an earlier version's.
    expect(Date.parse(`${String(t.changed_at).replace(' ', 'T')}Z`)).toBeGreaterThanOrEqual(shredding - 1000);
  });

  it('never creates a key for the id again', async () => {
    const k = c.services.keyring;
    expect(() => k.createAccount(victim.accountId)).toThrow(KeyringError);
    expect(() => k.importAccount(victim.accountId, victimKeys[0]!)).toThrow(/never reused/);
    expect(() => k.rotateDataKeys(victim.accountId)).toThrow(/never reused/);
    const wipe = await c.admin('POST', `/v1/accounts/${victim.accountId}/wipe`);
    expect(wipe.status).toBe(410);
    const again = await c.admin('DELETE', `/v1/accounts/${victim.accountId}?now=true`);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ state: 'shredded', destroyed: [], purge: 'complete' });
  });

  it('a fresh process on the same data directory cannot open a single row with any key; the others are untouched', async () => {
    const dataDir = c.dataDir;
    await c.close();
    c = await startTestCollector({ dataDir, now, env });

    const keys = inventory(c.services.keyring);
    expect(keys.secretKeys.length).toBeGreaterThan(4);
    // every remaining key against every ciphertext the account ever had (a copy of storage)
    expect(openable(before, keys)).toEqual({ rollups: 0, dictionary: 0, batches: 0 });
    // the other account's data still opens with its own keys
    const otherKeys = c.services.keyring.accountKeys(other.accountId)!;
    expect(countPoints(otherBefore, other.accountId, otherKeys[0]!.dataKey)).toBe(100);

    const v = await (await c.admin('GET', `/v1/accounts/${victim.accountId}/verify`)).json();
    expect(v).toMatchObject({
      ok: true,
      state: 'shredded',
      problems: [],
      keyring: { accountFile: false, tombstone: { present: true }, filesMentioningAccount: [] },
      purge: 'complete',
      rowsRemaining: { batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0, accounts: 0 },
    });
    expect(v.keysTried.dataKeys).toBeGreaterThan(0);

    // the keyring holds nothing of the account but its tombstone
    const tombstone = join(dataDir, 'keyring', 'tombstones', `${victim.accountId}.json`);
    const needles = keyNeedles(victimKeys.flatMap((k) => [k.secretKey, k.dataKey, k.macKey]));
    const keyringFiles = files(join(dataDir, 'keyring'));
    expect(keyringFiles.some((f) => f.path === tombstone)).toBe(true);
    for (const f of keyringFiles) {
      if (f.path !== tombstone) expect(f.bytes.includes(victim.accountId), f.path).toBe(false);
      for (const n of needles) expect(f.bytes.includes(n), f.path).toBe(false);
    }
    // (not the engine's directory: its ciphertext is checked above, and a running engine
    // renames and removes its temporary parts while a scan walks them)
    for (const f of files(dataDir, [join(dataDir, 'clickhouse')])) {
      for (const n of needles) expect(f.bytes.includes(n), f.path).toBe(false);
    }

    // still refused after the restart; the other account keeps processing
    const late = await send(victim);
    expect(late.status).toBe(410);
    expect(await code(late)).toBe('account_deleted');
    expect((await send(other)).status).toBe(202);
    await c.services.processor!.drain();
    const after = await snapshot(c.services.store, other.accountId);
    // (fewer rows than before is fine: the startup compaction pass merges partial rows)
    expect(countPoints(after, other.accountId, otherKeys[0]!.dataKey)).toBe(120);
    expect(after.rollups.length).toBeGreaterThan(0);
  });
});
