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
import { openStore, type Store } from '../src/storage/index.js';
import { startClickHouseHttp, type ClickHouseHttp } from './support/clickhouse-http.js';
import { ALL_BYTES, account, batch, storeConformance } from './support/storage-conformance.js';

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
    ? openStore({ url: realUrl, database, cluster: process.env.CLICKHOUSE_TEST_CLUSTER }, {})
    : openStore({ url: shim!.url, database, user: 'cipher', password: 'pw-never-in-sql' }, {});

storeConformance(realUrl ? 'remote (ClickHouse server)' : 'remote (chDB HTTP shim)', {
  open,
  async dispose(store) {
    if (realUrl) await store.exec(`DROP DATABASE IF EXISTS ${database}${process.env.CLICKHOUSE_TEST_CLUSTER ? ` ON CLUSTER ${process.env.CLICKHOUSE_TEST_CLUSTER}` : ''} SYNC`);
  },
});

describe('remote adapter', () => {
  it('is unavailable against a dead URL', async () => {
    const store = await openStore({ url: 'http://127.0.0.1:9' }, {});
    expect(store.kind).toBe('remote');
    await expect(store.ping()).rejects.toMatchObject({ name: 'StorageError', code: 'storage_unavailable' });
    await expect(store.insertBatches([batch('a', 'b', Date.now())])).rejects.toMatchObject({ code: 'storage_unavailable' });
    await store.close();
  });

  it('takes its settings from CLICKHOUSE_* when options leave them out', async () => {
    const store = await openStore({}, { CLICKHOUSE_URL: 'http://127.0.0.1:9', CLICKHOUSE_DATABASE: 'x' });
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
    const store = await openStore({ url: shim!.url, user: 'cipher', password: 'wrong' }, {});
    await expect(store.putAccount(account('a', 1))).rejects.toMatchObject({ code: 'storage_query_failed', clickhouseCode: 516 });
    await store.close();
  });
});
