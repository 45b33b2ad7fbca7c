/**
 * The canary invariant: no plaintext metric name, tag key, tag value or value, and no key or
 * token, reaches ClickHouse (every table of every database, dumped through ClickHouse itself,
 * every column as text), any file in the data directory, or any log line.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { toBase64, toHex } from '@cipherstat/protocol';
import { createAccount, envelope, post, startTestCollector, ADMIN_TOKEN, type TestAccount, type TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';

const CANARY = {
  name: 'canary.metric_Xq7Zk9',
  histogram: 'canary.latency_Mv3Wp2',
  tagKey: 'canary_key_Jf8Lr4',
  tagValue: 'canary-value-Tb5Nz1',
  unicodeValue: 'Kanarienvogel-Ünïcødé-Hd2Qs6',
  value: 987654.321987,
};
const NEEDLES = [CANARY.name, CANARY.histogram, CANARY.tagKey, CANARY.tagValue, CANARY.unicodeValue, String(CANARY.value), '987654.32'];

let c: TestCollector;
let account: TestAccount;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

beforeAll(async () => {
  c = await startTestCollector();
  account = await createAccount(c);
  const now = Date.now();
  for (let b = 0; b < 5; b++) {
    const pts = Array.from({ length: 50 }, (_, i) => ({
      id: i,
      kind: (i % 2 ? 'histogram' : 'counter') as 'histogram' | 'counter',
      name: i % 2 ? CANARY.histogram : CANARY.name,
      value: i === 0 ? CANARY.value : CANARY.value + i,
      time: now - 60_000 * b,
      tags: { [CANARY.tagKey]: i % 3 ? CANARY.tagValue : CANARY.unicodeValue },
    }));
    expect((await post(c.url, envelope(account, pts).bytes)).status).toBe(202);
  }
  await c.services.processor!.drain();
  // Exercise the read paths that exist, so their logs and query traces are covered too.
  await c.admin('GET', `/v1/accounts/${account.accountId}`);
  await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${account.readToken}` } });
  await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric: CANARY.name, aggregation: 'sum', from: now - 3_600_000, to: now + 60_000, interval: 'minute', groupBy: [CANARY.tagKey], filter: { [CANARY.tagKey]: CANARY.tagValue } }),
  });
});
afterAll(async () => c?.stop());

it('the data really is there (processed, rolled up)', async () => {
  const rows = await c.services.store.countAccountRows(account.accountId);
  expect(rows.batches).toBe(5);
  expect(rows.rollups).toBeGreaterThan(0);
  expect(rows.dictionary).toBeGreaterThan(0);
});

it('no canary and no secret in any table of any database, dumped through ClickHouse', async () => {
  const store = c.services.store;
  const dbs = await connectionOf(store).query<{ name: string }>("SELECT name FROM system.databases WHERE name NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')");
  let dumped = 0;
  let text = '';
  for (const { name: db } of dbs) {
    const tables = await connectionOf(store).query<{ name: string }>('SELECT name FROM system.tables WHERE database = {db:String}', { db });
    for (const { name: t } of tables) {
      const cols = await connectionOf(store).query<{ name: string }>('SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}', { db, t });
      const select = cols.map((col) => `toString(\`${col.name}\`)`).join(', ');
      const rows = await connectionOf(store).query<Record<string, string>>(`SELECT ${select} FROM \`${db}\`.\`${t}\``);
      dumped += rows.length;
      text += JSON.stringify(rows);
    }
  }
  // ClickHouse's own logs of the queries we sent, where the engine keeps them.
  for (const t of ['query_log', 'text_log', 'query_thread_log']) {
    const exists = await connectionOf(store).query<{ n: string }>("SELECT count() AS n FROM system.tables WHERE database = 'system' AND name = {t:String}", { t });
    if (Number(exists[0]!.n)) text += JSON.stringify(await connectionOf(store).query(`SELECT * FROM system.${t}`));
  }
  // Positive control: the dump holds at least every row stored for the account (its batches,
  // rollup rows and dictionary entries), not a fixed number (rows per point change with the levels a tick writes).
  const stored = await store.countAccountRows(account.accountId);
  expect(dumped).toBeGreaterThanOrEqual(stored.batches! + stored.rollups! + stored.dictionary!);
  expect(text).toContain(account.accountId); // positive control: the dump holds what is stored
  for (const needle of NEEDLES) expect(text.includes(needle), needle).toBe(false);
  for (const secret of secrets()) expect(text.includes(secret), 'a key or token').toBe(false);
});

function secrets(): string[] {
  const keys = c.services.keyring.accountKeys(account.accountId)!;
  const out = [ADMIN_TOKEN, account.readToken];
  for (const k of keys) for (const b of [k.secretKey, k.dataKey, k.macKey]) out.push(toBase64(b), toHex(b));
  const t = c.services.keyring.currentTransportKey();
  out.push(toBase64(t.secretKey), toHex(t.secretKey));
  return out;
}

it('no canary and no raw secret in any file of the data directory', () => {
  const files = filesUnder(c.dataDir);
  expect(files.length).toBeGreaterThan(10);
  const keys = c.services.keyring.accountKeys(account.accountId)!;
  const rawSecrets = keys.flatMap((k) => [k.secretKey, k.dataKey, k.macKey]).map((b) => Buffer.from(b));
  for (const f of files) {
    if (statSync(f).size > 50_000_000) continue;
    const bytes = readFileSync(f);
    const latin = bytes.toString('latin1');
    const utf8 = bytes.toString('utf8');
    for (const needle of NEEDLES) expect(latin.includes(needle) || utf8.includes(needle), `${needle} in ${f}`).toBe(false);
    for (const raw of rawSecrets) expect(bytes.includes(raw), `raw key bytes in ${f}`).toBe(false);
    for (const s of secrets()) expect(utf8.includes(s), `secret text in ${f}`).toBe(false);
  }
});

it('no canary and no secret in any log line', () => {
  const logs = c.logs.join('');
  expect(logs.length).toBeGreaterThan(100);
  for (const needle of NEEDLES) expect(logs.includes(needle), needle).toBe(false);
  for (const s of secrets()) expect(logs.includes(s)).toBe(false);
  expect(logs).toContain(account.accountId); // positive control: the logs were captured
});
