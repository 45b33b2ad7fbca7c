/**
 * The whole path in real Chromium: a storefront page on one origin loads the <script>
 * build, records points and navigates away at once; the real collector (another origin,
 * chDB on a temp dir) receives them through CORS / sendBeacon, and its process role opens
 * and counts every point.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { launchChromium, startShop } from './support/browser.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { connectionOf } from '../services/collector/src/storage/index.js';

const BUNDLE = fileURLToPath(new URL('../packages/library/dist/cipherstat.min.js', import.meta.url));
let browser: Browser;
let shop: Server;
let shopOrigin: string;
let c: TestCollector;
let account: TestAccount;
let paused: TestAccount;

beforeAll(async () => {
  expect(existsSync(BUNDLE), 'build first (npm test does)').toBe(true);
  c = await startTestCollector();
  account = await createAccount(c);
  paused = await createAccount(c);
  const bundle = readFileSync(BUNDLE);
  ({ server: shop, origin: shopOrigin } = await startShop((req, res) => {
    if (req.url === '/cipherstat.min.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    if (req.url === '/checkout') {
      return res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta charset="utf-8"><h1>checkout</h1>
<script src="/cipherstat.min.js" data-endpoint="${c.url}" data-account="${account.accountId}" data-write-key="${account.writeKey}"></script>
<script>
  const cs = Cipherstat.instance;
  for (let i = 0; i < 30; i++) cs.count('orders', 1, { country: i % 3 ? 'DE' : 'FR' });
  cs.observe('page.load_ms', 812.5, { page: '/checkout' });
  window.recorded = true;
</script>`);
    }
    if (req.url === '/paused') {
      // the page creates its Library itself: a short re-check cadence for the test (default hourly)
      return res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta charset="utf-8"><script src="/cipherstat.min.js"></script>
<script>
  window.errors = []; window.drops = [];
  window.lib = Cipherstat.createLibrary({ endpoint: ${JSON.stringify(c.url)}, accountId: ${JSON.stringify(paused.accountId)}, writeKey: ${JSON.stringify(paused.writeKey)},
    recheckInterval: 200, onError: (e) => errors.push(e.code), onDrop: (r, i) => drops.push([r, i.count]) });
</script>`);
    }
    if (req.url === '/thanks') return res.writeHead(200, { 'content-type': 'text/html' }).end('<h1>thanks</h1>');
    res.writeHead(404).end();
  }));
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  shop?.close();
  await c?.stop();
});

it('points recorded right before navigating away reach the collector and are processed', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${shopOrigin}/checkout`);
  await page.waitForFunction(() => (window as unknown as { recorded?: boolean }).recorded === true);
  await page.goto(`${shopOrigin}/thanks`);
  const deadline = Date.now() + 15_000;
  let accepted = 0;
  while (Date.now() < deadline) {
    await c.services.processor!.drain();
    const r = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
    accepted = Number(r[0]!.n);
    if (accepted >= 31) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(accepted).toBe(31);
  const rows = await c.services.store.countAccountRows(account.accountId);
  expect(rows.batches).toBeGreaterThanOrEqual(1);
  await context.close();
});

async function acceptedPoints(accountId: string): Promise<number> {
  await c.services.processor!.drain();
  const r = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: accountId });
  return Number(r[0]!.n);
}

it('a deactivated account pauses the page\'s Library with its queue kept; after a restore it delivers without a reload; a shredded one stops it for good', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  expect((await c.admin('DELETE', `/v1/accounts/${paused.accountId}`)).status).toBe(200);
  await page.goto(`${shopOrigin}/paused`);
  await page.evaluate(async () => {
    const w = window as unknown as { lib: { count(n: string, v?: number): void; flush(): Promise<void> } };
    for (let i = 0; i < 12; i++) w.lib.count('orders', 1);
    await w.lib.flush();
  });
  const state = () => page.evaluate(() => ({ errors: (window as any).errors as string[], drops: (window as any).drops as [string, number][] }));
  expect(await state()).toEqual({ errors: ['account_deactivated'], drops: [] });
  expect(await acceptedPoints(paused.accountId)).toBe(0);

  expect((await c.admin('POST', `/v1/accounts/${paused.accountId}/restore`)).status).toBe(200);
  const deadline = Date.now() + 30_000;
  let n = 0;
  while (Date.now() < deadline && (n = await acceptedPoints(paused.accountId)) < 12) await new Promise((r) => setTimeout(r, 100));
  expect(n).toBe(12); // the same page, no reload, nothing recorded since
  expect(await state()).toEqual({ errors: ['account_deactivated'], drops: [] });

  expect((await c.admin('DELETE', `/v1/accounts/${paused.accountId}?now=true`)).status).toBe(200);
  await page.evaluate(async () => {
    const w = window as unknown as { lib: { count(n: string, v?: number): void; flush(): Promise<void> } };
    w.lib.count('orders', 1);
    await w.lib.flush();
    w.lib.count('orders', 1);
  });
  expect(await state()).toEqual({ errors: ['account_deactivated', 'account_gone'], drops: [['account_gone', 1], ['stopped', 1]] });
  await context.close();
});
