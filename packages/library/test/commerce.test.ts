/**
 * The commerce helpers and path normalisation in Node, sealed and opened for real (the fake
 * collector opens both layers with the protocol): GA4-named steps, purchases per ISO 4217
 * currency with revenue and order value as separate series, invalid values and currencies
 * refused and reported (nothing recorded); autocapture is browser-only (Node records none).
 */
import { afterEach, beforeEach, expect, it } from 'vitest';
import { createStorefront, type DropInfo, type DropReason } from '../src/index.js';
import { isCurrency } from '../src/storefront/commerce.js';
import { defaultNormalizePath, OVERFLOW, pathBound } from '../src/storefront/paths.js';
import { startCollector, type Collector } from './helpers/collector.js';

let col: Collector;
beforeEach(async () => {
  col = await startCollector();
});
afterEach(() => col.close());

it('steps, purchases per currency (revenue and order value tagged with it), refusals through onDrop; no autocapture in Node', async () => {
  const drops: [DropReason, DropInfo][] = [];
  const shop = createStorefront({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, autocapture: true, onDrop: (r, i) => drops.push([r, i]) });
  shop.viewItem({ tags: { category: 'shoes' } });
  shop.addToCart();
  shop.beginCheckout();
  shop.purchase({ value: 99.5, currency: 'EUR' });
  shop.purchase({ value: 12000, currency: 'JPY', tags: { channel: 'web' } });
  for (const currency of ['eur', 'EURO', 'XQZ', '', undefined]) shop.purchase({ value: 10, currency: currency as string });
  for (const value of [NaN, -1, Infinity, '10' as unknown as number]) shop.purchase({ value, currency: 'EUR' });
  await shop.flush();
  const got = col.points().map((p) => [p.kind, p.name, p.value, p.tags]);
  expect(got).toEqual([
    ['counter', 'commerce.view_item', 1, { category: 'shoes' }],
    ['counter', 'commerce.add_to_cart', 1, {}],
    ['counter', 'commerce.begin_checkout', 1, {}],
    ['counter', 'commerce.purchase', 1, { currency: 'EUR' }],
    ['counter', 'commerce.revenue', 99.5, { currency: 'EUR' }],
    ['histogram', 'commerce.order_value', 99.5, { currency: 'EUR' }],
    ['counter', 'commerce.purchase', 1, { channel: 'web', currency: 'JPY' }],
    ['counter', 'commerce.revenue', 12000, { channel: 'web', currency: 'JPY' }],
    ['histogram', 'commerce.order_value', 12000, { channel: 'web', currency: 'JPY' }],
  ]);
  expect(drops.map(([r]) => r)).toEqual([...Array(5).fill('invalid_tags'), ...Array(4).fill('invalid_value')]);
  expect(drops.every(([, i]) => i.name === 'commerce.purchase' && i.count === 3)).toBe(true);
  await shop.shutdown();
});

it('ISO 4217: three uppercase letters the runtime knows (Intl.supportedValuesOf)', () => {
  for (const c of ['EUR', 'USD', 'JPY', 'CHF', 'GBP', 'INR', 'BRL']) expect(isCurrency(c), c).toBe(true);
  for (const c of ['eur', 'Eur', 'EURO', 'EU', 'XQZ', 'ABC', 1, null]) expect(isCurrency(c), String(c)).toBe(false);
});

it('paths: identifier-like segments become :id; at most maxPaths distinct, the rest (other); a throwing or empty normalizePath counts as (other)', () => {
  expect(defaultNormalizePath('/product/123')).toBe('/product/:id');
  expect(defaultNormalizePath('/o/3f2a61c4-4a6b-4a3e-9c1e-0c4a2b7d9e10/x/deadbeefdeadbeef01')).toBe('/o/:id/x/:id');
  expect(defaultNormalizePath('/shoes/trail-runner-2')).toBe('/shoes/trail-runner-2');
  const path = pathBound(undefined, 3);
  const u = (p: string) => new URL('https://shop.example' + p);
  expect(['/a?x=1', '/b#f', '/product/7', '/c', '/a', '/product/8'].map((p) => path(u(p)))).toEqual(['/a', '/b', '/product/:id', OVERFLOW, '/a', '/product/:id']);
  const odd = pathBound((p) => (p == '/boom' ? (null as unknown as string) : p == '/throw' ? (() => { throw new Error('x'); })() : p));
  expect([odd(u('/boom')), odd(u('/throw')), odd(u('/ok'))]).toEqual([OVERFLOW, OVERFLOW, '/ok']);
});
