/** Consent and Global Privacy Control, against a real local collector. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { memoryStore } from '../src/persist.js';
import { startCollector, type Collector } from './helpers/collector.js';
import { harness } from './helpers/platform.js';

let col: Collector;
beforeEach(async () => {
  col = await startCollector();
});
afterEach(() => col.close());

const base = (o: Record<string, unknown> = {}) => ({ endpoint: col.endpoint, accountId: col.accountId, writeKey: col.writeKey, flushInterval: 20, ...o });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('consent', () => {
  it('requireConsent: nothing recorded or sent (not even the key request) until setConsent(true)', async () => {
    const h = harness(base({ requireConsent: true }));
    h.lib.count('a');
    h.lib.gauge('b', 1);
    h.hide();
    await h.lib.flush();
    await sleep(100);
    expect(col.requests).toHaveLength(0);
    expect(h.dropped('no_consent')).toBe(2);

    h.lib.setConsent(true);
    h.lib.count('c');
    await h.lib.flush();
    expect(col.points().map((p) => p.name)).toEqual(['c']);
  });

  it('batches persisted earlier wait for consent, then go', async () => {
    const store = memoryStore();
    col.script.push({ status: 503 });
    const first = harness(base({ maxRetries: 0 }), { storage: store });
    first.lib.count('earlier');
    await first.lib.flush(); // 503, given up on, kept
    await first.lib.shutdown();
    expect(store.read()?.q).toHaveLength(1);
    const before = col.requests.length;

    const second = harness(base({ requireConsent: true }), { storage: store });
    await sleep(100);
    expect(col.requests.length).toBe(before);
    second.lib.setConsent(true);
    await second.lib.flush();
    expect(col.points().map((p) => p.name)).toEqual(['earlier']);
    expect(store.read()?.q).toEqual([]);
  });

  it('setConsent(false) drops queued and persisted batches and stops recording', async () => {
    const store = memoryStore();
    col.script.push({ status: 503 }, { status: 503 });
    const h = harness(base({ maxRetries: 0, maxBatchSize: 2 }), { storage: store });
    for (let i = 0; i < 3; i++) h.lib.count('a', i);
    await h.lib.flush(); // both batches parked
    h.lib.count('pending');
    h.lib.setConsent(false);
    expect(h.dropped('consent_withdrawn')).toBe(4);
    expect(store.read()).toBeNull();
    h.lib.count('later');
    expect(h.dropped('no_consent')).toBe(1);
    await h.lib.flush();
    await sleep(50);
    expect(col.batches.size).toBe(0);
  });

  it('Global Privacy Control counts as no consent when respected; explicit consent overrides', async () => {
    const ignored = harness(base(), { gpc: true });
    ignored.lib.count('a');
    await ignored.lib.flush();
    expect(col.batches.size).toBe(1);

    const respected = harness(base({ respectGlobalPrivacyControl: true }), { gpc: true });
    respected.lib.count('b');
    await respected.lib.flush();
    expect(col.batches.size).toBe(1);
    expect(respected.dropped('no_consent')).toBe(1);
    respected.lib.setConsent(true);
    respected.lib.count('c');
    await respected.lib.flush();
    expect(col.points().map((p) => p.name)).toEqual(['a', 'c']);
  });
});
