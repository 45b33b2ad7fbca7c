/**
 * Simulated shoppers: each visit is a fresh browser context (no cookies, no storage) that
 * lands on the shop from somewhere, may browse a category (a History API navigation), views
 * a product and goes as far down the funnel as its plan says. `plans(n)` makes a mixed,
 * deterministic population; the tests compute their ground truth from the same plans.
 */

const PRODUCTS = ['101', '102', '201', '202'];
const SOURCES = [
  { referrer: 'https://news.example/article' },
  { utm: { utm_source: 'newsletter', utm_medium: 'email', utm_campaign: 'winter' } },
  {},
  { referrer: 'https://search.example/?q=shoes', utm: { utm_source: 'search', utm_medium: 'cpc', utm_campaign: 'shoes' } },
];

/**
 * n visit plans: sources, categories, products, funnel depth and currency rotate independently.
 * `visitor` numbers the person: the last two of n ≥ 3 visits are returning visitors (visits 0
 * and 1 again), so n visits come from max(1, n − 2) distinct visitors (one browser each).
 */
export const plans = (n) =>
  Array.from({ length: n }, (_, i) => ({
    ...SOURCES[i % SOURCES.length],
    category: [undefined, 'shoes', 'shirts'][i % 3],
    product: PRODUCTS[i % PRODUCTS.length],
    // 0 views only, 1 adds to the cart, 2 begins checkout, 3 pays
    depth: [0, 1, 2, 3, 3][i % 5],
    currency: i % 2 ? 'USD' : 'EUR',
    visitor: i % Math.max(1, n - 2),
  }));

/**
 * A user agent for visitor `v`, for a proxy that presents a visitor's requests (as the visitors
 * test does). Not set on the browser context: Chromium's per-context user agent does not reach
 * the beacons a page sends as it unloads, so one shopper would show as two visitors.
 */
export const shopperAgent = (v) => `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Shopper/${v}`;

/** Runs one visit in `browser` (playwright-core) against the shop at `origin`; resolves once
 * the Library on the last page has delivered everything. `contextOptions` go to newContext
 * (e.g. a user agent); `prepare(context)` runs before the first page. */
export async function visit(browser, origin, plan, contextOptions = {}, prepare = undefined) {
  const context = await browser.newContext(contextOptions);
  try {
    await prepare?.(context);
    const page = await context.newPage();
    const query = new URLSearchParams({ ...plan.utm, currency: plan.currency });
    await page.goto(`${origin}/?${query}`, plan.referrer ? { referer: plan.referrer } : undefined);
    if (plan.category) await page.click(`.tabs button[data-category="${plan.category}"]`);
    await page.goto(`${origin}/product/${plan.product}`);
    if (plan.depth >= 1) await Promise.all([page.waitForURL(`${origin}/cart`), page.click('#add')]);
    if (plan.depth >= 2) await Promise.all([page.waitForURL(`${origin}/checkout`), page.click('#checkout')]);
    if (plan.depth >= 3) await Promise.all([page.waitForURL(/\/thank-you/), page.click('#pay')]);
    await page.evaluate(() => window.Cipherstat.instance.flush());
  } finally {
    await context.close();
  }
}
