import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toBase64 } from '@cipherstat/protocol';
import { Admission } from '../src/ingest/admission.js';
import { RateLimiter } from '../src/ingest/rate-limit.js';
import { createAccount, envelope, points, post, startTestCollector, type TestCollector, type TestAccount } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';

let c: TestCollector;
let account: TestAccount;

beforeAll(async () => {
  c = await startTestCollector({ config: { rateLimit: 50 } });
  account = await createAccount(c);
});
afterAll(async () => c?.stop());

describe('ingest and process, end to end', () => {
  it('serves the collector key the account was created with', async () => {
    const res = await fetch(`${c.url}/v1/collector-key`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(account.collectorKey);
  });

  it('accepts envelopes (binary and base64 text), processes every point, counts rejects', async () => {
    const a = envelope(account, points(100, (i) => ({ value: i, tags: { country: i % 2 ? 'DE' : 'FR' } })));
    const b = envelope(account, points(10, (i) => ({ name: i === 0 ? 'bad name' : 'page.load_ms', kind: 'histogram', value: 100 + i })));
    const ra = await post(c.url, a.bytes);
    expect(ra.status).toBe(202);
    expect(await ra.json()).toEqual({ batchId: a.batchId, duplicate: false });
    const rb = await post(c.url, toBase64(b.bytes));
    expect(rb.status).toBe(202);
    await c.services.processor!.drain();
    const processed = await connectionOf(c.services.store).query<{ accepted: string; rejected: string }>(
      'SELECT sum(accepted) AS accepted, sum(rejected) AS rejected FROM processed FINAL WHERE account_id = {a:String}',
      { a: account.accountId },
    );
    expect(Number(processed[0]!.accepted)).toBe(109);
    expect(Number(processed[0]!.rejected)).toBe(1);
    expect(await c.services.store.rejects(account.accountId)).toEqual({ invalid_name: 1 });
    const rows = await c.services.store.countAccountRows(account.accountId);
    expect(rows.batches).toBe(2);
    expect(rows.rollups).toBeGreaterThan(0);
  });

  it('stores a batch once however often it is sent (idempotent by batch id)', async () => {
    const e = envelope(account, points(5));
    const results = await Promise.all([post(c.url, e.bytes), post(c.url, e.bytes), post(c.url, toBase64(e.bytes))]);
    expect(results.map((r) => r.status)).toEqual([202, 202, 202]);
    const bodies = await Promise.all(results.map((r) => r.json()));
    expect(bodies.filter((b) => !b.duplicate)).toHaveLength(1);
    const again = await post(c.url, e.bytes);
    expect(await again.json()).toEqual({ batchId: e.batchId, duplicate: true });
    await c.services.processor!.drain();
    const n = await connectionOf(c.services.store).query<{ n: string }>(
      'SELECT count() AS n FROM batches FINAL WHERE account_id = {a:String} AND batch_id = {b:String}',
      { a: account.accountId, b: e.batchId },
    );
    expect(Number(n[0]!.n)).toBe(1);
    const p = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM processed FINAL WHERE batch_id = {b:String}', { b: e.batchId });
    expect(Number(p[0]!.n)).toBe(1);
  });

  it('enforces per-account allowed origins', async () => {
    const shop = await createAccount(c, { allowedOrigins: ['https://shop.example'] });
    const ok = await post(c.url, envelope(shop, points(1)).bytes, { origin: 'https://shop.example' });
    expect(ok.status).toBe(202);
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://shop.example');
    const bad = await post(c.url, envelope(shop, points(1)).bytes, { origin: 'https://evil.example' });
    expect(bad.status).toBe(403);
    expect((await bad.json()).error.code).toBe('origin_not_allowed');
    // CORS (ingest/cors.ts): on an answer and on a refusal alike, a browser may read Retry-After.
    for (const r of [ok, bad]) {
      expect(r.headers.get('access-control-expose-headers')).toBe('Retry-After');
      expect(r.headers.get('vary')).toBe('Origin');
      expect(r.headers.get('content-type')).toMatch(/^application\/json/);
    }
    expect(bad.headers.get('access-control-allow-origin')).toBe('https://evil.example'); // readable: the refusal says why
    const noOrigin = await post(c.url, envelope(shop, points(1)).bytes);
    expect(noOrigin.headers.get('access-control-allow-origin')).toBeNull();
    const preflight = await fetch(`${c.url}/v1/batches`, { method: 'OPTIONS', headers: { origin: 'https://shop.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://shop.example');
    expect(preflight.headers.get('access-control-allow-methods')).toBe('GET,POST,OPTIONS');
    expect(preflight.headers.get('access-control-allow-headers')).toBe('Content-Type');
    expect(preflight.headers.get('access-control-max-age')).toBe('86400');
    const key = await fetch(`${c.url}/v1/collector-key`, { headers: { origin: 'https://shop.example' } });
    expect([key.headers.get('access-control-allow-origin'), key.headers.get('cache-control')]).toEqual(['https://shop.example', 'public, max-age=300']);
  });

  it('answers 401 for an unknown account and 429 with Retry-After over the rate limit', async () => {
    const ghost = { ...account, accountId: 'acct_000000000000000000000000' };
    const r = await post(c.url, envelope(ghost, points(1)).bytes);
    expect(r.status).toBe(401);
    expect((await r.json()).error.code).toBe('unknown_account');
    const limited = await createAccount(c);
    const envelopes = Array.from({ length: 130 }, () => envelope(limited, points(1)).bytes);
    const original = c.services.rateLimiter;
    const t = Date.now(); // a frozen clock: exactly the burst (2 s worth of 50/s) passes, however slow the machine
    c.services.rateLimiter = new RateLimiter(50, undefined, () => t);
    const responses = await Promise.all(envelopes.map((e) => post(c.url, e))).finally(() => (c.services.rateLimiter = original));
    const statuses = responses.map((r) => r.status);
    const retryAfter = responses.find((r) => r.status === 429)?.headers.get('retry-after');
    expect(statuses.filter((s) => s === 202).length).toBeLessThanOrEqual(100);
    expect(statuses).toContain(429);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
  });
});

describe('abuse', () => {
  it('a replayed envelope does not drain the account rate limit', async () => {
    const victim = await createAccount(c);
    const replayed = envelope(victim, points(1)).bytes;
    for (let i = 0; i < 150; i++) {
      const r = await post(c.url, replayed);
      expect(r.status).toBe(202);
    }
    const fresh = await post(c.url, envelope(victim, points(1)).bytes);
    expect(fresh.status).toBe(202);
    expect((await fresh.json()).duplicate).toBe(false);
  });

  it('limits batches per sender address (in memory only)', async () => {
    const original = c.services.admission;
    const t = Date.now(); // a frozen clock: exactly the burst (2 s worth) passes
    c.services.admission = new Admission({ requestsPerSecond: 20, bytesPerSecond: 1 << 30, maxBodyBytes: 1 << 20, maxInflightBytes: 1 << 30, now: () => t });
    try {
      const accounts = await Promise.all([createAccount(c), createAccount(c), createAccount(c)]);
      const all = accounts.flatMap((a) => Array.from({ length: 30 }, () => envelope(a, points(1)).bytes));
      const statuses = (await Promise.all(all.map((e) => post(c.url, e)))).map((r) => r.status);
      expect(statuses.filter((x) => x === 429).length).toBe(90 - 40);
    } finally {
      c.services.admission = original;
    }
  });

  it('a sender in use keeps its spent budget while many other keys come and go; one no longer in use is forgotten', () => {
    const t = Date.now(); // a frozen clock: nothing refills
    const limiter = new RateLimiter(1, 2, () => t, 1000); // at most 1,000 keys
    expect([limiter.take('busy'), limiter.take('busy'), limiter.take('idle'), limiter.take('idle')]).toEqual([0, 0, 0, 0]);
    for (let i = 0; i < 3000; i++) {
      limiter.take(`other-${i}`);
      if (i % 100 === 0) expect(limiter.take('busy')).toBeGreaterThan(0); // refused, but in use
    }
    expect(limiter.take('busy')).toBeGreaterThan(0);
    expect(limiter.take('idle')).toBe(0); // forgotten: a full bucket again (memory stays bounded)
  });
});

describe('admin API', () => {
  it('requires the admin token; a read token is not one', async () => {
    expect((await fetch(`${c.url}/v1/accounts`)).status).toBe(401);
    const withRead = await fetch(`${c.url}/v1/accounts`, { headers: { authorization: `Bearer ${account.readToken}` } });
    expect(withRead.status).toBe(401);
    expect((await withRead.json()).error.code).toBe('unauthorized');
  });

  it('lists and shows accounts without secrets', async () => {
    const list = await (await c.admin('GET', '/v1/accounts')).json();
    expect(list.accounts.map((a: { accountId: string }) => a.accountId)).toContain(account.accountId);
    const shown = await (await c.admin('GET', `/v1/accounts/${account.accountId}`)).json();
    expect(shown).toMatchObject({ accountId: account.accountId, state: 'active', writeKey: account.writeKey });
    const text = JSON.stringify(list) + JSON.stringify(shown);
    expect(text).not.toContain(account.readToken);
    expect(text).not.toMatch(/readTokenHash|secretKey|dataKey|macKey/);
    expect((await c.admin('GET', '/v1/accounts/acct_nope0000')).status).toBe(404);
  });

  it('validates account creation input', async () => {
    const r = await c.admin('POST', '/v1/accounts', { allowedOrigins: ['not an origin'] });
    expect(r.status).toBe(400);
    expect((await r.json()).error.code).toBe('invalid_request');
  });
});

describe('ops', () => {
  it('healthz, readyz and Prometheus metrics without tenant labels', async () => {
    expect((await fetch(`${c.url}/healthz`)).status).toBe(200);
    const ready = await fetch(`${c.url}/readyz`);
    expect(ready.status).toBe(200);
    expect((await ready.json()).ready).toBe(true);
    const text = await (await fetch(`${c.url}/metrics`)).text();
    expect(text).toContain('cipherstat_batches_total{outcome="accepted"}');
    expect(text).toContain('cipherstat_processing_lag_seconds_bucket');
    expect(text).not.toContain(account.accountId);
    // Per-account caches, counted by cache (the batches above were ingested and processed).
    const lookups = (cache: string) =>
      [...text.matchAll(new RegExp(`^cipherstat_cache_lookups_total\\{cache="${cache}",outcome="(hit|miss)"\\} (\\d+)`, 'gm'))].reduce((n, m) => n + Number(m[2]), 0);
    for (const cache of ['account_state', 'account_keys', 'tick_account', 'series', 'pseudonym']) expect(lookups(cache), cache).toBeGreaterThan(0);
  });
});
