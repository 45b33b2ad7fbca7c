/**
 * The <script> build in real Chromium. The storefront page and the collector live on
 * different origins (as in production), so posts go through CORS. The fake collector
 * really opens every envelope with the protocol and records batch ids.
 * Needs the build (`npx rollup -c`; `npm test` builds first) and /usr/bin/chromium.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from './helpers/collector.js';

const BUNDLE = fileURLToPath(new URL('../dist/cipherstat.min.js', import.meta.url));
const FALLBACK = fileURLToPath(new URL('../dist/cipherstat-fallback.min.js', import.meta.url));
/** Requests for the fallback chunk (tweetnacl) so far. */
let fallbackLoads = 0;
const CHROMIUM = '/usr/bin/chromium';

let browser: Browser;
let shop: Server;
let shopOrigin: string;
let pages: Record<string, string> = {};
let col: Collector;
let context: BrowserContext;
let page: Page;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(f: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

beforeAll(async () => {
  if (!existsSync(BUNDLE)) throw new Error('dist/cipherstat.min.js is missing: run `npx rollup -c` (npm test builds first)');
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing`);
  const bundle = readFileSync(BUNDLE);
  const fallback = readFileSync(FALLBACK);
  shop = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/cipherstat.min.js' || path === '/cipherstat-fallback.min.js') {
      fallbackLoads += +(path !== '/cipherstat.min.js');
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(path === '/cipherstat.min.js' ? bundle : fallback);
    }
    if (path in pages) {
      res.writeHead(200, { 'content-type': 'text/html', 'cache-control': 'no-store' });
      return res.end(pages[path]);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => shop.listen(0, '127.0.0.1', r));
  shopOrigin = `http://127.0.0.1:${(shop.address() as AddressInfo).port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});
afterAll(async () => {
  await browser?.close();
  await new Promise((r) => shop?.close(r));
});

beforeEach(async () => {
  col = await startCollector();
  context = await browser.newContext();
  page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
});
afterEach(async () => {
  await context.close();
  await col.close();
});

/** A storefront page: the script tag, then `setup` (which may use window.Cipherstat). */
/** Batches in the page's localStorage outbox. */
const stored = () => page.evaluate(() => (JSON.parse(localStorage.getItem('cipherstat:acct_test_0001') ?? '{"q":[]}').q as unknown[]).length);
const html = (scriptTag: string, setup = '') =>
  `<!doctype html><html><head><meta charset="utf-8"></head><body><h1>shop</h1>${scriptTag}<script>${setup}</script></body></html>`;
const options = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, ...extra });

describe('Chromium', () => {
  it('exposes window.Cipherstat and throws LibraryError for a bad option', async () => {
    pages = { '/': html('<script src="/cipherstat.min.js"></script>') };
    await page.goto(shopOrigin + '/');
    const r = await page.evaluate(() => {
      const C = (window as unknown as { Cipherstat: Record<string, unknown> }).Cipherstat;
      try {
        (C.createLibrary as (o: unknown) => unknown)({ endpoint: 'nope' });
        return 'no error';
      } catch (e) {
        return [typeof C.createLibrary, (e as Error).name, (e as { code: string }).code, e instanceof (C.LibraryError as typeof Error)];
      }
    });
    expect(r).toEqual(['function', 'LibraryError', 'invalid_option', true]);
  });

  it('(a) navigating away right after recording: the points arrive by sendBeacon', async () => {
    const key = col.collectorKey;
    pages = {
      '/': html(
        `<script src="/cipherstat.min.js" data-endpoint="${col.endpoint}" data-account="${col.accountId}" data-write-key="${col.writeKey}" data-collector-key-id="${key.keyId}" data-collector-key="${key.publicKey}"></script>`,
      ),
      '/next': html(''),
    };
    await page.goto(shopOrigin + '/');
    await page.evaluate(() => {
      const lib = (window as unknown as { Cipherstat: { instance: { count(n: string, v?: number, t?: object): void; observe(n: string, v: number): void } } }).Cipherstat.instance;
      lib.count('checkout.clicked', 1, { step: 'pay' });
      lib.observe('page.load_ms', performance.now());
    });
    await page.goto(shopOrigin + '/next'); // pagehide → sendBeacon (the 5 s flush timer never fired)
    await col.waitForBatches(1);
    expect(col.points().map((p) => [p.name, p.tags])).toEqual([
      ['checkout.clicked', { step: 'pay' }],
      ['page.load_ms', {}],
    ]);
    expect(col.posts().map((p) => p.contentType)).toEqual(['text/plain']);
    expect(col.keyFetches()).toBe(0); // pinned by data-collector-key
  });

  it('(a′) fetch with keepalive while the page lives, key fetched once, cross-origin', async () => {
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 100 })});`) };
    await page.goto(shopOrigin + '/');
    await page.evaluate(() => (window as unknown as { lib: { gauge(n: string, v: number): void } }).lib.gauge('cart.items', 3));
    await col.waitForBatches(1);
    expect(col.posts().map((p) => p.contentType)).toEqual(['application/octet-stream']);
    expect(col.keyFetches()).toBe(1);
    expect(col.hits).toContain('OPTIONS /v1/batches'); // a real CORS preflight
  });

  it('(b) offline: record, reload, back online → the points arrive exactly once', async () => {
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 50 })});`) };
    await page.goto(shopOrigin + '/');
    await until(() => col.keyFetches() === 1, 5000, 'the collector key');
    await context.setOffline(true);
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string, v: number): void; flush(): Promise<void> } }).lib;
      for (let i = 0; i < 5; i++) lib.count('offline.event', i);
      await lib.flush(); // sealed and stored; nothing can be sent
      await new Promise((r) => setTimeout(r, 200));
    });
    expect(col.posts()).toHaveLength(0);
    // Chromium lifts the offline emulation for the old page while it reloads (it fires
    // `online`), so the stored batch may already leave now, by fetch and by beacon.
    await page.reload().catch(() => {});
    await context.setOffline(false);
    await page.goto(shopOrigin + '/'); // the new page resends what is stored
    await col.waitForBatches(1);
    await until(async () => (await stored()) === 0, 5000, 'the outbox to empty');
    await sleep(300); // anything else in flight would arrive now
    expect(col.points().map((p) => p.value)).toEqual([0, 1, 2, 3, 4]); // stored once
    expect(col.deliveries.size).toBe(1); // every delivery carried the same batch id
    expect(col.errors).toEqual([]);
  });

  it('(b′) collector unreachable across a reload: stored, then delivered exactly once', async () => {
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 50, retryBaseDelay: 20, maxRetries: 2 })});`) };
    await page.goto(shopOrigin + '/');
    await until(() => col.keyFetches() === 1, 5000, 'the collector key');
    const down = (route: { abort(code: string): Promise<void> }) => route.abort('connectionrefused');
    await context.route(col.origin + '/**', down);
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string, v: number): void; flush(): Promise<void> } }).lib;
      for (let i = 0; i < 3; i++) lib.count('unreachable', i);
      await lib.flush(); // tried, failed, parked in localStorage
    });
    expect(await stored()).toBe(1);
    await page.reload(); // pagehide: the beacon fails too
    await sleep(200);
    expect(col.posts()).toHaveLength(0);
    await context.unroute(col.origin + '/**', down);
    await page.reload();
    await col.waitForBatches(1);
    await until(async () => (await stored()) === 0, 5000, 'the outbox to empty');
    await sleep(300);
    expect(col.points().map((p) => p.value)).toEqual([0, 1, 2]);
    expect([...col.deliveries.values()]).toEqual([1]);
  });

  it('localStorage full: onError persist_failed once, the batches kept in memory are delivered', async () => {
    // The origin's storage filled by the shop itself before the Library starts (Chromium: ~5 MB an origin).
    const fill = `let n = 0;
      for (const size of [1 << 19, 1 << 10, 16, 1]) for (;;) { try { localStorage.setItem('f' + n++, 'x'.repeat(size)); } catch { break; } }
      window.errors = [];`;
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `${fill} window.lib = Cipherstat.createLibrary({ ...${options({ flushInterval: 50 })}, onError: (e) => errors.push(e.code) });`) };
    await page.goto(shopOrigin + '/');
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string, v: number): void; flush(): Promise<void> } }).lib;
      for (let i = 0; i < 3; i++) {
        lib.count('memory.only', i);
        await lib.flush();
      }
    });
    expect(await page.evaluate(() => (window as unknown as { errors: string[] }).errors)).toEqual(['persist_failed']);
    expect(await page.evaluate(() => localStorage.getItem('cipherstat:acct_test_0001'))).toBeNull();
    expect(col.points().map((p) => p.value)).toEqual([0, 1, 2]);
  });

  it('collector key rotation: the cached key is revalidated and the batch re-sealed', async () => {
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 50 })});`) };
    await page.goto(shopOrigin + '/');
    const record = (name: string) =>
      page.evaluate(async (n) => {
        const lib = (window as unknown as { lib: { count(n: string): void; flush(): Promise<void> } }).lib;
        lib.count(n);
        await lib.flush();
      }, name);
    await record('before');
    col.rotate();
    await record('after');
    await col.waitForBatches(2);
    expect(col.points().map((p) => p.name)).toEqual(['before', 'after']);
    expect(col.keyFetches()).toBe(2);
    // a new page view: the rotated key comes from localStorage, not from the network
    await page.goto(shopOrigin + '/');
    await record('next.page');
    await col.waitForBatches(3);
    expect(col.keyFetches()).toBe(2);
  });

  it('(c) requireConsent: nothing leaves the page before consent, then points arrive', async () => {
    pages = {
      '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 50, requireConsent: true })});`),
      '/next': html(''),
    };
    await page.goto(shopOrigin + '/');
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string): void; flush(): Promise<void> } }).lib;
      lib.count('before.consent');
      await lib.flush();
      await new Promise((r) => setTimeout(r, 300));
    });
    await page.goto(shopOrigin + '/next'); // pagehide without consent
    await sleep(300);
    expect(col.hits).toEqual([]); // not a key request, not a preflight, not a beacon

    await page.goto(shopOrigin + '/');
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string): void; setConsent(g: boolean): void; flush(): Promise<void> } }).lib;
      lib.setConsent(true);
      lib.count('after.consent');
      await lib.flush();
    });
    await col.waitForBatches(1);
    expect(col.points().map((p) => p.name)).toEqual(['after.consent']);
  });

  it('Global Privacy Control is honoured when asked to', async () => {
    await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
    pages = { '/': html('<script src="/cipherstat.min.js"></script>', `window.lib = Cipherstat.createLibrary(${options({ flushInterval: 50, respectGlobalPrivacyControl: true })});`) };
    await page.goto(shopOrigin + '/');
    await page.evaluate(async () => {
      const lib = (window as unknown as { lib: { count(n: string): void; flush(): Promise<void> } }).lib;
      lib.count('gpc');
      await lib.flush();
      await new Promise((r) => setTimeout(r, 200));
    });
    expect(col.hits).toEqual([]);
  });
});
