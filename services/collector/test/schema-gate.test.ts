/**
 * The rolling-upgrade gate (src/schema-gate.ts): once a newer collector migrated storage, a
 * node of this version stops answering queries, committing ticks and compaction passes, and
 * /readyz says not ready; it refuses to start on such storage. Ingest keeps storing batches.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SchemaGate } from '../src/schema-gate.js';
import { connectionOf } from '../src/storage/index.js';
import { MIGRATIONS_TABLE, SCHEMA_VERSION } from '../src/storage/schema.js';
import { isCollectorError } from '../src/errors.js';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';

let c: TestCollector;
let account: TestAccount;
const minute = Math.floor(Date.now() / 60_000) * 60_000;
const query = () =>
  fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: 'page.views', aggregation: 'sum', interval: 'hour', from: minute - 3_600_000, to: minute + 3_600_000 }),
  });
const accepted = async () => {
  const [row] = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
  return Number(row?.n ?? 0);
};

beforeAll(async () => {
  // schemaCheckMs 0: every guarded call re-reads the version (no waiting on a clock in the test).
  c = await startTestCollector({ config: { schemaCheckMs: 0 } });
  account = await createAccount(c);
});
afterAll(async () => c?.stop());

describe('schema gate', () => {
  it('serves while storage is at this collector\'s version', async () => {
    // Two ticks: two rows per group, which a compaction pass would merge (and write).
    for (const n of [2, 3]) {
      expect((await post(c.url, envelope(account, points(n, () => ({ name: 'page.views', value: 1, time: minute + 1 }))).bytes)).status).toBe(202);
      await c.services.processor!.drain();
    }
    expect(await accepted()).toBe(5);
    const res = await query();
    expect(res.status).toBe(200);
    const ready = await (await fetch(`${c.url}/readyz`)).json();
    expect(ready).toMatchObject({ ready: true, storage: true, schemaVersion: SCHEMA_VERSION });
  });

  it('once a newer collector migrated storage: queries 503 schema_newer, /readyz 503, ticks and compaction stop before writing; ingest still stores', async () => {
    await connectionOf(c.services.store).exec(`INSERT INTO ${MIGRATIONS_TABLE} (version, applied_at) VALUES (${SCHEMA_VERSION + 1}, now64(3))`);

    const res = await query();
    expect(res.status).toBe(503);
    expect((await res.json()).error.code).toBe('schema_newer');
    expect(res.headers.get('retry-after')).toBe('60');
    const ready = await fetch(`${c.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, storage: true, schemaVersion: SCHEMA_VERSION + 1 });

    // The batch is stored (202) but this node does not commit its tick: nothing more is counted.
    expect((await post(c.url, envelope(account, points(3, () => ({ name: 'page.views', value: 1, time: minute + 2 }))).bytes)).status).toBe(202);
    await c.services.processor!.drain();
    expect(await accepted()).toBe(5);
    expect(c.logs.join('')).toContain("newer than this collector's");
    const [stored] = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM batches WHERE account_id = {a:String}', { a: account.accountId });
    expect(Number(stored!.n)).toBe(3);

    let compaction: unknown;
    try {
      await c.services.compactor!.runPass();
    } catch (e) {
      compaction = e;
    }
    expect(isCollectorError(compaction) && compaction.code).toBe('schema_newer');
  });

  it('refuses to start on storage newer than this collector', async () => {
    const store = { schemaVersion: async () => SCHEMA_VERSION + 1 };
    expect(() => new SchemaGate(store, SCHEMA_VERSION, SCHEMA_VERSION + 1, 0, Date.now)).toThrow(/refusing to start: storage is at schema version \d+, newer than this collector's/);
    // At the same version: starts, and reads the version again only once checkMs passed.
    let reads = 0;
    let t = 0;
    const gate = new SchemaGate({ schemaVersion: async () => (reads++, SCHEMA_VERSION) }, SCHEMA_VERSION, SCHEMA_VERSION, 1000, () => t);
    await gate.check();
    expect(reads).toBe(0);
    t = 1000;
    await gate.check();
    expect(reads).toBe(1);
    expect(gate.current).toBe(true);
  });
});
