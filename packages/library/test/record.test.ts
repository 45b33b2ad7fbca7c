/** Recording: cheap validation, bad points dropped with a reason, never thrown. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { inProcess } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

let col: ReturnType<typeof inProcess>;
beforeEach(() => {
  col = inProcess();
});
afterEach(() => vi.restoreAllMocks());

const setup = (options: Record<string, unknown> = {}) =>
  harness({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, collectorKey: col.collectorKey, ...options }, { fetch: col.fetch });

describe('record', () => {
  it('drops bad points with a reason and never throws', async () => {
    const h = setup();
    const any = h.lib as unknown as Record<string, (...a: unknown[]) => void>;
    const bad: [string, () => void][] = [
      ['invalid_name', () => h.lib.count('')],
      ['invalid_name', () => h.lib.count('1st')],
      ['invalid_name', () => h.lib.count('has space')],
      ['invalid_name', () => h.lib.count('a'.repeat(129))],
      ['invalid_name', () => any.count!(null)],
      ['invalid_name', () => any.gauge!({ toString: () => 'x' }, 1)],
      ['invalid_value', () => h.lib.gauge('g', NaN)],
      ['invalid_value', () => h.lib.gauge('g', Infinity)],
      ['invalid_value', () => h.lib.observe('h', -Infinity)],
      ['invalid_value', () => any.observe!('h', '5')],
      ['invalid_value', () => any.gauge!('g')],
      ['invalid_tags', () => h.lib.count('c', 1, { 'bad key': 'v' })],
      ['invalid_tags', () => any.count!('c', 1, { k: 5 })],
      ['invalid_tags', () => h.lib.count('c', 1, { k: 'v'.repeat(257) })],
      ['invalid_tags', () => h.lib.count('c', 1, Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])))],
      ['invalid_tags', () => any.count!('c', 1, 'country=DE')],
      ['invalid_tags', () => any.count!('c', 1, ['x'])],
    ];
    for (const [reason, f] of bad) {
      const before = h.drops.length;
      expect(f).not.toThrow();
      expect(h.drops.slice(before).map(([r]) => r)).toEqual([reason]);
    }
    h.lib.count('ok.name-1:x/y_z', 1, { _sr: 'a', 'k.e-y': 'ü'.repeat(256) });
    h.lib.gauge('g', -0.5);
    h.lib.observe('h', 0);
    await h.lib.flush();
    expect(col.points().map((p) => p.name)).toEqual(['ok.name-1:x/y_z', 'g', 'h']);
    expect(col.errors).toEqual([]);
  });

  it('copies tags: later mutation does not change a recorded point', async () => {
    const h = setup();
    const tags = { country: 'DE' };
    h.lib.count('orders', 1, tags);
    tags.country = 'FR';
    await h.lib.flush();
    expect(col.points()[0]!.tags).toEqual({ country: 'DE' });
  });

  it('an exception in onDrop never reaches the caller', () => {
    const h = setup({
      onDrop: () => {
        throw new Error('boom');
      },
    });
    expect(() => h.lib.count('')).not.toThrow();
  });

  it('sampling: points are kept with probability sampleRate, counters are not rescaled', async () => {
    let r = 0;
    vi.spyOn(Math, 'random').mockImplementation(() => (r++ % 10) / 10); // 0, 0.1, …, 0.9
    const h = setup({ sampleRate: { 'page.view': 0.3, '*': 1 } });
    for (let i = 0; i < 10; i++) h.lib.count('page.view');
    h.lib.count('orders');
    await h.lib.flush();
    const names = col.points().map((p) => p.name);
    expect(names.filter((n) => n === 'page.view')).toHaveLength(3);
    expect(col.points().every((p) => p.value === 1 && !('_sr' in p.tags))).toBe(true);
    expect(names).toContain('orders');
    expect(h.drops).toEqual([]); // sampling is not a drop
  });

  it('sampleRate 0 records nothing', async () => {
    const h = setup({ sampleRate: 0 });
    h.lib.count('a');
    await h.lib.flush();
    expect(col.calls).toHaveLength(0);
  });

  it('bounds the queue: maxBatchSize × maxPersistedBatches points, then queue_full', async () => {
    const h = setup({ maxBatchSize: 2, maxPersistedBatches: 2 });
    for (let i = 0; i < 7; i++) h.lib.count('a', i);
    expect(h.dropped('queue_full')).toBe(3);
    await h.lib.flush();
    expect(col.points().map((p) => p.value)).toEqual([0, 1, 2, 3]);
  });

  it('records with the time of the call', async () => {
    const h = setup();
    const t0 = Date.now();
    h.lib.count('a');
    await h.lib.flush();
    const t = col.points()[0]!.time;
    expect(t).toBeGreaterThanOrEqual(t0);
    expect(t).toBeLessThanOrEqual(Date.now());
  });
});

describe('a write key that cannot be sealed to', () => {
  it('drops the points with a reason and an error, and never throws at the page', async () => {
    const h = setup({ writeKey: 'AQ'.padEnd(43, 'A') + '=' }); // u = 1: a low-order point
    h.lib.count('orders', 1, { country: 'DE' });
    await expect(h.lib.flush()).resolves.toBeUndefined();
    expect(h.drops.map(([r]) => r)).toEqual(['rejected']);
    expect(h.errors.map((e) => e.code)).toEqual(['invalid_option']);
    expect(col.points()).toEqual([]);
  });

  it('rejects NUL and lone surrogates in tag values (they would collide once pseudonymized)', () => {
    const h = setup();
    h.lib.count('c', 1, { k: 'a\u0000b' });
    h.lib.count('c', 1, { k: 'x\ud800' });
    expect(h.drops.map(([r]) => r)).toEqual(['invalid_tags', 'invalid_tags']);
  });
});
