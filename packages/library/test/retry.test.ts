/**
 * Retry schedule on fake timers. The collector is the fake one in process (real
 * envelopes, real decryption), so the clock is fully under the test's control.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoff, jittered, permanent, retryAfter, RETRY_AFTER_MAX } from '../src/transport.js';
import { inProcess } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

beforeEach(() => {
  vi.useFakeTimers({ now: new Date('2025-06-01T12:00:00Z') });
  vi.spyOn(Math, 'random').mockReturnValue(0.5);
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

function setup(options: Record<string, unknown> = {}) {
  const col = inProcess();
  const h = harness(
    { endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, collectorKey: col.collectorKey, flushInterval: 1000, ...options },
    { fetch: col.fetch },
  );
  const posts = () => col.calls.filter((c) => c.init?.method === 'POST');
  const times = () => posts().map((c) => c.at - posts()[0]!.at);
  return { col, h, posts, times };
}

describe('backoff and Retry-After', () => {
  it('full jitter: random(0, min(cap, base·2^attempt))', () => {
    expect(backoff(0, 1000, 60000, () => 0.999)).toBeCloseTo(999);
    expect(backoff(3, 1000, 60000, () => 1)).toBe(8000);
    expect(backoff(10, 1000, 60000, () => 1)).toBe(60000);
    expect(backoff(5, 1000, 60000, () => 0)).toBe(0);
  });
  it('parses seconds and HTTP dates, clamps, ignores garbage', () => {
    const now = Date.parse('2025-06-01T12:00:00Z');
    expect(retryAfter('7', now)).toBe(7000);
    expect(retryAfter(' 0 ', now)).toBe(0);
    expect(retryAfter('Sun, 01 Jun 2025 12:00:30 GMT', now)).toBe(30000);
    expect(retryAfter('Sun, 01 Jun 2025 11:00:00 GMT', now)).toBe(0);
    expect(retryAfter('999999', now)).toBe(RETRY_AFTER_MAX);
    expect(retryAfter('soon', now)).toBeUndefined();
    expect(retryAfter('-5', now)).toBeUndefined();
    expect(retryAfter(null, now)).toBeUndefined();
  });
  it('classifies statuses', () => {
    expect([400, 401, 403, 404, 413, 422].every(permanent)).toBe(true);
    expect([0, 408, 429, 500, 502, 503, 504].some(permanent)).toBe(false);
  });
});

describe('retry schedule', () => {
  it('retries 5xx and network failures with exponential backoff and full jitter', async () => {
    const { col, h, times } = setup();
    col.script.push({ status: 500 }, { status: 0 }, { status: 502 }, { status: 504 });
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(1000); // flushInterval: first attempt
    await vi.advanceTimersByTimeAsync(60_000);
    // Math.random = 0.5 → 500, 1000, 2000, 4000 ms between attempts
    expect(times()).toEqual([0, 500, 1500, 3500, 7500]);
    expect(col.batches.size).toBe(1);
    expect(h.drops).toEqual([]);
  });

  it('caps the delay at retryMaxDelay', async () => {
    const { col, h, times } = setup({ retryBaseDelay: 1000, retryMaxDelay: 3000, maxRetries: 10 });
    col.script.push(...Array(5).fill({ status: 503 }));
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(1000 + 60_000);
    expect(times()).toEqual([0, 500, 1500, 3000, 4500, 6000]);
  });

  it('honours Retry-After in seconds on 429 and as an HTTP date on 503', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0); // no jitter: exactly Retry-After
    const { col, h, times } = setup();
    const inTwelveSeconds = new Date(Date.now() + 1000 + 7000 + 12_000).toUTCString();
    col.script.push({ status: 429, headers: { 'retry-after': '7' } }, { status: 503, headers: { 'retry-after': inTwelveSeconds } });
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(1000);
    await vi.advanceTimersByTimeAsync(6999);
    expect(times()).toEqual([0]); // not before Retry-After
    await vi.advanceTimersByTimeAsync(1);
    expect(times()).toEqual([0, 7000]);
    await vi.advanceTimersByTimeAsync(30_000);
    expect(times()).toEqual([0, 7000, 19000]);
    expect(col.batches.size).toBe(1);
  });

  it('adds jitter to a Retry-After: never earlier, and clients refused together come back spread out', async () => {
    expect(jittered(7000, () => 0)).toBe(7000);
    expect(jittered(7000, () => 0.999)).toBeCloseTo(7000 + 0.999 * 3500);
    expect(jittered(0, () => 0.5)).toBe(500); // at least 1 s of spread
    // Twenty clients told `Retry-After: 1` at the same moment, seeded randomness.
    let seed = 20;
    vi.spyOn(Math, 'random').mockImplementation(() => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31; // LCG: the same sequence every run
      return seed / 2 ** 31;
    });
    const clients = Array.from({ length: 20 }, () => setup());
    for (const { col, h } of clients) {
      col.script.push({ status: 503, headers: { 'retry-after': '1' } });
      h.lib.count('a');
    }
    await vi.advanceTimersByTimeAsync(1000); // flushInterval: every client is refused at once
    await vi.advanceTimersByTimeAsync(10_000);
    const retries = clients.map(({ times }) => times()[1]!);
    for (const t of retries) {
      expect(t).toBeGreaterThanOrEqual(1000); // never before Retry-After
      expect(t).toBeLessThanOrEqual(2000);
    }
    expect(new Set(retries).size).toBeGreaterThanOrEqual(15); // spread over the second (ms resolution), not one wave
    expect(Math.max(...retries) - Math.min(...retries)).toBeGreaterThan(500);
    for (const { col } of clients) expect(col.batches.size).toBe(1);
  });

  it('retries 408 and 429 but not other 4xx', async () => {
    const { col, h, posts } = setup();
    col.script.push({ status: 408 }, { status: 429 }, { status: 422, body: { error: { code: 'invalid_header', message: '' } } });
    h.lib.count('a', 1);
    h.lib.count('a', 2);
    await vi.advanceTimersByTimeAsync(1000 + 60_000);
    expect(posts()).toHaveLength(3);
    expect(col.batches.size).toBe(0);
    expect(h.drops).toEqual([['rejected', expect.objectContaining({ count: 2, status: 422 })]]);
    expect(h.store.read()?.q ?? []).toEqual([]); // removed from storage on a permanent 4xx
  });

  it('a 400 carries its error code to onDrop', async () => {
    const { col, h } = setup();
    col.script.push({ status: 400, body: { error: { code: 'timestamp_out_of_range', message: '' } } });
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(1000);
    expect(h.drops).toEqual([['rejected', expect.objectContaining({ status: 400, code: 'timestamp_out_of_range' })]]);
  });

  it('410 stops the Library: queue dropped, timers stopped, onError', async () => {
    const { col, h, posts } = setup();
    h.lib.count('a');
    await vi.advanceTimersByTimeAsync(1000);
    expect(col.batches.size).toBe(1);
    col.script.push({ status: 410, body: { error: { code: 'account_deleted', message: '' } } });
    h.lib.count('b');
    h.lib.count('c');
    await vi.advanceTimersByTimeAsync(1000);
    expect(h.errors.map((e) => e.code)).toEqual(['account_gone']);
    expect(h.dropped('account_gone')).toBe(2);
    h.lib.count('d');
    expect(h.dropped('stopped')).toBe(1);
    await h.lib.flush();
    await vi.advanceTimersByTimeAsync(600_000);
    expect(posts()).toHaveLength(2);
    expect(vi.getTimerCount()).toBe(0);
    expect(h.store.read()).toBeNull();
  });

  it('gives up after maxRetries: dropped without persistence', async () => {
    const { col, h, posts } = setup({ maxRetries: 2, persist: false });
    col.script.push(...Array(3).fill({ status: 503 }));
    h.lib.count('a');
    const flushed = h.lib.flush();
    await vi.advanceTimersByTimeAsync(10_000);
    await flushed;
    expect(posts()).toHaveLength(3);
    expect(h.drops).toEqual([['retries_exhausted', expect.objectContaining({ count: 1, status: 503 })]]);
  });

  it('gives up after maxRetries: parked with persistence, resent after the next 202 and on online', async () => {
    const { col, h, posts } = setup({ maxRetries: 1 });
    col.script.push({ status: 503 }, { status: 503 });
    h.lib.count('a');
    const flushed = h.lib.flush();
    await vi.advanceTimersByTimeAsync(10_000);
    await flushed; // given up on: flush resolves
    expect(posts()).toHaveLength(2);
    expect(h.errors.map((e) => e.code)).toEqual(['send_failed']);
    expect(h.drops).toEqual([]);
    expect(h.store.read()?.q).toHaveLength(1); // still stored
    await vi.advanceTimersByTimeAsync(600_000);
    expect(posts()).toHaveLength(2); // parked: no more attempts on its own
    h.lib.count('b');
    await h.lib.flush();
    await vi.advanceTimersByTimeAsync(1000);
    expect(col.batches.size).toBe(2); // b, then the parked batch
    expect(h.store.read()?.q).toEqual([]);

    col.script.push({ status: 503 }, { status: 503 });
    h.lib.count('c');
    const parked = h.lib.flush();
    await vi.advanceTimersByTimeAsync(10_000);
    await parked;
    expect(col.batches.size).toBe(2);
    h.online();
    await vi.advanceTimersByTimeAsync(10);
    expect(col.batches.size).toBe(3);
  });

  it('a retried batch is byte-identical', async () => {
    const { col, h, posts } = setup();
    col.script.push({ status: 503 }, { status: 0 });
    h.lib.count('a', 1, { k: 'v' });
    await vi.advanceTimersByTimeAsync(1000 + 10_000);
    const bodies = posts().map((c) => Buffer.from(c.init!.body as Uint8Array).toString('hex'));
    expect(bodies).toHaveLength(3);
    expect(new Set(bodies).size).toBe(1);
    expect(col.batches.size).toBe(1);
  });
});
