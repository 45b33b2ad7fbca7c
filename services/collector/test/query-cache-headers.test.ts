/** QueryCache (TTL, LRU, generations) and the dashboard's security headers, without storage. */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { QueryCache } from '../src/query/index.js';
import { DashboardFiles, securityHeaders, serveDashboard } from '../src/query/dashboard.js';

describe('QueryCache', () => {
  it('serves within the TTL, then forgets', () => {
    let t = 0;
    const c = new QueryCache({ ttlMs: 100, now: () => t });
    c.set('a', 'k', 1, c.generation('a'));
    expect(c.get('a', 'k')).toBe(1);
    expect(c.get('b', 'k')).toBeUndefined();
    t = 100;
    expect(c.get('a', 'k')).toBeUndefined();
  });

  it('evicts the least recently used entry', () => {
    const c = new QueryCache({ maxEntries: 2 });
    c.set('a', '1', 1, 0);
    c.set('a', '2', 2, 0);
    c.get('a', '1');
    c.set('a', '3', 3, 0);
    expect([c.get('a', '1'), c.get('a', '2'), c.get('a', '3')]).toEqual([1, undefined, 3]);
  });

  it('never stores an answer computed before an invalidation', () => {
    const c = new QueryCache();
    const gen = c.generation('a'); // query starts
    c.invalidate(['a']); // new data processed meanwhile
    c.set('a', 'k', 'stale', gen);
    expect(c.get('a', 'k')).toBeUndefined();
    c.set('a', 'k', 'fresh', c.generation('a'));
    expect(c.get('a', 'k')).toBe('fresh');
    c.invalidate(['b']);
    expect(c.get('a', 'k')).toBe('fresh');
    c.dropAccount('a');
    expect(c.get('a', 'k')).toBeUndefined();
  });

  it('keeps pseudonym calculators per account and key version, dropped with the account', () => {
    const c = new QueryCache();
    const k1 = new Uint8Array(32).fill(1);
    const p = c.pseudonyms('a', 1, k1);
    expect(c.pseudonyms('a', 1, k1.slice())).toBe(p);
    expect(c.pseudonyms('a', 1, new Uint8Array(32).fill(2))).not.toBe(p);
    c.dropAccount('a');
    expect(c.pseudonyms('a', 1, k1)).not.toBe(p);
  });
});

describe('dashboard headers and files', () => {
  const app = (trustProxy: boolean, dir: string) => {
    const h = new Hono();
    h.use('*', securityHeaders(trustProxy));
    const serve = serveDashboard(new DashboardFiles(dir));
    h.get('/', serve);
    h.get('/assets/:name', serve);
    return h;
  };

  it('sends a strict CSP and HSTS only over TLS', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cipherstat-dash-'));
    try {
      mkdirSync(join(dir, 'assets'));
      writeFileSync(join(dir, 'index.html'), '<!doctype html><title>x</title>');
      writeFileSync(join(dir, 'assets', 'app-abc.js'), 'console.log(1)');
      const plain = await app(false, dir).request('http://x/');
      const csp = plain.headers.get('content-security-policy')!;
      for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "require-trusted-types-for 'script'"]) {
        expect(csp).toContain(d);
      }
      expect(csp).not.toContain('unsafe');
      expect(plain.headers.get('strict-transport-security')).toBeNull();
      expect(plain.headers.get('content-type')).toContain('text/html');
      expect(plain.headers.get('cache-control')).toBe('no-cache');
      expect((await app(false, dir).request('https://x/')).headers.get('strict-transport-security')).toContain('max-age=');
      const proxied = { headers: { 'x-forwarded-proto': 'https' } };
      expect((await app(false, dir).request('http://x/', proxied)).headers.get('strict-transport-security')).toBeNull();
      expect((await app(true, dir).request('http://x/', proxied)).headers.get('strict-transport-security')).toContain('max-age=');
      const js = await app(false, dir).request('http://x/assets/app-abc.js');
      expect(js.headers.get('content-type')).toContain('text/javascript');
      expect(js.headers.get('x-content-type-options')).toBe('nosniff');
      expect((await app(false, dir).request('http://x/assets/nope.js')).status).toBe(404);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says so when the dashboard is not built', async () => {
    const res = await app(false, '/nonexistent/dashboard').request('http://x/');
    expect(res.status).toBe(503);
    expect(await res.text()).toContain('npm run build');
  });
});
