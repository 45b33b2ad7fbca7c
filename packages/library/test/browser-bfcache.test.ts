/**
 * The back/forward cache in real Chromium to a real collector (127.0.0.1, chDB): a shop page
 * left right after recording is frozen in the cache instead of unloaded, its pagehide batch is
 * beaconed, and when the visitor comes back the same page (same JavaScript state) records and
 * sends on; the beaconed batch is confirmed by a normal POST after the beacon grace (60 s), which
 * the collector recognises by its id: every point is counted once.
 * Playwright launches Chromium with --disable-back-forward-cache; this file drops that default.
 * Needs the build (`npm run build`) and /usr/bin/chromium.
 */
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../../../services/collector/test/support/collector.js';
import { connectionOf } from '../../../services/collector/src/storage/index.js';
import { launchChromium, servePages, startShop } from '../../../test/support/browser.js';

const CHROMIUM = '/usr/bin/chromium';
let browser: Browser;
let shop: Server;
let shopOrigin: string;
let c: TestCollector;
const pages = new Map<string, string>();

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing`);
  c = await startTestCollector({ fromDist: true });
  // (no `cache-control: no-store`: Chromium keeps such pages out of the back/forward cache)
  ({ server: shop, origin: shopOrigin } = await startShop(servePages(pages)));
  browser = await launchChromium(['--disable-back-forward-cache']);
});
afterAll(async () => {
  await browser?.close();
  await new Promise((r) => shop?.close(r));
  await c?.stop();
});

const processed = async (a: TestAccount): Promise<{ points: number; batches: number }> => {
  await c.services.processor!.drain();
  const rows = await connectionOf(c.services.store).query<{ n: string; b: string }>('SELECT sum(accepted) AS n, count() AS b FROM processed FINAL WHERE account_id = {a:String}', { a: a.accountId });
  return { points: Number(rows[0]!.n), batches: Number(rows[0]!.b) };
};

const record = (page: Page, n: number, tag: string) =>
  page.evaluate(
    ([n, tag]) => {
      const lib = (window as unknown as { Cipherstat: { instance: { count(name: string, v?: number, tags?: Record<string, string>): void } } }).Cipherstat.instance;
      for (let k = 0; k < n; k++) lib.count('visits', 1, { tag, k: String(k % 3) });
    },
    [n, tag] as const,
  );

it('a page restored from the back/forward cache records and sends on; its pagehide batch, beaconed and later confirmed, is counted once', async () => {
  const a = await createAccount(c);
  pages.set(
    '/shop',
    `<!doctype html><html><head><meta charset="utf-8"><script>
      window.__shows = []; addEventListener('pageshow', (e) => window.__shows.push(e.persisted));
    </script></head><body><a id="away" href="/elsewhere">elsewhere</a>
    <script src="${c.url}/cipherstat.min.js" data-endpoint="${c.url}" data-account="${a.accountId}" data-write-key="${a.writeKey}"
            data-collector-key-id="${a.collectorKey.keyId}" data-collector-key="${a.collectorKey.publicKey}"></script></body></html>`,
  );
  pages.set('/elsewhere', '<!doctype html><html><body><p>no script here</p></body></html>');
  const context = await browser.newContext();
  const page = await context.newPage();
  const answers: number[] = []; // statuses of the page's POSTs (not its beacons: text/plain)
  page.on('response', (r) => r.url() === `${c.url}/v1/batches` && r.request().headers()['content-type'] === 'application/octet-stream' && answers.push(r.status()));

  await page.goto(shopOrigin + '/shop');
  await page.evaluate(() => ((window as unknown as { __state: number }).__state = 42));
  await record(page, 10, 'before');
  await page.click('#away'); // right after recording: the batch is cut at pagehide
  await page.waitForURL(shopOrigin + '/elsewhere');
  await expect.poll(() => processed(a), { timeout: 120_000, interval: 250 }).toEqual({ points: 10, batches: 1 }); // the beacon

  await page.goBack({ waitUntil: 'commit' }); // a restore fires pageshow, not load
  await page.waitForFunction(() => (window as unknown as { __shows: boolean[] }).__shows.length === 2);
  const restored = await page.evaluate(() => ({ shows: (window as unknown as { __shows: boolean[] }).__shows, state: (window as unknown as { __state?: number }).__state }));
  expect(restored).toEqual({ shows: [false, true], state: 42 }); // the same page, not a reload

  await record(page, 5, 'after');
  await expect.poll(() => processed(a), { timeout: 120_000, interval: 250 }).toEqual({ points: 15, batches: 2 });
  // the beaconed batch's confirmation (a POST after the 60 s grace): acknowledged, not counted again
  await expect.poll(() => answers, { timeout: 240_000, interval: 500 }).toEqual([202, 202]);
  expect(await processed(a)).toEqual({ points: 15, batches: 2 });
  await context.close();
}, 600_000);
