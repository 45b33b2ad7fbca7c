/**
 * The dashboard as a shop owner meets it, in real Chromium against a real collector (chDB):
 * the empty state shows the tag to paste and turns into a chart when the first batch lands
 * (no reload); with known data, the busiest metric is the default, the change against the
 * previous period is computed right, units come from the metric name (`_ms`, `_bytes`) and the
 * `currency` tag, the table lists the newest first in the chart's time format, the choices
 * live in the URL (reload and Back restore them), and at 390 px nothing is clipped or
 * wider than the screen. Throughout, the page never has more than 2 queries in flight (the
 * per-token query concurrency) and never gets a 429. Screenshots go to test/artifacts/
 * (gitignored); their paths are printed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { Point } from '@cipherstat/protocol';
import { createAccount, envelope, post, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { DEFAULT_DASHBOARD_DIR } from '../services/collector/src/query/index.js';
import { loadScript, scriptSnippet } from '../services/collector/src/script.js';
import { launchChromium } from './support/browser.js';

const root = (p: string) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const ARTIFACTS = root('test/artifacts');
const ZONE = 'Europe/Berlin';
const HOUR = 3_600_000;
const MIN = 60_000;

let c: TestCollector;
let browser: Browser;
let shop: TestAccount;
const now = Date.now();

/**
 * Known data. Busiest in the last 24 hours: page.load_ms (40 points), not the first name
 * (abandoned_carts, 2). orders: 30 in the last 23 hours, 20 between 26 and 46 hours ago (in
 * the previous 24-hour period whatever minute the test runs): +50 %.
 */
const data: Point[] = [];
const add = (p: Omit<Point, 'id'>) => data.push({ id: data.length, ...p });
for (let i = 0; i < 40; i++) add({ kind: 'histogram', name: 'page.load_ms', value: 800 + 10 * i, time: now - 5 * MIN - i * 30 * MIN, tags: { page: 'home' } });
for (let i = 0; i < 30; i++) add({ kind: 'counter', name: 'orders', value: 1, time: now - 5 * MIN - i * 45 * MIN, tags: { country: i % 2 ? 'DE' : 'FR' } });
for (let i = 0; i < 20; i++) add({ kind: 'counter', name: 'orders', value: 1, time: now - 26 * HOUR - i * 60 * MIN, tags: { country: 'DE' } });
for (let i = 0; i < 10; i++) add({ kind: 'counter', name: 'revenue', value: 12.5, time: now - 10 * MIN - i * 60 * MIN, tags: { currency: 'EUR' } });
for (let i = 0; i < 4; i++) add({ kind: 'counter', name: 'revenue', value: 10, time: now - 10 * MIN - i * 60 * MIN, tags: { currency: 'USD' } });
for (let i = 0; i < 5; i++) add({ kind: 'gauge', name: 'cart.size_bytes', value: 2048, time: now - 15 * MIN - i * 60 * MIN, tags: {} });
for (let i = 0; i < 2; i++) add({ kind: 'counter', name: 'abandoned_carts', value: 1, time: now - 20 * MIN, tags: {} });

async function send(account: TestAccount, points: Point[]): Promise<void> {
  const res = await post(c.url, envelope(account, points).bytes);
  expect(res.status).toBe(202);
  await c.services.processor!.drain();
}

beforeAll(async () => {
  if (!existsSync(`${DEFAULT_DASHBOARD_DIR}/index.html`)) {
    const rollupBin = createRequire(import.meta.url).resolve('rollup/dist/bin/rollup');
    execFileSync(process.execPath, [rollupBin, '-c', root('services/collector/dashboard/rollup.dashboard.mjs')], { stdio: 'inherit' });
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  c = await startTestCollector();
  shop = await createAccount(c);
  await send(shop, data);
  browser = await launchChromium();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await c?.stop();
});

/** A page with the read token entered; page errors and CSP violations are collected. */
async function open(account: TestAccount, viewport = { width: 1280, height: 1000 }, search = ''): Promise<{ context: BrowserContext; page: Page; problems: string[] }> {
  const context = await browser.newContext({ timezoneId: ZONE, locale: 'en-US', viewport });
  const page = await context.newPage();
  const problems: string[] = [];
  // The collector answers a read token's third concurrent query with 429: the page never sends it.
  let inFlight = 0;
  const api = (r: { url: () => string }) => /\/v1\/(query|metrics)$/.test(new URL(r.url()).pathname);
  page.on('request', (r) => {
    if (api(r) && ++inFlight > 2) problems.push(`${inFlight} requests in flight`);
  });
  page.on('requestfinished', (r) => void (api(r) && inFlight--));
  page.on('requestfailed', (r) => void (api(r) && inFlight--));
  page.on('response', (r) => {
    if (r.status() === 429) problems.push(`429 from ${r.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || /Content Security Policy|Refused to|Trusted Type/i.test(m.text())) problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  await page.goto(`${c.url}/${search}`);
  await page.fill('#token', account.readToken);
  await page.click('#login button[type=submit]');
  return { context, page, problems };
}

/** Waits until the explorer shows `metric` with its comparison and table filled in. */
async function shown(page: Page, metric: string): Promise<void> {
  await page.waitForFunction(
    (m) =>
      (document.querySelector('#metric') as HTMLSelectElement | null)?.value === m &&
      new URLSearchParams(location.search).get('metric') === m &&
      !document.querySelector('#run')?.hasAttribute('disabled') &&
      !!document.querySelector('#compare .period') &&
      document.querySelectorAll('#table tbody tr').length > 0,
    metric,
    { timeout: 60_000 },
  );
}

async function showMetric(page: Page, metric: string, aggregation: string): Promise<void> {
  await page.selectOption('#metric', metric);
  await shown(page, metric);
  await page.selectOption('#aggregation', aggregation);
  await page.click('#run');
  await page.waitForFunction((a) => new URLSearchParams(location.search).get('show') === a && !document.querySelector('#run')?.hasAttribute('disabled'), aggregation, { timeout: 60_000 });
  await shown(page, metric);
}

const compared = (page: Page) =>
  page.$$eval('#compare .cmp', (rows) =>
    rows.map((r) => {
      const d = (r as HTMLElement).dataset;
      return { series: d.series, now: d.now === '' ? null : Number(d.now), before: d.before === '' ? null : Number(d.before), change: d.change === '' ? null : Number(d.change), text: r.textContent };
    }),
  );

const shot = async (page: Page, name: string) => {
  const path = `${ARTIFACTS}/${name}`;
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
};

/** Whether the Disconnect button lies inside the viewport and the page is no wider than it. */
const fitsPhone = (page: Page) =>
  page.evaluate(() => {
    const b = document.querySelector('#logout')!.getBoundingClientRect();
    return { left: b.left, right: b.right, viewport: window.innerWidth, scrollWidth: document.documentElement.scrollWidth, bodyWidth: document.body.scrollWidth };
  });

describe('dashboard for a shop owner', () => {
  it('empty account: shows the tag to paste, then the chart once the first batch lands (no reload)', async () => {
    const fresh = await createAccount(c);
    const { context, page, problems } = await open(fresh, { width: 390, height: 844 });
    await page.waitForSelector('#welcome:not([hidden])', { timeout: 60_000 });
    await page.waitForFunction(() => (document.querySelector('#snippet')?.textContent ?? '').includes('data-collector-key'), null, { timeout: 60_000 });
    const snippet = await page.textContent('#snippet');
    // exactly the tag `accounts create` prints, with the write key left for the shop to fill in
    expect(snippet).toBe(scriptSnippet({ url: c.url, script: loadScript()!, accountId: fresh.accountId, writeKey: 'YOUR-WRITE-KEY', collectorKey: fresh.collectorKey }));
    expect(snippet).toContain('integrity="sha384-');
    expect(await page.isVisible('#explorer')).toBe(false);
    expect(await page.textContent('#metrics tbody')).toBe('None yet.');
    const phone = await fitsPhone(page);
    expect(phone.left).toBeGreaterThanOrEqual(0);
    expect(phone.right).toBeLessThanOrEqual(phone.viewport);
    expect(phone.scrollWidth).toBeLessThanOrEqual(phone.viewport);
    await shot(page, 'dashboard-empty-390.png');

    await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));
    await send(fresh, [{ id: 0, kind: 'counter', name: 'signups', value: 3, time: Date.now() - MIN, tags: {} }]);
    await page.waitForSelector('#chart canvas', { timeout: 60_000 });
    await shown(page, 'signups');
    expect(await page.isVisible('#welcome')).toBe(false);
    await page.waitForFunction(() => document.querySelector('#metrics tbody td')?.textContent === 'signups');
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    const first = (await compared(page))[0]!;
    expect(first).toMatchObject({ series: 'All', now: 3, before: 0, change: null }); // a total over no events is 0
    expect(first.text).toContain('new (none before)');
    await shot(page, 'dashboard-first-batch-390.png');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('defaults to the busiest metric, compares with the previous period, shows units, newest first, one time format', async () => {
    const { context, page, problems } = await open(shop);
    await shown(page, 'page.load_ms'); // busiest, though abandoned_carts comes first by name
    expect(await page.inputValue('#aggregation')).toBe('p95');
    // milliseconds from the name's suffix, in the table
    const cells = await page.$$eval('#table tbody td', (tds) => tds.map((t) => t.textContent ?? '').filter((t) => t !== '—'));
    expect(cells.length).toBeGreaterThan(0);
    for (const t of cells) expect(t).toMatch(/^(▲ \+|▼ -)?[\d,.]+( ms| s|%)$|^no change$/);
    expect(cells.some((t) => / (ms|s)$/.test(t))).toBe(true);

    // newest first, in 24-hour time, the same format in the chart's legend
    const times = await page.$$eval('#table tbody tr', (rows) => rows.map((r) => Number((r as HTMLElement).dataset.time)));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    const labels = await page.$$eval('#table tbody th', (ths) => ths.map((t) => t.textContent ?? ''));
    for (const l of labels) expect(l).toMatch(/^[A-Z][a-z]{2} \d{1,2}, \d{2}:\d{2}$/);
    expect(labels[0]).toBe(new Intl.DateTimeFormat('en-US', { timeZone: ZONE, month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(times[0]!));
    // the chart's axes (drawn on a canvas; their labels are kept on #chart): the same time format, units on the y axis
    const axis = async (name: string) => JSON.parse((await page.getAttribute('#chart', `data-${name}-labels`)) ?? '[]') as string[];
    const xLabels = await axis('x');
    expect(xLabels.length).toBeGreaterThan(0);
    for (const l of xLabels) expect(l).toMatch(/^[A-Z][a-z]{2} \d{1,2}, \d{2}:\d{2}$/);
    const yLabels = await axis('y');
    expect(yLabels.length).toBeGreaterThan(1);
    for (const l of yLabels) expect(l).toMatch(/^[\d,.]+ (ms|s)$/);
    const box = (await page.$('#chart .u-over'))!;
    const b = (await box.boundingBox())!;
    await page.mouse.move(b.x + b.width * 0.5, b.y + b.height * 0.5);
    const legendTime = await page.textContent('#chart .u-legend .u-series:first-child .u-value');
    expect(labels).toContain(legendTime);

    // orders: 30 now, 20 in the previous 24 hours → +50 %
    await showMetric(page, 'orders', 'sum');
    const orders = await compared(page);
    expect(orders).toEqual([expect.objectContaining({ series: 'All', now: 30, before: 20, change: 50 })]);
    expect(orders[0]!.text).toContain('+50%');
    expect(orders[0]!.text).toContain('previous 24 hours: 20');
    expect(await page.$$eval('#table thead th', (ths) => ths.map((t) => t.textContent))).toEqual([`Time (${ZONE})`, 'All', 'Previous period', 'Change']);
    const orderRows = await page.$$eval('#table tbody tr', (rows) => rows.map((r) => Number((r.querySelector('td') as HTMLElement).dataset.value || 0)));
    expect(orderRows.reduce((a, v) => a + v, 0)).toBe(30);

    // revenue: one line per currency, never added up across currencies
    await showMetric(page, 'revenue', 'sum');
    const revenue = await compared(page);
    expect(revenue.map((r) => [r.series, r.now])).toEqual([
      ['currency: EUR', 125],
      ['currency: USD', 40],
    ]);
    expect(revenue[0]!.text).toContain('€125.00');
    expect(revenue[1]!.text).toContain('$40.00');
    expect(await page.$$eval('#table thead th', (ths) => ths.map((t) => t.textContent))).toEqual([`Time (${ZONE})`, 'currency: EUR', 'currency: USD']);

    // bytes from the name's suffix
    await showMetric(page, 'cart.size_bytes', 'avg');
    expect((await compared(page))[0]).toMatchObject({ now: 2048, before: null });
    expect((await compared(page))[0]!.text).toContain('2 KB');
    expect(await page.textContent('#table tbody td[data-value="2048"]')).toBe('2 KB');
    expect(await axis('y')).toContain('2 KB');

    // plain words: no jargon outside the technical details
    expect(await page.textContent('#meta')).toMatch(/^Based on \d+ (hourly|per-minute|hourly and per-minute) summar(y|ies) of encrypted data\.$/);
    expect(await page.isVisible('#tech')).toBe(false);
    await shot(page, 'dashboard-known-data.png');
    expect(problems).toEqual([]);
    await context.close();
  });

  it('keeps the choices in the URL: reload and Back restore them', async () => {
    const { context, page, problems } = await open(shop);
    await shown(page, 'page.load_ms');
    await showMetric(page, 'orders', 'count');
    await page.selectOption('#range', '7d');
    await page.selectOption('#interval', 'day');
    await page.selectOption('#group-by', 'country');
    await page.fill('#timezone', 'Asia/Tokyo');
    await page.click('#run');
    await page.waitForFunction(() => new URLSearchParams(location.search).get('tz') === 'Asia/Tokyo' && !document.querySelector('#run')?.hasAttribute('disabled'), null, { timeout: 60_000 });
    await shown(page, 'orders');
    const url = new URL(page.url());
    expect(Object.fromEntries(url.searchParams)).toEqual({ metric: 'orders', show: 'count', period: '7d', step: 'day', split: 'country', tz: 'Asia/Tokyo' });
    const controls = () =>
      page.evaluate(() => ['metric', 'aggregation', 'range', 'interval', 'group-by', 'timezone'].map((id) => (document.getElementById(id) as HTMLInputElement).value));
    const want = ['orders', 'count', '7d', 'day', 'country', 'Asia/Tokyo'];

    await page.reload();
    await shown(page, 'orders');
    await page.waitForFunction(() => document.querySelectorAll('#table thead th').length === 3, null, { timeout: 60_000 });
    expect(await controls()).toEqual(want);
    expect(page.url()).toBe(url.href);
    expect(await page.$$eval('#table thead th', (ths) => ths.map((t) => t.textContent))).toEqual(['Time (Asia/Tokyo)', 'country: DE', 'country: FR']);
    // 7 days of day buckets: all 50 orders (the 20 older ones too)
    const total = await page.$$eval('#table tbody td', (tds) => tds.reduce((n, t) => n + Number((t as HTMLElement).dataset.value || 0), 0));
    expect(total).toBe(50);

    // Back: the previous choice (orders, count, 24 hours) comes back
    await page.goBack();
    await page.waitForFunction(() => new URLSearchParams(location.search).get('period') === '24h' && !document.querySelector('#run')?.hasAttribute('disabled'), null, { timeout: 60_000 });
    await shown(page, 'orders');
    expect(await controls()).toEqual(['orders', 'count', '24h', 'hour', '', ZONE]);
    // a link with the state opens on it (a new tab: the token is entered again)
    const other = await open(shop, undefined, '?metric=revenue&show=max&period=1h&step=minute');
    await shown(other.page, 'revenue');
    expect(await other.page.evaluate(() => ['metric', 'aggregation', 'range', 'interval'].map((id) => (document.getElementById(id) as HTMLSelectElement).value))).toEqual(['revenue', 'max', '1h', 'minute']);
    await other.context.close();
    expect(problems).toEqual([]);
    await context.close();
  });

  it('offers week and month steps: ISO weeks from Monday, calendar months, newest first', async () => {
    const { context, page, problems } = await open(shop, undefined, '?metric=orders&show=count&period=90d&step=week');
    await shown(page, 'orders');
    await page.waitForFunction(() => new URLSearchParams(location.search).get('step') === 'week', null, { timeout: 60_000 });
    expect(await page.$$eval('#interval option:disabled', (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(['minute', 'hour']);
    const rows = async () =>
      page.$$eval('#table tbody tr', (trs) =>
        trs.map((r) => ({ time: Number((r as HTMLElement).dataset.time), label: r.querySelector('th')!.textContent ?? '', value: Number((r.querySelector('td') as HTMLElement).dataset.value || 0) })),
      );
    const weeks = await rows();
    expect(weeks.length).toBeGreaterThanOrEqual(13);
    expect(weeks.map((w) => w.time)).toEqual(weeks.map((w) => w.time).sort((a, b) => b - a));
    const weekday = new Intl.DateTimeFormat('en-US', { timeZone: ZONE, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    for (const w of weeks) {
      expect(weekday.format(w.time)).toMatch(/^Mon,? 00:00$/);
      expect(w.label).toMatch(/^[A-Z][a-z]{2} \d{1,2}$/);
    }
    expect(weeks.reduce((n, w) => n + w.value, 0)).toBe(50);

    await page.selectOption('#range', '365d');
    expect(await page.inputValue('#interval')).toBe('week'); // still allowed
    await page.selectOption('#interval', 'month');
    await page.click('#run');
    await page.waitForFunction(() => new URLSearchParams(location.search).get('step') === 'month' && !document.querySelector('#run')?.hasAttribute('disabled'), null, { timeout: 60_000 });
    await shown(page, 'orders');
    const months = await rows();
    expect(months.length).toBeGreaterThanOrEqual(12);
    expect(months[0]!.label).toBe(new Intl.DateTimeFormat('en-US', { timeZone: ZONE, month: 'short', year: 'numeric' }).format(now));
    for (const m of months) expect(m.label).toMatch(/^[A-Z][a-z]{2} \d{4}$/);
    expect(months.reduce((n, m) => n + m.value, 0)).toBe(50);
    // the previous period is as many months, just before (the same length in ms reaches into one
    // more month, which the page leaves out: otherwise the table would have no previous column)
    const compare = await compared(page);
    expect(compare).toEqual([expect.objectContaining({ series: 'All', now: 50, before: 0 })]);
    expect(await page.$$eval('#table thead th', (ths) => ths.map((t) => t.textContent))).toEqual([`Time (${ZONE})`, 'All', 'Previous period', 'Change']);
    expect(problems).toEqual([]);
    await context.close();
  });

  it('works at 390 px: Disconnect fully visible, no horizontal overflow, tables scroll in their box', async () => {
    const { context, page, problems } = await open(shop, { width: 390, height: 844 });
    await shown(page, 'page.load_ms');
    await page.waitForSelector('#chart canvas');
    await page.waitForFunction(() => document.querySelectorAll('#tiles .tile .value').length >= 3, null, { timeout: 60_000 });
    const phone = await fitsPhone(page);
    expect(phone.left).toBeGreaterThanOrEqual(0);
    expect(phone.right).toBeLessThanOrEqual(phone.viewport);
    expect(phone.scrollWidth).toBeLessThanOrEqual(phone.viewport);
    expect(phone.bodyWidth).toBeLessThanOrEqual(phone.viewport);
    const wraps = await page.$$eval('.table-wrap', (ws) => ws.map((w) => w.getBoundingClientRect().right));
    for (const r of wraps) expect(r).toBeLessThanOrEqual(phone.viewport);
    const canvas = (await (await page.$('#chart canvas'))!.boundingBox())!;
    expect(canvas.x + canvas.width).toBeLessThanOrEqual(phone.viewport);
    await shot(page, 'dashboard-390.png');
    await page.click('#logout');
    await page.waitForSelector('#login:not([hidden])');
    expect(problems).toEqual([]);
    await context.close();
  });
});
