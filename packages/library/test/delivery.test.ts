/** End to end against a real local HTTP server that decrypts with the protocol. */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

let col: Collector;
beforeEach(async () => {
  col = await startCollector();
});
afterEach(() => col.close());

const base = () => ({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey });

describe('delivery', () => {
  it('seals, sends and the collector opens both layers', async () => {
    const h = harness(base());
    h.lib.count('orders');
    h.lib.count('revenue', 42.5, { country: 'DE', currency: 'EUR' });
    h.lib.gauge('cart.size', 3);
    h.lib.observe('page.load_ms', 812, { page: '/checkout' });
    await h.lib.flush();
    expect(col.batches.size).toBe(1);
    const points = col.points();
    expect(points.map((p) => [p.id, p.kind, p.name, p.value, p.tags])).toEqual([
      [0, 'counter', 'orders', 1, {}],
      [1, 'counter', 'revenue', 42.5, { country: 'DE', currency: 'EUR' }],
      [2, 'gauge', 'cart.size', 3, {}],
      [3, 'histogram', 'page.load_ms', 812, { page: '/checkout' }],
    ]);
    expect(col.errors).toEqual([]);
    expect(col.keyFetches()).toBe(1);
    expect(h.drops).toEqual([]);
    const post = col.posts()[0]!;
    expect(post.contentType).toBe('application/octet-stream');
  });
});

describe('collector key', () => {
  it('a path prefix in endpoint is kept', async () => {
    await col.close();
    col = await startCollector({ prefix: '/ingest/cs' });
    const h = harness({ ...base(), endpoint: col.endpoint + '/' });
    h.lib.count('a');
    await h.lib.flush();
    expect(col.requests.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /ingest/cs/v1/collector-key', 'POST /ingest/cs/v1/batches']);
    expect(col.batches.size).toBe(1);
  });

  it('is fetched once and cached; a pinned key is never fetched', async () => {
    const fetched = harness(base());
    for (let i = 0; i < 3; i++) {
      fetched.lib.count('a');
      await fetched.lib.flush();
    }
    expect(col.keyFetches()).toBe(1);
    expect(fetched.store.read()?.k).toEqual(col.collectorKey);

    const pinned = harness({ ...base(), collectorKey: col.collectorKey });
    pinned.lib.count('b');
    await pinned.lib.flush();
    expect(col.keyFetches()).toBe(1);
    expect(col.batches.size).toBe(4);
  });

  it('after a rotation (400 unknown_key_id) it is fetched again and the same batch re-sealed once', async () => {
    const h = harness(base());
    h.lib.count('before');
    await h.lib.flush();
    col.rotate();
    h.lib.count('after');
    await h.lib.flush();
    expect(col.keyFetches()).toBe(2);
    const posts = col.posts();
    expect(posts).toHaveLength(3);
    expect(col.points().map((p) => p.name)).toEqual(['before', 'after']);
    expect(h.drops).toEqual([]);
    expect(h.store.read()?.k).toEqual(col.collectorKey);
  });

  it('a pinned key that the collector no longer knows: the batch is rejected, not looped', async () => {
    const h = harness({ ...base(), collectorKey: col.collectorKey });
    col.rotate();
    h.lib.count('a');
    await h.lib.flush();
    expect(col.keyFetches()).toBe(0);
    expect(col.posts()).toHaveLength(1);
    expect(h.drops).toEqual([['rejected', expect.objectContaining({ status: 400, code: 'unknown_key_id' })]]);
  });

  it('a key response that is not a key is retried, not used', async () => {
    col.script.length = 0;
    const h = harness({ ...base(), endpoint: col.origin + '/nowhere', retryBaseDelay: 10, maxRetries: 2, persist: false });
    h.lib.count('a');
    await h.lib.flush();
    expect(col.requests).toHaveLength(0); // 404s on /nowhere are not recorded
    expect(h.drops).toEqual([['retries_exhausted', expect.objectContaining({ count: 1, status: 0 })]]);
  });
});

describe('flush and shutdown', () => {
  it('many points: several batches, every point exactly once', async () => {
    const h = harness(base());
    for (let i = 0; i < 1234; i++) h.lib.observe('latency', i, { route: `/r${i % 7}` });
    await h.lib.flush();
    const sizes = [...col.batches.values()].map((b) => b.length);
    expect(sizes.length).toBeGreaterThanOrEqual(3); // by count (500) or by estimated bytes (32 KB)
    expect(Math.max(...sizes)).toBeLessThanOrEqual(500);
    expect(col.points().map((p) => p.value)).toEqual(Array.from({ length: 1234 }, (_, i) => i));
    expect([...col.deliveries.values()].every((n) => n === 1)).toBe(true);
  });

  it('flush() with nothing queued resolves at once; after shutdown recording is refused', async () => {
    const h = harness(base());
    await h.lib.flush();
    h.lib.count('a');
    await h.lib.shutdown();
    expect(col.batches.size).toBe(1);
    h.lib.count('b');
    expect(h.dropped('stopped')).toBe(1);
    await h.lib.flush();
    await h.lib.shutdown();
  });

  it('a request that is never answered (a stalled connection) is abandoned after the request timeout and retried: delivery goes on', { timeout: 60_000 }, async () => {
    // A real server that takes the request and never answers, in front of the collector: the
    // first key request and the first POST hang there; later requests reach the collector.
    const held: IncomingMessage[] = [];
    const stall = createServer((req) => void held.push(req));
    await new Promise<void>((r) => stall.listen(0, '127.0.0.1', r));
    const stalled = `http://127.0.0.1:${(stall.address() as AddressInfo).port}`;
    const seen = new Set<string>();
    const h = harness(
      { ...base(), retryBaseDelay: 1, retryMaxDelay: 1 },
      {
        timeout: 300, // the platform's request timeout (default 60 s), short for the test
        fetch: (url, init) => {
          const path = new URL(url).pathname;
          const first = !seen.has(path);
          seen.add(path);
          return fetch(first ? stalled + path : url, init); // the real fetch, with the Library's signal
        },
      },
    );
    try {
      h.lib.count('after.stall', 3);
      await h.lib.flush();
      expect(held.map((r) => `${r.method} ${r.url}`)).toEqual(['GET /v1/collector-key', 'POST /v1/batches']);
      expect(col.points().map((p) => [p.name, p.value])).toEqual([['after.stall', 3]]);
      expect(h.drops).toEqual([]);
    } finally {
      await h.lib.shutdown();
      stall.closeAllConnections();
      await new Promise((r) => stall.close(r));
    }
  });

  it('an unreachable collector: retries, then gives up; flush() still resolves', async () => {
    const h = harness({ ...base(), endpoint: 'http://127.0.0.1:9', collectorKey: col.collectorKey, retryBaseDelay: 5, maxRetries: 3, persist: false });
    h.lib.count('a');
    await h.lib.flush();
    expect(h.drops).toEqual([['retries_exhausted', expect.objectContaining({ count: 1, status: 0 })]]);
  });
});
