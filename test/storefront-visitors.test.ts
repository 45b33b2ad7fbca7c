/**
 * Issue 15, unique visitors (README "Unique visitors"): real Chromium through the demo shop,
 * a real collector (chDB on a temp dir). Each visitor reaches the collector through its own
 * reverse proxy (one trusted hop), which sets the visitor's address (X-Forwarded-For) and user
 * agent on every request — also on beacons a page sends as it unloads, which Chromium's
 * per-context user agent emulation does not reach. `uniq` answers the ground truth of
 * distinct visitors per page and per funnel step; the Library in Node sends batches without a
 * visitor; no address, user agent or daily hash is found in any table, file or log; after the
 * day's secret is gone the same visitor counts again; after a shred no key opens the sealed
 * visitor fields.
 *
 * The daily secret's clock is the test's (`visitorClock`), fixed, so a run across a real UTC
 * midnight changes nothing; queries use day buckets in a fixed-offset zone whose local noon is
 * now, so a visit never straddles a bucket edge.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, request, type Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLibrary } from '@cipherstat/library';
import { fromBase64, toBase64, toHex } from '@cipherstat/protocol';
import { startShopServer } from '../examples/storefront/server.mjs';
import { plans, shopperAgent, visit, type Plan } from '../examples/storefront/shoppers.mjs';
import { createAccount, startTestCollector, type TestAccount, type TestCollector } from '../services/collector/test/support/collector.js';
import { files, inventory, until } from '../services/collector/test/lifecycle-support.js';
import { openVisitor } from '../services/collector/src/at-rest/visitor.js';
import { connectionOf } from '../services/collector/src/storage/index.js';
import { launchChromium } from './support/browser.js';

/** The demo shop's catalogue (examples/storefront/public/shop.js) as ground truth. */
const PRICES: Record<string, Record<'EUR' | 'USD', number>> = { '101': { EUR: 89, USD: 99 }, '102': { EUR: 65.5, USD: 72 }, '201': { EUR: 39.9, USD: 44 }, '202': { EUR: 49, USD: 54.5 } };
const ARTIFACTS = fileURLToPath(new URL('./artifacts', import.meta.url));

const DAY = 86_400_000;
const VISITS = 10; // from 8 visitors: the last two visits are visitors 0 and 1 again (shoppers.mjs)
const addressOf = (visitor: number) => `198.51.100.${17 + visitor}`;
/** A fixed-offset zone whose local time is about noon now: day buckets have their edges ~12 h away. */
const ZONE = (() => {
  const offset = 12 - new Date().getUTCHours(); // local = UTC + offset, in -11..12
  return offset === 0 ? 'UTC' : `Etc/GMT${offset > 0 ? '-' : '+'}${Math.abs(offset)}`;
})();

let visitorNow = Date.UTC(2026, 0, 15, 12);
let c: TestCollector;
let dataDir: string;
let browser: Browser;
const servers: Server[] = [];
const env = { CIPHERSTAT_TRUST_PROXY: '1' }; // the shop's visitors arrive through one proxy hop (proxyFor)

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-visitors-'));
  c = await startTestCollector({ env, dataDir, visitorClock: () => visitorNow });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  for (const s of servers) s.close();
  await c?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** A reverse proxy to the collector that presents every request as visitor `v`'s: its address and user agent. */
async function proxyFor(v: number): Promise<string> {
  const target = new URL(c.url);
  const server = createServer((req, res) => {
    const headers = { ...req.headers, host: target.host, 'user-agent': shopperAgent(v), 'x-forwarded-for': addressOf(v) };
    const out = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (up) => {
      res.writeHead(up.statusCode!, up.headers);
      up.pipe(res);
    });
    out.on('error', () => res.writeHead(502).end());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/** The demo shop for account `a`, its tag pointing at visitor `v`'s proxy (one shop per visitor). */
async function shopFor(a: TestAccount, v: number) {
  const tag = { collector: await proxyFor(v), account: a.accountId, writeKey: a.writeKey, keyId: a.collectorKey.keyId, publicKey: a.collectorKey.publicKey };
  const { server, origin } = await startShopServer({ tag });
  servers.push(server);
  return origin;
}
/** A visit by `plan.visitor` through its shop and proxy (created on first use per account). */
const shops = new Map<string, string>();
async function visitAs(a: TestAccount, plan: Plan): Promise<string> {
  const key = `${a.accountId}/${plan.visitor}`;
  if (!shops.has(key)) shops.set(key, await shopFor(a, plan.visitor));
  await visit(browser, shops.get(key)!, plan);
  return shops.get(key)!;
}

/** POST /v1/query over the day around now, one value per group (the day bucket's; the range has one bucket with data). */
async function query(a: TestAccount, metric: string, aggregation: 'uniq' | 'count' | 'sum' | 'p75', groupBy: string[] = []): Promise<Map<string, number>> {
  await c.services.processor!.drain();
  const now = Date.now();
  const res = await fetch(`${c.url}/v1/query`, {
    method: 'POST',
    headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ metric, aggregation, interval: 'day', timezone: ZONE, from: now - 3 * 3600e3, to: now + 3 * 3600e3, groupBy }),
  });
  if (res.status === 404) return new Map();
  const body = (await res.json()) as { series: { tags: Record<string, string>; points: [number, number | null][] }[] };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return new Map(
    body.series.map((s) => {
      const filled = s.points.filter(([, v]) => v !== 0 && v !== null);
      expect(filled.length, 'one day bucket with data').toBeLessThanOrEqual(1);
      return [groupBy.map((k) => s.tags[k] ?? '-').join(' '), filled[0]?.[1] ?? 0];
    }),
  );
}
async function settled(a: TestAccount, metric: string, total: number) {
  await until(async () => ([...(await query(a, metric, 'count')).values()].reduce((x, y) => x + y, 0) >= total ? true : undefined), 120_000, `${total} points of ${metric}`);
}
const distinct = (ps: Plan[]) => new Set(ps.map((p) => p.visitor)).size;

describe('visitors of a population through the demo shop', () => {
  let account: TestAccount;
  const population = plans(VISITS);
  const hashes: Uint8Array[] = [];

  beforeAll(async () => {
    account = await createAccount(c);
    for (const plan of population) await visitAs(account, plan);
    await settled(account, 'page.views', VISITS * 2);
    // today's hashes of these visitors, to look for them below (only this process could compute them, and only today)
    for (const v of new Set(population.map((p) => p.visitor))) hashes.push(c.services.visitors.hash(account.accountId, { address: addressOf(v), userAgent: shopperAgent(v), origin: 'x' })!);
  });

  it('uniq: distinct visitors per page and funnel step, next to page views (returning visitors count once)', async () => {
    expect(distinct(population)).toBe(8);
    const at = (d: number) => population.filter((p) => p.depth >= d);
    await settled(account, 'commerce.purchase', at(3).length);
    // ground truth: the same plans
    const views = await query(account, 'page.views', 'uniq', ['path']);
    expect(views.get('/')).toBe(8);
    expect(views.get('/product/:id')).toBe(8);
    expect(views.get('/cart')).toBe(distinct(at(1)));
    expect(views.get('/checkout')).toBe(distinct(at(2)));
    expect(views.get('/thank-you')).toBe(distinct(at(3)));
    expect(await query(account, 'page.views', 'uniq')).toEqual(new Map([['', 8]]));
    expect(await query(account, 'page.views', 'count')).toEqual(new Map([['', [...(await query(account, 'page.views', 'count', ['path'])).values()].reduce((a, b) => a + b)]]));
    expect(await query(account, 'commerce.view_item', 'uniq')).toEqual(new Map([['', 8]]));
    expect(await query(account, 'commerce.add_to_cart', 'uniq')).toEqual(new Map([['', distinct(at(1))]]));
    expect(await query(account, 'commerce.begin_checkout', 'uniq')).toEqual(new Map([['', distinct(at(2))]]));
    expect(await query(account, 'commerce.purchase', 'uniq', ['currency'])).toEqual(
      new Map(['EUR', 'USD'].map((cur) => [cur, distinct(at(3).filter((p) => p.currency === cur))])),
    );
  });

  it("the dashboard's storefront view shows the ground truth: visitors, page views, top pages, sources, campaigns, funnel and conversion, revenue and AOV per currency, Web Vitals at p75", async () => {
    const at = (d: number) => population.filter((p) => p.depth >= d);
    await settled(account, 'commerce.purchase', at(3).length);
    // the query API's answers first: the page's own queries then have the read token's 2 query slots to themselves
    const viewsByPath = await query(account, 'page.views', 'sum', ['path']);
    const ttfbP75 = (await query(account, 'vitals.ttfb', 'p75')).get('');
    const context = await browser.newContext({ timezoneId: ZONE, locale: 'en-US', viewport: { width: 1280, height: 1000 } });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    await page.goto(c.url);
    await page.fill('#token', account.readToken);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#storefront[data-state=ready]', { timeout: 120_000 });
    const read = () =>
      page.evaluate(() => {
        const cells = (id: string) =>
          Array.from(document.querySelectorAll(`#${id} tbody tr`)).map((tr) => Array.from(tr.children).map((td) => (td.querySelector('.value') as HTMLElement | null)?.dataset.value ?? td.textContent!.trim()));
        const kpi = (k: string) => (document.querySelector(`[data-kpi=${k}] .value`) as HTMLElement).dataset.value;
        return { visitors: kpi('visitors'), views: kpi('pageviews'), pages: cells('sf-pages'), sources: cells('sf-sources'), campaigns: cells('sf-campaigns'), funnel: cells('sf-funnel'), revenue: cells('sf-revenue'), vitals: cells('sf-vitals') };
      });
    const v = await read();
    const totalViews = [...viewsByPath.values()].reduce((a, b) => a + b);
    expect(v.visitors).toBe('8');
    expect(v.views).toBe(String(totalViews));
    // top pages: every path with its views and visitors, most viewed first
    expect(new Map(v.pages.map(([p, n]) => [p, Number(n)]))).toEqual(viewsByPath);
    expect(v.pages.map(([, n]) => Number(n))).toEqual([...v.pages.map(([, n]) => Number(n))].sort((a, b) => b - a));
    expect(Object.fromEntries(v.pages.map(([p, , u]) => [p, Number(u)]))).toMatchObject({ '/': 8, '/cart': distinct(at(1)), '/thank-you': distinct(at(3)) });
    // sources and campaigns, from the plans
    const count = <T>(xs: T[], key: (x: T) => string | undefined) => {
      const m = new Map<string, number>();
      for (const x of xs) {
        const k = key(x);
        if (k) m.set(k, (m.get(k) ?? 0) + 1);
      }
      return m;
    };
    expect(new Map(v.sources.map(([k, n]) => [k, Number(n)]))).toEqual(count(population, (p) => (p.referrer ? new URL(p.referrer).hostname : undefined)));
    expect(new Map(v.campaigns.map(([k, n]) => [k, Number(n)]))).toEqual(count(population, (p) => (p.utm ? `${p.utm.utm_source} · ${p.utm.utm_medium} · ${p.utm.utm_campaign}` : undefined)));
    // the funnel: events per step, conversion from the step before and from the first, exact to the counts
    const steps = [VISITS, at(1).length, at(2).length, at(3).length];
    const pct = (a: number, b: number) => `${new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 }).format((100 * a) / b)} %`;
    expect(v.funnel.map((r) => r.slice(1))).toEqual(steps.map((n, i) => [String(n), i ? pct(n, steps[i - 1]!) : '', i ? pct(n, steps[0]!) : '']));
    // revenue, orders and average order value per currency (never summed across currencies)
    const revenue = new Map<string, { sum: number; orders: number }>();
    for (const p of at(3)) {
      const r = revenue.get(p.currency) ?? { sum: 0, orders: 0 };
      r.sum += PRICES[p.product]![p.currency];
      r.orders++;
      revenue.set(p.currency, r);
    }
    expect(v.revenue.map((r) => r[0]).sort()).toEqual(['EUR', 'USD']);
    for (const [cur, sum, orders, aov] of v.revenue) {
      const truth = revenue.get(cur!)!;
      expect(Number(sum)).toBeCloseTo(truth.sum, 6);
      expect(Number(orders)).toBe(truth.orders);
      expect(Number(aov)).toBeCloseTo(truth.sum / truth.orders, 6);
    }
    // Web Vitals: p75 as the query API answers it, rated by Google's thresholds
    const ttfb = v.vitals.find((r) => r[0]!.includes('vitals.ttfb'))!;
    expect(ttfb).toBeDefined();
    expect(Number(ttfb[1])).toBe(ttfbP75);
    expect(ttfb[2]).toBe(Number(ttfb[1]) <= 800 ? 'good' : Number(ttfb[1]) <= 1800 ? 'needs improvement' : 'poor');
    expect(problems).toEqual([]);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.locator('#storefront').screenshot({ path: `${ARTIFACTS}/storefront-view.png` });
    console.log(`screenshot: ${ARTIFACTS}/storefront-view.png`);
    await context.close();
  });

  it('the Library in Node sends batches without a visitor: its points count, uniq is 0', async () => {
    const lib = createLibrary({ endpoint: c.url, accountId: account.accountId, writeKey: account.writeKey, persist: false });
    for (let i = 0; i < 5; i++) lib.count('server.orders', 1);
    await lib.flush();
    await lib.shutdown();
    await settled(account, 'server.orders', 5);
    expect(await query(account, 'server.orders', 'uniq')).toEqual(new Map([['', 0]]));
    const stored = await connectionOf(c.services.store).query<{ n: string; with: string }>(
      "SELECT count() AS n, countIf(visitor != '') AS with FROM batches WHERE account_id = {a:String}",
      { a: account.accountId },
    );
    // the browser batches carry one, the Node batch none
    expect(Number(stored[0]!.with)).toBeGreaterThanOrEqual(VISITS);
    expect(Number(stored[0]!.n) - Number(stored[0]!.with)).toBe(1);
  });

  it('no address, user agent or daily hash in any table, log or file (files read with the engine stopped)', async () => {
    expect(hashes).toHaveLength(8);
    const needles = [...new Set(population.map((p) => p.visitor))].flatMap((v) => [addressOf(v), `Shopper/${v}`]);
    const hashNeedles = hashes.flatMap((h) => [toHex(h), toBase64(h), toBase64(h).replace(/=+$/, '')]);
    const store = connectionOf(c.services.store);
    let text = '';
    let rawRows = 0;
    const tables = await store.query<{ database: string; name: string }>("SELECT database, name FROM system.tables WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')");
    for (const { database, name } of tables) {
      const cols = await store.query<{ name: string }>('SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String}', { d: database, t: name });
      // every column as text and as hex, so raw bytes of a hash would show too
      const rows = await store.query(`SELECT ${cols.map((col) => `toString(\`${col.name}\`), hex(toString(\`${col.name}\`))`).join(', ')} FROM \`${database}\`.\`${name}\``);
      rawRows += rows.length;
      text += JSON.stringify(rows);
    }
    for (const t of ['query_log', 'text_log', 'query_thread_log']) {
      const exists = await store.query<{ n: string }>("SELECT count() AS n FROM system.tables WHERE database = 'system' AND name = {t:String}", { t });
      if (Number(exists[0]!.n)) text += JSON.stringify(await store.query(`SELECT * FROM system.${t}`));
    }
    expect(rawRows).toBeGreaterThan(20);
    expect(text).toContain(account.accountId); // positive control
    const upper = text.toUpperCase();
    for (const n of needles) expect(text.includes(n), n).toBe(false);
    for (const h of hashes) expect(upper.includes(toHex(h).toUpperCase()), 'a daily hash').toBe(false);
    for (const n of hashNeedles) expect(text.includes(n), 'a daily hash').toBe(false);

    const logs = c.logs.join('');
    expect(logs).toContain(account.accountId); // positive control
    for (const n of [...needles, ...hashNeedles]) expect(logs.includes(n), n).toBe(false);

    // files: with the engine stopped (a running one renames its parts while a scan walks them)
    await c.close(); // keeps the data directory (stop() would too: it is ours)
    const all = files(dataDir);
    expect(all.length).toBeGreaterThan(10);
    for (const f of all) {
      for (const n of [...needles, ...hashNeedles]) expect(f.bytes.includes(n), `${n} in ${f.path}`).toBe(false);
      for (const h of hashes) expect(f.bytes.includes(Buffer.from(h)), `a daily hash in ${f.path}`).toBe(false);
    }
    c = await startTestCollector({ env, dataDir, visitorClock: () => visitorNow });
  });
});

describe('days and deletion', () => {
  it('the same visitor the next day is not linkable: once the secret is replaced, they count again', async () => {
    const account = await createAccount(c);
    const plan = { ...plans(1)[0]!, depth: 0 as const, visitor: 5 };
    const origin = await visitAs(account, plan);
    await visitAs(account, plan); // the same day: the same visitor
    await settled(account, 'page.views', 4);
    expect(await query(account, 'page.views', 'uniq')).toEqual(new Map([['', 1]]));
    const before = c.services.visitors.hash(account.accountId, { address: addressOf(5), userAgent: shopperAgent(5), origin })!;
    visitorNow += DAY; // the next UTC day for the secret (the points still land in today's bucket)
    await visitAs(account, plan);
    await settled(account, 'page.views', 6);
    // one person, two daily hashes: nothing links them, so they are two visitors
    expect(await query(account, 'page.views', 'uniq')).toEqual(new Map([['', 2]]));
    expect(c.services.visitors.hash(account.accountId, { address: addressOf(5), userAgent: shopperAgent(5), origin })).not.toEqual(before);
  });

  it('after a shred no key the collector holds opens a sealed visitor field (the account key did, before)', async () => {
    const account = await createAccount(c);
    await visitAs(account, { ...plans(1)[0]!, depth: 0, visitor: 3 });
    await settled(account, 'page.views', 2);
    const sealed = (
      await connectionOf(c.services.store).query<{ id: string; v: string }>("SELECT batch_id AS id, base64Encode(visitor) AS v FROM batches WHERE account_id = {a:String} AND visitor != ''", { a: account.accountId })
    ).map((r) => ({ id: r.id, v: fromBase64(r.v)! }));
    expect(sealed.length).toBeGreaterThan(0);
    const keys = c.services.keyring.accountKeys(account.accountId)!.map((k) => ({ publicKey: k.publicKey.slice(), secretKey: k.secretKey.slice() }));
    for (const s of sealed) expect(openVisitor(keys, account.accountId, s.id, s.v)).toHaveLength(8); // positive control

    expect((await c.admin('DELETE', `/v1/accounts/${account.accountId}?now=true`)).status).toBe(200);
    await until(async () => (await (await c.admin('GET', `/v1/accounts/${account.accountId}`)).json()).purge?.complete, 30_000, 'the purge');
    const left = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM batches WHERE account_id = {a:String}', { a: account.accountId });
    expect(Number(left[0]!.n)).toBe(0);
    // a copy of the fields taken before: every key the keyring still holds, none opens one
    const { pairs } = inventory(c.services.keyring);
    expect(pairs.length).toBeGreaterThan(2);
    for (const s of sealed) expect(openVisitor(pairs, account.accountId, s.id, s.v)).toBeNull();
  });
});
