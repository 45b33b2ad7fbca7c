/**
 * No silent loss, in real Chromium against a real collector: a shop page on an origin the
 * account does not allow loads the script the collector serves (the snippet `accounts create`
 * prints: immutable path, SRI, pinned key) with `data-debug`; the refusal is
 * - seen by the page (`onDrop` with the collector's code, on the console through data-debug),
 * - counted per account and code (GET /v1/metrics, storage after the flush, Prometheus),
 * - explained with the command that fixes it (GET /v1/metrics `advice`, the dashboard),
 * - logged once per account, code and origin in the hour, however often it happens.
 * Then the origin is allowed as the advice says, and the same page's data arrives.
 */
import type { Server } from 'node:http';
import { mkdirSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import { launchChromium, startShop } from './support/browser.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { scriptSnippet } from '../services/collector/src/script.js';
import { connectionOf } from '../services/collector/src/storage/index.js';

let browser: Browser;
let shop: Server;
let shopOrigin: string;
let c: TestCollector;
let account: TestAccount & { script: { path: string; integrity: string } };

beforeAll(async () => {
  c = await startTestCollector();
  account = (await createAccount(c, { allowedOrigins: ['https://shop.example'] })) as typeof account;
  ({ server: shop, origin: shopOrigin } = await startShop((req, res) => {
    if (req.url !== '/checkout') return res.writeHead(404).end();
    const snippet = scriptSnippet({ ...account, url: c.url, script: { immutablePath: account.script.path, integrity: account.script.integrity } }).replace('></script>', ' data-debug></script>');
    res.writeHead(200, { 'content-type': 'text/html' }).end(`<!doctype html><meta charset="utf-8"><h1>checkout</h1>
${snippet}
<script>
  window.drops = [];
  const cs = Cipherstat.createLibrary({ endpoint: '${c.url}', accountId: '${account.accountId}', writeKey: '${account.writeKey}', persist: false,
    collectorKey: ${JSON.stringify(account.collectorKey)}, onDrop: (reason, info) => window.drops.push({ reason, code: info.code, status: info.status }) });
  for (let i = 0; i < 5; i++) cs.count('orders', 1);
  Cipherstat.instance.count('orders', 1);
  Promise.all([cs.flush(), Cipherstat.instance.flush()]).then(() => { window.done = true; });
</script>`);
  }));
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  shop?.close();
  await c?.stop();
});

const readMetrics = async () =>
  (await (await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${account.readToken}` } })).json()) as {
    metrics: { name: string }[];
    rejects: Record<string, number>;
    advice: Record<string, string>;
  };

async function visit(): Promise<{ drops: unknown[]; console: string[] }> {
  const page = await browser.newPage();
  const console: string[] = [];
  page.on('console', (m) => console.push(`${m.type()} ${m.text()}`));
  page.on('pageerror', (e) => console.push(`pageerror ${e.message}`));
  page.on('response', (r) => r.status() >= 400 && console.push(`response ${r.status()} ${r.url()}`));
  await page.goto(`${shopOrigin}/checkout`);
  await page.waitForFunction(() => (window as unknown as { done?: boolean }).done === true, undefined, { timeout: 20_000 }).catch(async () => {
    throw new Error(`the page did not finish: ${console.join('\n')} ${JSON.stringify(await page.evaluate(() => (window as unknown as { drops: unknown[] }).drops))}`);
  });
  const drops = await page.evaluate(() => (window as unknown as { drops: unknown[] }).drops);
  await page.close();
  return { drops, console };
}

it('serves the script build at /cipherstat.min.js and at an immutable path that matches its integrity hash', async () => {
  const plain = await fetch(`${c.url}/cipherstat.min.js`);
  expect(plain.status).toBe(200);
  expect(plain.headers.get('content-type')).toMatch(/^text\/javascript/);
  expect(plain.headers.get('access-control-allow-origin')).toBe('*');
  const pinned = await fetch(`${c.url}${account.script.path}`);
  expect(pinned.headers.get('cache-control')).toContain('immutable');
  const bytes = Buffer.from(await pinned.arrayBuffer());
  expect(Buffer.from(await plain.arrayBuffer()).equals(bytes)).toBe(true);
  const { createHash } = await import('node:crypto');
  expect(account.script.integrity).toBe(`sha384-${createHash('sha384').update(bytes).digest('base64')}`);
});

it('a refused origin is seen by the page, counted, explained, logged once, and fixed by the advice', async () => {
  const first = await visit();
  await visit(); // twice: more refusals, still one log line
  // the page sees the collector's code (onDrop), and data-debug puts every drop on the console
  expect(first.drops).toEqual([{ reason: 'rejected', code: 'origin_not_allowed', status: 403 }]);
  expect(first.console.some((l) => l.startsWith('warning cipherstat: dropped rejected') && l.includes('origin_not_allowed'))).toBe(true);

  const m = await readMetrics();
  expect(m.rejects.origin_not_allowed).toBe(4); // 2 visits × 2 libraries, one batch each
  expect(m.advice.origin_not_allowed).toBe(
    `origin ${shopOrigin} is not allowed — add it with \`cipherstat accounts update ${account.accountId} --origin https://shop.example --origin ${shopOrigin}\``,
  );
  const logged = c.logs.filter((l) => l.includes('batch refused') && l.includes(account.accountId));
  expect(logged).toHaveLength(1);
  expect(JSON.parse(logged[0]!)).toMatchObject({ accountId: account.accountId, code: 'origin_not_allowed', origin: shopOrigin });
  const prom = await (await fetch(`${c.url}/metrics`)).text();
  expect(prom).toMatch(/cipherstat_batch_rejects_total\{code="origin_not_allowed"\} 4/);
  await c.services.refusals.flush();
  expect(await c.services.store.rejects(account.accountId)).toEqual({ origin_not_allowed: 4 });
  expect((await readMetrics()).rejects).toEqual({ origin_not_allowed: 4 }); // not counted twice after the flush

  // the dashboard shows it at the top, with the command
  mkdirSync('test/artifacts', { recursive: true });
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  await page.goto(`${c.url}/`);
  await page.fill('#token', account.readToken);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#problems:not([hidden])');
  expect(await page.textContent('#problems')).toContain(`4 × origin_not_allowed: origin ${shopOrigin} is not allowed — add it with cipherstat accounts update ${account.accountId}`);
  await page.screenshot({ path: 'test/artifacts/dashboard-refusals.png', fullPage: true });
  await page.close();

  // doing what the advice says lets the same page's data in
  const res = await c.admin('PATCH', `/v1/accounts/${account.accountId}`, { allowedOrigins: ['https://shop.example', shopOrigin] });
  expect(res.status).toBe(200);
  const after = await visit();
  expect(after.drops).toEqual([]);
  await c.services.processor!.drain();
  const r = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: account.accountId });
  expect(Number(r[0]!.n)).toBe(6);
});
