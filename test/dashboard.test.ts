/**
 * The dashboard in real Chromium against a real collector: strict CSP headers and no CSP
 * violation, token login, metric picking, a uPlot canvas, and a table holding the numbers a
 * plaintext reference gives. Saves test/artifacts/dashboard.png.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { fromBase64, sealBatch, type Point } from '@cipherstat/protocol';
import { createAccount, newBatchId, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { localLabel, mulberry32, queryServer } from '../services/collector/test/query-support.js';
import { DEFAULT_DASHBOARD_DIR } from '../services/collector/src/query/index.js';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const ZONE = 'Europe/Berlin';

let c: TestCollector;
let q: Awaited<ReturnType<typeof queryServer>>;
let account: TestAccount;
let browser: Browser;
const points: Point[] = [];

beforeAll(async () => {
  if (!existsSync(`${DEFAULT_DASHBOARD_DIR}/index.html`)) {
    const rollupBin = createRequire(import.meta.url).resolve('rollup/dist/bin/rollup');
    execFileSync(process.execPath, [rollupBin, '-c', root('services/collector/dashboard/rollup.dashboard.mjs')], { stdio: 'inherit' });
  }
  c = await startTestCollector();
  q = await queryServer(c);
  account = await createAccount(c);
  const rnd = mulberry32(5);
  const now = Date.now();
  for (let i = 0; i < 400; i++) {
    const time = now - 5 * 60_000 - Math.floor(rnd() * 20 * 3_600_000);
    const country = ['DE', 'FR', 'US'][i % 3]!;
    const r = rnd();
    if (r < 0.4) points.push({ id: i, kind: 'counter', name: 'orders', value: 1 + (i % 2), time, tags: { country } });
    else if (r < 0.7) points.push({ id: i, kind: 'counter', name: 'revenue', value: Math.round(rnd() * 20_000) / 100, time, tags: { country } });
    else points.push({ id: i, kind: 'histogram', name: 'page.load', value: Math.round(200 + rnd() * 3000), time, tags: { page: 'home' } });
  }
  const key = (await (await fetch(`${c.url}/v1/collector-key`)).json()) as { keyId: string; publicKey: string };
  const bytes = sealBatch({ accountId: account.accountId, batchId: newBatchId(), createdAt: now, sdk: 'test/0' }, points, {
    accountPublicKey: fromBase64(account.writeKey)!,
    collectorKeyId: key.keyId,
    collectorPublicKey: fromBase64(key.publicKey)!,
  });
  const res = await fetch(`${c.url}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes as Uint8Array<ArrayBuffer> });
  expect(res.status).toBe(202);
  await c.services.processor!.drain();
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});

afterAll(async () => {
  await browser?.close();
  await q?.close();
  await c?.stop();
});

/** Sum of `orders` per local hour label (the reference for the table). */
function expectedOrdersByHour(): Map<string, number> {
  const m = new Map<string, number>();
  for (const p of points) if (p.name === 'orders') m.set(localLabel(p.time, 'hour', ZONE), (m.get(localLabel(p.time, 'hour', ZONE)) ?? 0) + p.value);
  return m;
}

async function tableValues(page: Page): Promise<{ time: number; values: (number | null)[] }[]> {
  return page.$$eval('#table tbody tr', (rows) =>
    rows.map((r) => ({
      time: Number((r as HTMLElement).dataset.time),
      values: Array.from(r.querySelectorAll('td:not(.previous):not(.change)')).map((td) => ((td as HTMLElement).dataset.value === '' ? null : Number((td as HTMLElement).dataset.value))),
    })),
  );
}

describe('dashboard', () => {
  it('serves the page with a strict CSP and renders a chart and a table that match the data', async () => {
    const context = await browser.newContext({ timezoneId: ZONE, locale: 'en-US', viewport: { width: 1280, height: 1100 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content Security Policy|Refused to|TrustedHTML|Trusted Type/i.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    // the answer form each query asks for (README "Answer forms": the dashboard asks for columns)
    const formats: unknown[] = [];
    page.on('request', (r) => {
      if (r.url().endsWith('/v1/query')) formats.push((JSON.parse(r.postData() ?? '{}') as { format?: unknown }).format);
    });
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        (window as unknown as { __csp: string[] }).__csp ??= [];
        (window as unknown as { __csp: string[] }).__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });

    const res = await page.goto(`${q.url}/`);
    expect(res!.status()).toBe(200);
    const h = res!.headers();
    expect(h['content-security-policy']).toContain("default-src 'self'");
    expect(h['content-security-policy']).toContain("script-src 'self'");
    expect(h['content-security-policy']).toContain("style-src 'self'");
    expect(h['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(h['content-security-policy']).not.toContain('unsafe-inline');
    expect(h['x-content-type-options']).toBe('nosniff');
    expect(h['referrer-policy']).toBe('no-referrer');
    expect(h['x-frame-options']).toBe('DENY');
    expect(h['strict-transport-security']).toBeUndefined(); // plain HTTP here

    await page.fill('#token', account.readToken);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#metric option[value="orders"]', { state: 'attached' });
    expect(await page.inputValue('#timezone')).toBe(ZONE);
    expect(await page.evaluate(() => sessionStorage.getItem('cipherstat.readToken'))).toBe(account.readToken);

    await page.selectOption('#metric', 'orders');
    await page.selectOption('#aggregation', 'sum');
    await page.selectOption('#range', '24h');
    await page.selectOption('#interval', 'hour');
    await page.click('#run');
    await page.waitForFunction(() => new URLSearchParams(location.search).get('show') === 'sum' && !!document.querySelector('#compare .period') && !document.querySelector('#run')?.hasAttribute('disabled'));
    await page.waitForSelector('#chart canvas');

    const rows = await tableValues(page);
    expect(rows.length).toBeGreaterThanOrEqual(24);
    expect(formats.length).toBeGreaterThan(0);
    expect(new Set(formats)).toEqual(new Set(['columns']));
    const want = expectedOrdersByHour();
    let total = 0;
    for (const r of rows) {
      const expected = want.get(localLabel(r.time, 'hour', ZONE)) ?? 0;
      expect(r.values, new Date(r.time).toISOString()).toEqual([expected]);
      total += r.values[0] ?? 0;
    }
    expect(total).toBe(points.filter((p) => p.name === 'orders').reduce((n, p) => n + p.value, 0));
    const firstCell = await page.textContent('#table tbody tr:last-child td');
    expect(firstCell).toBe(new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 }).format(rows.at(-1)!.values[0]!));

    // group by country: one column per country
    await page.selectOption('#group-by', 'country');
    await page.click('#run');
    await page.waitForFunction(() => document.querySelector('#table thead th:nth-child(2)')?.textContent === 'country: DE');
    const heads = await page.$$eval('#table thead th', (ths) => ths.map((t) => t.textContent));
    expect(heads.slice(1)).toEqual(['country: DE', 'country: FR', 'country: US']);

    // shop overview tiles for orders, revenue and page load
    const tiles = await page.$$eval('#tiles .tile', (ts) => ts.map((t) => (t as HTMLElement).dataset.metric));
    expect(tiles).toEqual(['orders', 'revenue', 'page.load']);

    await page.selectOption('#group-by', '');
    await page.click('#run');
    await page.waitForFunction(() => document.querySelector('#table thead th:nth-child(2)')?.textContent === 'All');
    mkdirSync(root('test/artifacts'), { recursive: true });
    await page.screenshot({ path: root('test/artifacts/dashboard.png'), fullPage: true });

    expect(await page.evaluate(() => (window as unknown as { __csp?: string[] }).__csp ?? [])).toEqual([]);
    expect(problems).toEqual([]);
    await context.close();
  });

  it('rejects a wrong token in the page and serves assets with long-lived caching', async () => {
    const page = await browser.newPage();
    await page.goto(`${q.url}/`);
    await page.fill('#token', 'csr_' + 'x'.repeat(43));
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#status.error');
    expect(await page.textContent('#status')).toContain('unauthorized');
    expect(await page.isVisible('#explorer')).toBe(false);
    const script = await page.getAttribute('script[type=module]', 'src');
    const asset = await fetch(`${q.url}${script}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toContain('text/javascript');
    expect(asset.headers.get('cache-control')).toContain('immutable');
    expect(asset.headers.get('x-content-type-options')).toBe('nosniff');
    const again = await fetch(`${q.url}${script}`, { headers: { 'if-none-match': asset.headers.get('etag')! } });
    expect(again.status).toBe(304);
    expect((await fetch(`${q.url}/assets/..%2Fpackage.json`)).status).toBe(404);
    const tls = await fetch(`${q.url}/`, { headers: { 'x-forwarded-proto': 'https' } });
    expect(tls.headers.get('strict-transport-security')).toBeNull(); // proxy headers are not trusted by default
    await page.close();
  });
});
