/**
 * End to end over real HTTP: seeded points sealed with @cipherstat/protocol, posted to
 * /v1/batches, processed into encrypted rollups in chDB, then every aggregation × interval ×
 * groupBy/filter × time zone checked through POST /v1/query against a plaintext reference.
 * Also: GET /v1/metrics, isolation between accounts, auth codes, and canaries (no plaintext
 * name or tag value and no key in any table or log line).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toBase64, toHex } from '@cipherstat/protocol';
import { ADMIN_TOKEN, createAccount, postAll, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { CANARY, checkAgainstReference, generatePoints, query, queryServer, type RefQuery } from './query-support.js';
import { connectionOf } from '../src/storage/index.js';

const NOW = Date.UTC(2026, 3, 1, 12); // 2026-04-01T12:00Z; the data spans Berlin's spring-forward
const FROM = Date.UTC(2026, 2, 26);
const TO = Date.UTC(2026, 3, 1);
const offset = NOW - Date.now();
const now = () => Date.now() + offset;

let c: TestCollector;
let q: Awaited<ReturnType<typeof queryServer>>;
let a: TestAccount;
let b: TestAccount;
const pointsA = generatePoints(2026, 8000, FROM, TO);
const pointsB = generatePoints(99, 600, FROM, TO).filter((p) => p.name !== CANARY.metric);
const timings: number[] = [];

beforeAll(async () => {
  c = await startTestCollector({ now });
  q = await queryServer(c);
  a = await createAccount(c);
  b = await createAccount(c);
  await postAll(c, a, pointsA, now);
  await postAll(c, b, pointsB, now);
  // one batch with an invalid point: counted as a reject
  await postAll(c, a, [{ kind: 'counter', name: '9bad', value: 1, time: TO - 1000, tags: {} }], now);
  await c.services.processor!.drain();
});

afterAll(async () => {
  if (timings.length) {
    const s = [...timings].sort((x, y) => x - y);
    console.log(`POST /v1/query over HTTP: ${s.length} queries, p50 ${s[s.length >> 1]!.toFixed(1)} ms, p95 ${s[Math.floor(s.length * 0.95)]!.toFixed(1)} ms, max ${s.at(-1)!.toFixed(1)} ms`);
  }
  await q?.close();
  await c?.stop();
});

async function run(token: string, body: unknown) {
  const t0 = performance.now();
  const r = await query(q.url, token, body);
  timings.push(performance.now() - t0);
  return r;
}

describe('POST /v1/query end to end', () => {
  const aggregations = ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p90', 'p95', 'p99', 'last'];
  const shapes: Omit<RefQuery, 'aggregation' | 'interval' | 'timezone'>[] = [
    { metric: 'orders' },
    { metric: 'orders', groupBy: ['country', 'channel'] },
    { metric: 'revenue', groupBy: ['country'], filter: { channel: 'web' } },
    { metric: 'page.load', groupBy: ['page'] },
    { metric: 'page.load', filter: { country: ['DE', 'FR'], page: 'checkout' } },
    { metric: 'temperature' },
  ];
  for (const timezone of ['UTC', 'Europe/Berlin', 'Asia/Kolkata']) {
    it(`matches the plaintext reference in ${timezone}`, async () => {
      for (const interval of ['hour', 'day'] as const) {
        for (const aggregation of aggregations) {
          for (const shape of shapes) {
            const rq: RefQuery = { ...shape, aggregation, interval, timezone };
            const { status, json } = await run(a.readToken, { ...rq, from: new Date(FROM).toISOString(), to: TO, timezone });
            expect(status, JSON.stringify(json)).toBe(200);
            expect(json.meta.failedRows).toBe(0);
            checkAgainstReference(rq, json, pointsA);
          }
        }
      }
      // minutes across the spring-forward instant (01:00Z)
      for (const aggregation of aggregations) {
        for (const shape of shapes.slice(0, 3)) {
          const rq: RefQuery = { ...shape, aggregation, interval: 'minute', timezone };
          const { json } = await run(a.readToken, { ...rq, from: Date.UTC(2026, 2, 29, 0, 15), to: Date.UTC(2026, 2, 29, 1, 45) });
          checkAgainstReference(rq, json, pointsA);
        }
      }
    });
  }

  it('says where each answer\'s time went in Server-Timing: its phases in order, adding up to total, and counts them in the metrics', async () => {
    const body = { metric: 'orders', aggregation: 'sum', interval: 'hour', groupBy: ['country'], filter: { channel: 'web' }, from: FROM, to: TO, timezone: 'Asia/Kolkata' };
    const phasesOf = (h: Headers) =>
      (h.get('server-timing') ?? '').split(', ').map((p) => {
        const m = /^([a-z]+);dur=(\d+\.\d)$/.exec(p);
        expect(m, p).not.toBeNull();
        return [m![1]!, Number(m![2])] as const;
      });
    const first = await run(a.readToken, body);
    expect(first.status).toBe(200);
    const phases = phasesOf(first.headers);
    const names = phases.map(([n]) => n);
    expect(names.at(-1)).toBe('total');
    // the phases of a query that read its rows, in the order they ran (wait: embedded chDB's lane)
    const ran = first.json.meta.cached ? ['auth', 'body', 'context', 'cache', 'json'] : ['auth', 'body', 'context', 'wait', 'statement', 'handoff', 'merge', 'labels', 'finish', 'json'];
    expect(names.filter((n) => n !== 'total' && n !== 'open' && n !== 'count')).toEqual(ran);
    if (!first.json.meta.cached) expect(names).toContain('open');
    // one after another: the phases add up to total (each rounded to 0.1 ms)
    const sum = phases.filter(([n]) => n !== 'total' && n !== 'open').reduce((t, [, d]) => t + d, 0);
    const total = phases.at(-1)![1];
    expect(Math.abs(sum - total)).toBeLessThanOrEqual(0.05 * phases.length + 1e-9);
    const prom = await (await fetch(`${q.url}/metrics`)).text();
    for (const p of ['auth', 'body', 'context', 'json']) expect(prom).toMatch(new RegExp(`^cipherstat_query_phase_seconds_total\\{phase="${p}"\\} [0-9.e-]+$`, 'm'));
    expect(prom).toMatch(/^cipherstat_query_open_seconds_total [0-9.e-]+$/m);
  });

  it('keeps accounts apart and checks tokens', async () => {
    const orders = { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: TO };
    const total = (json: { series: { points: [number, number][] }[] }) => json.series.reduce((n, s) => n + s.points.reduce((m, [, v]) => m + v, 0), 0);
    expect(total((await run(a.readToken, orders)).json)).toBe(pointsA.filter((p) => p.name === 'orders').length);
    expect(total((await run(b.readToken, orders)).json)).toBe(pointsB.filter((p) => p.name === 'orders').length);
    // B asking for a metric only A has (grouped by A's tag or not): 404 unknown_metric, as for any
    // name B never recorded; the closest names come from B's own names, nothing of A's is in the body.
    const unknownToB = (r: { status: number; json: { error: { code: string; message: string } } }, asked: string) => {
      expect([r.status, r.json.error.code]).toEqual([404, 'unknown_metric']);
      const text = JSON.stringify(r.json).replaceAll(JSON.stringify(JSON.stringify(asked)).slice(1, -1), '');
      for (const leak of [CANARY.metric, CANARY.key, CANARY.value, a.accountId]) expect(text).not.toContain(leak);
    };
    unknownToB(await run(b.readToken, { ...orders, metric: CANARY.metric, groupBy: [CANARY.key] }), CANARY.metric);
    unknownToB(await run(b.readToken, { ...orders, metric: CANARY.metric, aggregation: 'sum' }), CANARY.metric);
    // one edit from A's canary name: A's name would be the closest, but B is never offered it
    const nearCanary = `${CANARY.metric.slice(0, -1)}_`;
    unknownToB(await run(b.readToken, { ...orders, metric: nearCanary }), nearCanary);
    // suggestions work (so the checks above are not vacuous): B's own names are offered
    const near = await run(b.readToken, { ...orders, metric: 'order' });
    expect([near.status, near.json.error.code]).toEqual([404, 'unknown_metric']);
    expect(near.json.error.message).toContain('did you mean "orders"');
    expect((await run(a.readToken, { ...orders, metric: CANARY.metric, aggregation: 'sum' })).json.series[0].points.some(([, v]: number[]) => v! > 0)).toBe(true);

    for (const token of ['csr_' + 'A'.repeat(43), 'nonsense', ADMIN_TOKEN, '']) {
      const r = await query(q.url, token, orders);
      expect(r.status).toBe(401);
      expect(r.json.error.code).toBe('unauthorized');
    }
    const listing = await fetch(`${q.url}/v1/metrics`);
    expect(listing.status).toBe(401);
  });

  it('refuses deactivated (403) and deleted (410) accounts', async () => {
    const d = await createAccount(c);
    const e = await createAccount(c);
    const body = { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: TO };
    // active: answered (404 unknown_metric: a fresh account recorded nothing yet), not refused
    const r0 = await query(q.url, d.readToken, body);
    expect([r0.status, r0.json.error.code]).toEqual([404, 'unknown_metric']);
    expect((await fetch(`${q.url}/v1/metrics`, { headers: { authorization: `Bearer ${d.readToken}` } })).status).toBe(200);
    await c.services.accounts.update(d.accountId, { state: 'deactivated', deactivatedAt: now() });
    await c.services.accounts.update(e.accountId, { state: 'shredded', shreddedAt: now() });
    const r1 = await query(q.url, d.readToken, body);
    const r2 = await query(q.url, e.readToken, body);
    expect([r1.status, r1.json.error.code]).toEqual([403, 'account_deactivated']);
    expect([r2.status, r2.json.error.code]).toEqual([410, 'account_deleted']);
    // the listing is refused alike
    const l1 = await fetch(`${q.url}/v1/metrics`, { headers: { authorization: `Bearer ${d.readToken}` } });
    const l2 = await fetch(`${q.url}/v1/metrics`, { headers: { authorization: `Bearer ${e.readToken}` } });
    expect([l1.status, l2.status]).toEqual([403, 410]);
  });

  it('answers bad queries with 400 and a stable code', async () => {
    const res = await fetch(`${q.url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${a.readToken}` }, body: '{not json' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_json');
    const r = await run(a.readToken, { metric: 'orders', aggregation: 'count', interval: 'hour', from: FROM, to: TO, timezone: 'Nowhere/Land' });
    expect([r.status, r.json.error.code]).toEqual([400, 'invalid_time_zone']);
    const prom = await (await fetch(`${q.url}/metrics`)).text();
    expect(prom).toMatch(/cipherstat_query_cache_total\{result="miss"\} [1-9]/);
    expect(prom).toContain('cipherstat_query_seconds_bucket');
    expect(prom).not.toContain(a.accountId);
  });
});

describe('GET /v1/metrics', () => {
  it('lists names, kinds, tags, the 24-hour volume and rejects', async () => {
    const res = await fetch(`${q.url}/v1/metrics`, { headers: { authorization: `Bearer ${a.readToken}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { accountId: string; metrics: { name: string; kind: string; tags: { key: string; values: string[] | null }[]; points24h: number }[]; rejects: Record<string, number> };
    expect(body.accountId).toBe(a.accountId);
    const byName = Object.fromEntries(body.metrics.map((m) => [m.name, m]));
    expect(Object.keys(byName).sort()).toEqual([CANARY.metric, 'orders', 'page.load', 'revenue', 'temperature'].sort());
    expect(byName.orders!.kind).toBe('counter');
    expect(byName['page.load']!.kind).toBe('histogram');
    expect(byName.temperature!.kind).toBe('gauge');
    expect(byName.orders!.tags).toEqual([
      { key: 'channel', values: ['app', 'web'], distinctValues: 2 },
      { key: 'country', values: ['DE', 'FR', 'IN', 'US'], distinctValues: 4 },
    ]);
    const since = Math.floor(NOW / 3_600_000) * 3_600_000 - 23 * 3_600_000;
    for (const m of body.metrics) {
      expect(m.points24h, m.name).toBe(pointsA.filter((p) => p.name === m.name && p.time >= since).length);
    }
    expect(body.rejects).toEqual({ invalid_name: 1 });
  });
});

describe('canaries', () => {
  it('no plaintext name, tag or value and no key in any table (and query log, where the engine keeps one) or log line', async () => {
    const store = c.services.store;
    const keys = (await c.services.keyring.accountKeys(a.accountId))!;
    const secrets = keys.flatMap((k) => [k.dataKey, k.macKey, k.secretKey]).flatMap((k) => [toBase64(k), toHex(k)]);
    const needles = [CANARY.metric, CANARY.key, CANARY.value, 'page.load', 'checkout', a.readToken, ...secrets];
    const dumps: string[] = [];
    await connectionOf(store).exec('SYSTEM FLUSH LOGS').catch(() => {});
    const tables = [...(await store.tables())];
    const system = await connectionOf(store).query<{ t: string }>(`SELECT concat(database, '.', name) AS t FROM system.tables WHERE database = 'system' AND name IN ('query_log', 'text_log', 'query_thread_log')`);
    tables.push(...system.map((r) => r.t));
    for (const t of tables) {
      const [db, name] = t.split('.') as [string, string];
      const cols = await connectionOf(store).query<{ name: string }>('SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}', { db, t: name });
      const select = cols.map((col) => `toString(\`${col.name}\`)`).join(', ');
      const rows = await connectionOf(store).query<Record<string, string>>(`SELECT ${select} FROM ${t}`);
      dumps.push(rows.map((r) => Object.values(r).join('\t')).join('\n'));
    }
    const all = dumps.join('\n');
    expect(all).toContain(a.accountId); // the dump is real
    const logs = c.logs.join('');
    expect(logs).toContain(a.accountId);
    for (const n of needles) {
      expect(all.includes(n), `storage holds ${n.slice(0, 12)}…`).toBe(false);
      expect(logs.includes(n), `logs hold ${n.slice(0, 12)}…`).toBe(false);
    }
  });
});
