/**
 * Issue 15, the storefront build end to end: real Chromium drives a scripted population
 * through the demo shop (examples/storefront, the storefront script tag with `data-auto`),
 * the real collector (chDB on a temp dir) opens and rolls up every point, and `POST
 * /v1/query` answers exactly the ground truth computed from the same plans: page views per
 * path (History API navigations included), sources, funnel steps, purchases, revenue and
 * order values per currency. Then: requireConsent without consent captures nothing; path
 * normalisation and the cardinality bound against a page that makes unbounded paths;
 * uncaught errors are counted without their messages.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startShopServer } from '../examples/storefront/server.mjs';
import { plans, visit, type Plan } from '../examples/storefront/shoppers.mjs';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { launchChromium, startShop } from './support/browser.js';

/** The demo shop's catalogue (examples/storefront/public/shop.js), written out as ground truth. */
const PRICES: Record<string, Record<'EUR' | 'USD', number>> = {
  '101': { EUR: 89, USD: 99 },
  '102': { EUR: 65.5, USD: 72 },
  '201': { EUR: 39.9, USD: 44 },
  '202': { EUR: 49, USD: 54.5 },
};
const VISITS = 10;

let c: TestCollector;
let browser: Browser;
const servers: Server[] = [];

beforeAll(async () => {
  c = await startTestCollector();
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  await c?.stop();
});

const tagOf = (a: TestAccount) => ({ collector: c.url, account: a.accountId, writeKey: a.writeKey, keyId: a.collectorKey.keyId, publicKey: a.collectorKey.publicKey });
async function shopFor(a: TestAccount, attributes = '') {
  const { server, origin } = await startShopServer({ tag: tagOf(a), attributes });
  servers.push(server);
  return origin;
}

type Series = { tags: Record<string, string>; points: [number, number | null][] };
/** POST /v1/query over the last two hours (and the next one), each series summed over its buckets. */
async function query(a: TestAccount, metric: string, aggregation: 'sum' | 'count', groupBy: string[] = []): Promise<Map<string, number>> {
  await c.services.processor!.drain();
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric, aggregation, interval: 'hour', from: Date.now() - 2 * 3600e3, to: Date.now() + 3600e3, groupBy }),
  });
  if (res.status === 404) return new Map();
  const body = (await res.json()) as { series: Series[] };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return new Map(body.series.map((s) => [groupBy.map((k) => s.tags[k] ?? '-').join(' '), s.points.reduce((n, [, v]) => n + (v ?? 0), 0)]));
}
/** Polls until `metric` has `total` points in all, then answers `query`. */
async function settled(a: TestAccount, metric: string, total: number) {
  const deadline = Date.now() + 120_000;
  let n = 0;
  while (Date.now() < deadline && (n = [...(await query(a, metric, 'count')).values()].reduce((x, y) => x + y, 0)) < total) await new Promise((r) => setTimeout(r, 250));
  expect(n, `points of ${metric}`).toBe(total);
}
const counted = <T>(items: T[], key: (t: T) => string | undefined) => {
  const m = new Map<string, number>();
  for (const t of items) {
    const k = key(t);
    if (k !== undefined) m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
};

describe('a population of shoppers through the demo shop', () => {
  let account: TestAccount;
  const population: Plan[] = plans(VISITS);

  beforeAll(async () => {
    account = await createAccount(c);
    const origin = await shopFor(account);
    for (const plan of population) await visit(browser, origin, plan);
  });

  it('the plans cover every source, both categories, every funnel depth and two currencies', () => {
    expect(new Set(population.filter((p) => p.depth === 3).map((p) => p.currency))).toEqual(new Set(['EUR', 'USD']));
    expect(new Set(population.map((p) => p.depth))).toEqual(new Set([0, 1, 2, 3]));
    expect(population.some((p) => p.referrer && !p.utm) && population.some((p) => p.utm && !p.referrer) && population.some((p) => !p.utm && !p.referrer)).toBe(true);
  });

  it('page views per path and navigation kind: path only (no query string), product ids normalised, SPA category tabs counted', async () => {
    const expected = new Map<string, number>([
      ['/ load', VISITS],
      ['/product/:id load', VISITS],
      ...[...counted(population, (p) => p.category)].map(([k, n]) => [`/category/${k} spa`, n] as [string, number]),
      ['/cart load', population.filter((p) => p.depth >= 1).length],
      ['/checkout load', population.filter((p) => p.depth >= 2).length],
      ['/thank-you load', population.filter((p) => p.depth >= 3).length],
    ]);
    await settled(account, 'page.views', [...expected.values()].reduce((a, b) => a + b));
    expect(await query(account, 'page.views', 'sum', ['path', 'nav'])).toEqual(expected);
  });

  it('sources: one referral per visit from another site or with utm parameters, referrer host only', async () => {
    const arriving = population.filter((p) => p.referrer || p.utm);
    await settled(account, 'referrals', arriving.length);
    const key = (p: Plan) => [p.referrer ? new URL(p.referrer).hostname : '-', p.utm?.utm_source ?? '-', p.utm?.utm_medium ?? '-', p.utm?.utm_campaign ?? '-'].join(' ');
    expect(await query(account, 'referrals', 'sum', ['referrer', 'utm_source', 'utm_medium', 'utm_campaign'])).toEqual(counted(arriving, key));
  });

  it('funnel steps, purchases, revenue and order value per currency (never summed across currencies)', async () => {
    const at = (d: number) => population.filter((p) => p.depth >= d);
    const buyers = at(3);
    await settled(account, 'commerce.purchase', buyers.length);
    expect(await query(account, 'commerce.view_item', 'sum')).toEqual(new Map([['', VISITS]]));
    expect(await query(account, 'commerce.view_item', 'sum', ['category'])).toEqual(counted(population, (p) => (['101', '102'].includes(p.product) ? 'shoes' : 'shirts')));
    expect(await query(account, 'commerce.add_to_cart', 'sum')).toEqual(new Map([['', at(1).length]]));
    expect(await query(account, 'commerce.begin_checkout', 'sum')).toEqual(new Map([['', at(2).length]]));
    expect(await query(account, 'commerce.purchase', 'sum', ['currency'])).toEqual(counted(buyers, (p) => p.currency));

    const revenue = new Map<string, number>();
    for (const p of buyers) revenue.set(p.currency, (revenue.get(p.currency) ?? 0) + PRICES[p.product]![p.currency]);
    const summed = await query(account, 'commerce.revenue', 'sum', ['currency']);
    expect([...summed.keys()].sort()).toEqual(['EUR', 'USD']);
    for (const [cur, v] of revenue) expect(summed.get(cur)).toBeCloseTo(v, 6);
    const orderValue = await query(account, 'commerce.order_value', 'sum', ['currency']);
    for (const [cur, v] of revenue) expect(orderValue.get(cur)).toBeCloseTo(v, 6);
    expect(await query(account, 'commerce.order_value', 'count', ['currency'])).toEqual(counted(buyers, (p) => p.currency));
  });

  it('no errors were captured on the shop', async () => {
    expect(await query(account, 'page.errors', 'sum')).toEqual(new Map());
  });

  it('what the collector holds about the visitors: these metric names, tag keys and values, nothing else (no query string, no full referrer URL, no identifier)', async () => {
    await settled(account, 'commerce.purchase', population.filter((p) => p.depth === 3).length);
    // (Web Vitals of a visit's last page may be lost when its context closes before they are due: not awaited)
    const res = await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${account.readToken}` } });
    const { metrics } = (await res.json()) as { metrics: { name: string; kind: string; tags: { key: string; values: string[] }[] }[] };
    const inventory = Object.fromEntries(metrics.map((m) => [m.name, Object.fromEntries(m.tags.map((t) => [t.key, [...t.values].sort()]))]));
    const paths = ['/', '/cart', '/category/shirts', '/category/shoes', '/checkout', '/product/:id', '/thank-you'];
    const loaded = ['/', '/cart', '/checkout', '/product/:id', '/thank-you'];
    const vitals = Object.fromEntries(['vitals.ttfb', 'vitals.fcp', 'vitals.lcp', 'vitals.cls'].filter((n) => inventory[n]).map((n) => [n, { path: loaded.filter((p) => inventory[n]!.path!.includes(p)) }]));
    expect(Object.keys(vitals)).toEqual(expect.arrayContaining(['vitals.ttfb', 'vitals.fcp']));
    expect(inventory).toEqual({
      'page.views': { path: paths, nav: ['load', 'spa'] },
      referrals: { referrer: ['news.example', 'search.example'], utm_source: ['newsletter', 'search'], utm_medium: ['cpc', 'email'], utm_campaign: ['shoes', 'winter'] },
      'commerce.view_item': { category: ['shirts', 'shoes'] },
      'commerce.add_to_cart': { category: ['shirts', 'shoes'] },
      'commerce.begin_checkout': {},
      'commerce.purchase': { currency: ['EUR', 'USD'] },
      'commerce.revenue': { currency: ['EUR', 'USD'] },
      'commerce.order_value': { currency: ['EUR', 'USD'] },
      ...vitals,
      // INP only where there was an interaction on a page that was then left
      ...(inventory['vitals.inp'] ? { 'vitals.inp': { path: inventory['vitals.inp'].path!.filter((p) => loaded.includes(p)) } } : {}),
    });
    expect(JSON.stringify(metrics)).not.toMatch(/currency=|\?|#|https?:|127\.0\.0\.1|HeadlessChrome|Mozilla/);
  });
});

describe('consent and visits', () => {
  it('with data-respect-gpc and Global Privacy Control on, a visit posts nothing', async () => {
    const account = await createAccount(c);
    const origin = await shopFor(account, ' data-respect-gpc');
    const context = await browser.newContext();
    await context.addInitScript(() => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true }));
    const page = await context.newPage();
    const posts: string[] = [];
    page.on('request', (r) => r.url().startsWith(c.url) && r.method() === 'POST' && posts.push(r.url()));
    await page.goto(`${origin}/?utm_source=newsletter`, { referer: 'https://news.example/' });
    await page.goto(`${origin}/product/101`);
    await page.click('#add');
    await page.waitForURL(`${origin}/cart`);
    await page.evaluate(() => (window as any).Cipherstat.instance.flush());
    await page.goto('about:blank');
    expect(posts).toEqual([]);
    expect(await query(account, 'page.views', 'count')).toEqual(new Map());
    await context.close();
  });

  it('a reload is a page view but not a new visit: the referral is counted once', async () => {
    const account = await createAccount(c);
    const origin = await shopFor(account);
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${origin}/?utm_source=newsletter&utm_medium=email`, { referer: 'https://news.example/' });
    await page.reload();
    await page.evaluate(() => (window as any).Cipherstat.instance.flush());
    await context.close();
    await settled(account, 'page.views', 2);
    expect(await query(account, 'referrals', 'sum', ['referrer', 'utm_source', 'utm_medium'])).toEqual(new Map([['news.example newsletter email', 1]]));
  });

  it('with data-require-consent and no consent, a whole visit sends nothing; after setConsent(true) the current page is captured', async () => {
    const account = await createAccount(c);
    const origin = await shopFor(account, ' data-require-consent');
    const context = await browser.newContext();
    const page = await context.newPage();
    const batches: string[] = [];
    page.on('request', (r) => r.url().startsWith(c.url) && r.method() === 'POST' && batches.push(r.url()));
    await page.goto(`${origin}/?utm_source=newsletter&currency=USD`, { referer: 'https://news.example/' });
    await page.click('.tabs button[data-category="shoes"]');
    await page.goto(`${origin}/product/101`);
    await page.click('#add');
    await page.waitForURL(`${origin}/cart`);
    await page.click('#checkout');
    await page.waitForURL(`${origin}/checkout`);
    await page.click('#pay');
    await page.waitForURL(/thank-you/);
    await page.evaluate(() => (window as any).Cipherstat.instance.flush());
    await page.goto('about:blank'); // hidden: Web Vitals would be reported now
    expect(batches).toEqual([]);
    for (const m of ['page.views', 'referrals', 'commerce.view_item', 'commerce.purchase', 'vitals.ttfb', 'vitals.lcp']) expect(await query(account, m, 'count'), m).toEqual(new Map());

    await page.goto(`${origin}/cart`);
    await page.evaluate(async () => {
      const cs = (window as any).Cipherstat.instance;
      cs.setConsent(true);
      await cs.flush();
    });
    await settled(account, 'page.views', 1);
    expect(await query(account, 'page.views', 'sum', ['path', 'nav'])).toEqual(new Map([['/cart load', 1]]));
    await context.close();
  });
});

describe("README's storefront embed", () => {
  const README = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
  const block = /<!-- readme-test: storefront -->\n```html\n([\s\S]*?)\n```/.exec(README)![1]!;

  it('runs as written in Chromium: the page view, each funnel step, the purchase and its revenue under its currency; data-auto="errors" keeps only error counts', async () => {
    const account = await createAccount(c);
    const only = await createAccount(c);
    const html = (a: TestAccount, auto = 'data-auto') =>
      `<!doctype html><meta charset="utf-8"><title>readme</title>\n` +
      block
        .replaceAll('https://metrics.shop.example', c.url)
        .replace('acct_3f9c…', a.accountId)
        .replace('m1x…=', a.writeKey)
        .replace(' data-auto>', ` ${auto}>`);
    expect(html(account)).not.toContain('…');
    const { server, origin } = await startShop((req, res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end(req.url === '/only-errors' ? html(only, 'data-auto="errors"') : html(account)),
    );
    servers.push(server);
    const context = await browser.newContext();
    const page = await context.newPage();
    for (const path of ['/shoes/trail-runner', '/only-errors']) {
      await page.goto(origin + path);
      await page.evaluate(() => (window as any).Cipherstat.instance.flush());
    }
    await context.close();
    await settled(account, 'commerce.purchase', 1);
    await settled(account, 'page.views', 1);
    expect(await query(account, 'page.views', 'sum', ['path', 'nav'])).toEqual(new Map([['/shoes/trail-runner load', 1]]));
    for (const step of ['view_item', 'add_to_cart', 'begin_checkout']) expect(await query(account, `commerce.${step}`, 'sum'), step).toEqual(new Map([['', 1]]));
    expect(await query(account, 'commerce.revenue', 'sum', ['currency'])).toEqual(new Map([['EUR', 99.5]]));
    expect(await query(account, 'commerce.order_value', 'count', ['currency'])).toEqual(new Map([['EUR', 1]]));
    // data-auto="errors": the commerce calls are recorded, no page view, no vitals
    await settled(only, 'commerce.purchase', 1);
    expect(await query(only, 'page.views', 'count')).toEqual(new Map());
    expect(await query(only, 'vitals.ttfb', 'count')).toEqual(new Map());
  });
});

describe('paths, bounds and errors on a page that makes unbounded paths', () => {
  let account: TestAccount;
  let normalized: TestAccount;
  let origin: string;

  beforeAll(async () => {
    account = await createAccount(c);
    normalized = await createAccount(c);
    const page = (a: TestAccount, autocapture: string) => `<!doctype html><meta charset="utf-8"><title>paths</title>
<script src="${c.url}/cipherstat-storefront.min.js"></script>
<script>
  const cs = Cipherstat.createStorefront({ endpoint: ${JSON.stringify(c.url)}, accountId: ${JSON.stringify(a.accountId)}, writeKey: ${JSON.stringify(a.writeKey)},
    collectorKey: ${JSON.stringify(a.collectorKey)}, autocapture: ${autocapture} });
  window.cs = cs;
  // identifiers in paths (the default normalisation makes them :id)
  history.pushState(null, '', '/order/8812');
  history.pushState(null, '', '/order/9127/items/3f2a61c4-4a6b-4a3e-9c1e-0c4a2b7d9e10');
  history.pushState(null, '', '/order/9128');
  // unbounded: a new path on every step, with query strings and fragments
  for (let i = 0; i < 60; i++) history.pushState(null, '', '/article/a' + Math.random().toString(36).slice(2, 10) + '?session=' + i + '#top');
  history.replaceState(null, '', location.pathname + '?same-path'); // the same path: not a navigation
  window.back = new Promise((r) => { addEventListener('popstate', r, { once: true }); history.back(); });
  setTimeout(() => { throw new Error('card 4111 1111 1111 1111 declined for ada@example.com'); });
  Promise.reject(new Error('secret rejection'));
</script>`;
    ({ origin } = await startShop((req, res) => {
      const path = new URL(req.url!, 'http://x').pathname;
      if (path === '/bounded') return res.writeHead(200, { 'content-type': 'text/html' }).end(page(account, '{ maxPaths: 10, vitals: false }'));
      if (path === '/normalized')
        return res.writeHead(200, { 'content-type': 'text/html' }).end(page(normalized, "{ vitals: false, normalizePath: (p) => p.replace(/^\\/article\\/.*/, '/article/:slug') }"));
      res.writeHead(404).end();
    }));
  });

  for (const [name, path] of [
    ['bounded', '/bounded'],
    ['normalized', '/normalized'],
  ] as const) {
    it(`${name}: page views stay within the bound, query strings and fragments dropped, replaceState to the same path not counted, popstate counted; uncaught errors counted without their messages`, async () => {
      const a = name === 'bounded' ? account : normalized;
      const context = await browser.newContext();
      const tab = await context.newPage();
      await tab.goto(origin + path);
      await tab.evaluate(async () => {
        await (window as any).back;
        await new Promise((r) => setTimeout(r, 50)); // the error thrown from a timer
        await (window as any).cs.flush();
      });
      await context.close();
      // 1 load + 3 orders + 60 articles + 1 step back (popstate); replaceState to the same path: none
      await settled(a, 'page.views', 1 + 3 + 60 + 1);
      const views = await query(a, 'page.views', 'sum', ['path', 'nav']);
      if (name === 'bounded') {
        // 10 distinct paths at most: the landing page, 2 order paths and the first 7 articles; later paths count as (other)
        const articles = [...views].filter(([k]) => k.startsWith('/article/'));
        expect(articles).toHaveLength(7);
        for (const [k, n] of articles) expect([k, n]).toEqual([expect.stringMatching(/^\/article\/a[a-z0-9]+ spa$/), 1]);
        expect(new Map([...views].filter(([k]) => !k.startsWith('/article/')))).toEqual(
          new Map([
            [`${path} load`, 1],
            ['/order/:id spa', 2],
            ['/order/:id/items/:id spa', 1],
            ['(other) spa', 60 - 7 + 1],
          ]),
        );
      } else {
        expect(views).toEqual(
          new Map([
            [`${path} load`, 1],
            // the page's normalizePath replaces the default one, so the orders keep their numbers
            ['/order/8812 spa', 1],
            ['/order/9127/items/3f2a61c4-4a6b-4a3e-9c1e-0c4a2b7d9e10 spa', 1],
            ['/order/9128 spa', 1],
            ['/article/:slug spa', 60 + 1],
          ]),
        );
      }
      await settled(a, 'page.errors', 2);
      expect(await query(a, 'page.errors', 'sum', ['type'])).toEqual(new Map([['error', 1], ['rejection', 1]]));
      // every tag the account's points carry: no message, no stack, no query string
      const { metrics } = (await (await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${a.readToken}` } })).json()) as {
        metrics: { name: string; tags: { key: string; values: string[] }[] }[];
      };
      expect(metrics.map((m) => m.name).sort()).toEqual(['page.errors', 'page.views']);
      expect(metrics.find((m) => m.name === 'page.errors')!.tags).toEqual([{ key: 'type', values: ['error', 'rejection'], distinctValues: 2 }]);
      expect(JSON.stringify(metrics)).not.toMatch(/declined|secret|4111|session=|#top|same-path/);
    });
  }
});
