/**
 * The conformance suite over @clickhouse/client. Against the chDB-backed HTTP shim by
 * default; against a real server with CLICKHOUSE_TEST_URL=http://user:pass@host:8123
 * (and CLICKHOUSE_TEST_CLUSTER for ON CLUSTER DDL).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIST_PARAM_BYTES, openStore, type RollupRow, type Store } from '../src/storage/index.js';
import { loadConfig } from '../src/config.js';
import { storeOptions } from '../src/services.js';
import { startClickHouseHttp, type ClickHouseHttp } from './support/clickhouse-http.js';
import { ALL_BYTES, account, batch, storeConformance } from './support/storage-conformance.js';
import { connectionOf } from '../src/storage/index.js';

const realUrl = process.env.CLICKHOUSE_TEST_URL;
const database = `cipherstat_test_${process.pid}_${Date.now().toString(36)}`;
let dataDir = '';
let shim: ClickHouseHttp | undefined;

beforeAll(async () => {
  if (realUrl) return;
  dataDir = await mkdtemp(join(tmpdir(), 'cipherstat-storage-remote-'));
  shim = await startClickHouseHttp({ dataDir, user: 'cipher', password: 'pw-never-in-sql' });
});
afterAll(async () => {
  await shim?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

const open = (): Promise<Store> =>
  realUrl
    ? openStore({ url: realUrl, database, cluster: process.env.CLICKHOUSE_TEST_CLUSTER })
    : openStore({ url: shim!.url, database, user: 'cipher', password: 'pw-never-in-sql' });

storeConformance(realUrl ? 'remote (ClickHouse server)' : 'remote (chDB HTTP shim)', {
  open,
  async dispose(store) {
    if (realUrl) await connectionOf(store).exec(`DROP DATABASE IF EXISTS ${database}${process.env.CLICKHOUSE_TEST_CLUSTER ? ` ON CLUSTER ${process.env.CLICKHOUSE_TEST_CLUSTER}` : ''} SYNC`);
  },
});

describe('remote adapter', () => {
  it('is unavailable against a dead URL', async () => {
    const store = await openStore({ url: 'http://127.0.0.1:9' });
    expect(store.kind).toBe('remote');
    await expect(store.ping()).rejects.toMatchObject({ name: 'StorageError', code: 'storage_unavailable' });
    await expect(store.insertBatches([batch('a', 'b', Date.now())])).rejects.toMatchObject({ code: 'storage_unavailable' });
    await store.close();
  });

  it('takes its settings from CLICKHOUSE_* through the configuration', async () => {
    const config = loadConfig({}, { CLICKHOUSE_URL: 'http://127.0.0.1:9', CLICKHOUSE_DATABASE: 'x' });
    expect(storeOptions(config)).toMatchObject({ url: 'http://127.0.0.1:9', database: 'x' });
    const store = await openStore(storeOptions(config));
    expect(store.kind).toBe('remote');
    await store.close();
  });
});

describe.skipIf(realUrl)('ClickHouse HTTP shim', () => {
  const client = () =>
    createClient({ url: shim!.url, username: 'cipher', password: 'pw-never-in-sql', compression: { request: true, response: true }, log: { level: ClickHouseLogLevel.OFF } });

  it('never receives the password, and never a sealed payload inside SQL', async () => {
    const all = shim!.requests.map((r) => r.query + JSON.stringify(r.params)).join('\n');
    expect(shim!.requests.length).toBeGreaterThan(20);
    expect(all).not.toContain('pw-never-in-sql');
    expect(all).not.toContain(Buffer.from(ALL_BYTES).toString('base64'));
  });

  it('answers @clickhouse/client: ping, gzip both ways, params, inserts, errors', async () => {
    const c = client();
    expect((await c.ping()).success).toBe(true);
    const rs = await c.query({ query: 'SELECT {a:Array(String)} AS a, {n:Nullable(UInt8)} AS n', query_params: { a: ["it's", 'b\\c'], n: null }, format: 'JSONEachRow' });
    expect(await rs.json()).toEqual([{ a: ["it's", 'b\\c'], n: null }]);
    await c.command({ query: 'CREATE TABLE IF NOT EXISTS default.shim_t (k String, v UInt32) ENGINE = MergeTree ORDER BY k' });
    await c.insert({ table: 'default.shim_t', values: [{ k: 'x', v: 1 }, { k: 'y', v: 2 }], format: 'JSONEachRow' });
    const sum = await c.query({ query: 'SELECT sum(v) AS s FROM shim_t', format: 'JSONEachRow', clickhouse_settings: { max_threads: 1 } });
    expect(await sum.json()).toEqual([{ s: 3 }]);
    await expect(c.query({ query: 'SELECT * FROM default.nope' })).rejects.toMatchObject({ code: '60', type: 'UNKNOWN_TABLE' });
    await expect(c.command({ query: 'SELEC 1' })).rejects.toMatchObject({ code: '62', type: 'SYNTAX_ERROR' });
    await c.close();
  });

  it('refuses a wrong password like ClickHouse', async () => {
    const c = createClient({ url: shim!.url, username: 'cipher', password: 'wrong', log: { level: ClickHouseLogLevel.OFF } });
    await expect(c.query({ query: 'SELECT 1' })).rejects.toMatchObject({ code: '516', type: 'AUTHENTICATION_FAILED' });
    await c.close();
    const store = await openStore({ url: shim!.url, user: 'cipher', password: 'wrong' });
    await expect(store.putAccount(account('a', 1))).rejects.toMatchObject({ code: 'storage_query_failed', clickhouseCode: 516 });
    await store.close();
  });

  it('passes parameters as a server does: a list longer than a URL field is refused, max_query_size is the query text\'s', async () => {
    const c = client();
    const long = Array.from({ length: 20_000 }, (_, i) => `acct_${i}|0|1234567890123|${i}`); // > 128 KiB
    await expect(c.query({ query: 'SELECT length({a:Array(String)}) AS n', query_params: { a: long } })).rejects.toThrow(/Field value too long/);
    const fits = long.slice(0, 3000); // < 128 KiB: bound, not parsed as SQL, so max_query_size does not apply
    expect(await (await c.query({ query: 'SELECT length({a:Array(String)}) AS n', query_params: { a: fits }, format: 'JSONEachRow', clickhouse_settings: { max_query_size: '1000' } })).json()).toEqual([{ n: 3000 }]);
    await expect(c.query({ query: `SELECT 1 /* ${'x'.repeat(2000)} */`, clickhouse_settings: { max_query_size: '1000' } })).rejects.toThrow(/Max query size exceeded/);
    await c.close();
  });
});

describe.skipIf(realUrl)('bounded statements (remote)', () => {
  it('cuts every key list into statements a server takes, however many keys (compaction\'s reads by series-hour and pack unit too)', async () => {
    const store = await open();
    try {
      await store.migrate();
      const acc = `acct_bounded_${Date.now()}`;
      const now = Date.now();
      const bucket = now - (now % 60_000);
      // 2,000 groups of two rows: every list below is several times one statement's budget.
      const rows: RollupRow[] = Array.from({ length: 4000 }, (_, i) => ({
        accountId: acc, level: 0, bucket, metric: String(1000 + (i % 2000)), series: String(9_000_000_000_000_000_000n + BigInt(i % 2000)),
        tagKeys: [], tagValues: [], keyVersion: 1, part: `p${String(i).padStart(5, '0')}-${'x'.repeat(30)}`, agg: new Uint8Array([i % 256]),
        writtenAt: now, expiresAt: now + 86_400_000,
      }));
      await store.insertRollups(rows);
      const refs = rows.map((r) => ({ accountId: r.accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series, part: r.part }));
      const refBytes = refs.reduce((n, r) => n + `${r.accountId}|${r.level}|${r.metric}|${r.bucket}|${r.series}|${r.part}`.length, 0);
      expect(refBytes).toBeGreaterThan(4 * LIST_PARAM_BYTES.remote); // more keys than one statement can hold

      const sent = shim!.requests.length;
      const groups = refs.filter((_, i) => i < 2000);
      expect((await store.rollupsOfGroups(groups, 10)).length).toBe(4000);
      expect((await store.findRollups(refs)).length).toBe(4000);
      // compaction's reads by series-hour (derivation) and by pack unit (minute packs): each
      // group's two rows once, whichever statement its key went into
      const hour = bucket - (bucket % 3_600_000);
      const units = groups.map((g) => ({ accountId: g.accountId, metric: g.metric, series: g.series }));
      const unitBytes = units.reduce((n, u) => n + `${u.accountId}|${u.metric}|${hour / 3_600_000}|${u.series}|1`.length, 0);
      expect(unitBytes).toBeGreaterThan(LIST_PARAM_BYTES.remote); // more than one statement
      const parts = (got: { part: string }[]) => got.map((r) => r.part).sort();
      const before = shim!.requests.length;
      expect(parts(await store.rollupsOfHours(units.map((u) => ({ ...u, hour }))))).toEqual(parts(rows));
      expect(parts(await store.rollupsOfDays(units.map((u) => ({ ...u, day: hour, keyVersion: 1 })), 0))).toEqual(parts(rows));
      expect(shim!.requests.slice(before).filter((r) => /concat\(account_id/.test(r.query)).length).toBeGreaterThanOrEqual(4);
      await store.clearSupersedes(refs, { wait: true });
      const ids = Array.from({ length: 6000 }, (_, i) => ({ accountId: acc, batchId: `b${String(i).padStart(31, '0')}` }));
      await store.insertBatches(ids.map((k) => batch(k.accountId, k.batchId, now)));
      expect((await store.existingBatches(ids)).size).toBe(6000);
      await store.deleteBatches(ids);
      expect((await store.existingBatches(ids)).size).toBe(0);
      await store.deleteRollups(refs, { wait: true });
      expect(await store.findRollups(refs)).toEqual([]);

      // Several statements each, every parameter within a URL field of the server.
      const mine = shim!.requests.slice(sent);
      expect(mine.filter((r) => /\bkeys:Array/.test(r.query) && /^\s*DELETE FROM/.test(r.query)).length).toBeGreaterThan(3);
      for (const r of mine) for (const v of Object.values(r.params)) expect(Buffer.byteLength(v)).toBeLessThan(128 * 1024);
    } finally {
      await store.close();
    }
  });
});
