/**
 * The per-account caches of a processing tick (TickState: pseudonym functions, pseudonyms, series):
 * a warm state computes exactly what a fresh one computes, over many accounts; key changes
 * (rotation, wipe with a new pair) are picked up at once; forgetAccount drops everything of an
 * account; the counts of the plaintext points come back from the sealed rollups.
 */
import { describe, expect, it } from 'vitest';
import { encodeInner, keyPair, randomBytes, seal, toHex, type Point } from '@cipherstat/protocol';
import { computeTick, TickState, type TickAccount, type TickInput, type TickKey, type TickOutput } from '../src/process/tick.js';
import { openRollup } from '../src/at-rest/records.js';
import { decodeAggregate } from '../src/rollup/index.js';
import { FifoMap, LruMap } from '../src/fifo-map.js';
import { mulberry32 } from '../../../test/support/seeded.mjs';

const NOW = Date.now();
const key = (version: number, pair = keyPair()): TickKey => ({ version, ...pair, dataKey: randomBytes(32), macKey: randomBytes(32) });
const id = (i: number) => `acct_${i.toString(16).padStart(24, '0')}`;

/** ~10-point batches of accounts 0..n-1 (skewed: a few big shops, a long tail), 20 series each. */
function storefront(accounts: Map<string, TickAccount | null>, n: number, batches: number, seed: number) {
  const rnd = mulberry32(seed);
  const rows: TickInput['rows'] = [];
  const points: { accountId: string; p: Point }[] = [];
  for (let b = 0; b < batches; b++) {
    const a = Math.floor(n * rnd() ** 3); // a few big shops, a long tail
    const accountId = id(a);
    const pts: Point[] = Array.from({ length: 8 + Math.floor(rnd() * 5) }, (_, i) => {
      const s = Math.floor(rnd() * 20);
      return { id: i, kind: s < 12 ? 'histogram' : 'counter', name: s < 12 ? 'page.load_ms' : 'orders', value: Math.floor(rnd() * 1000), time: NOW - Math.floor(rnd() * 120_000), tags: { page: `/p/${s}` } };
    });
    const batchId = toHex(randomBytes(16));
    const account = accounts.get(accountId)!;
    rows.push({ accountId, batchId, pointCount: pts.length, receivedAt: NOW, sealed: seal(encodeInner(accountId, batchId, pts), account.keys.at(-1)!.publicKey) });
    for (const p of pts) points.push({ accountId, p });
  }
  return { rows, points };
}

/** Opened rollups as plain facts (nonces differ between runs). */
function opened(out: TickOutput, accounts: Map<string, TickAccount | null>) {
  return out.rollups
    .map((row) => {
      const { agg, part, writtenAt, ...r } = row;
      const keys = accounts.get(r.accountId)!.keys;
      const dataKey = keys.find((k) => k.version === r.keyVersion)!.dataKey;
      const a = decodeAggregate(openRollup(dataKey, row, agg)!); // the part is bound into the row
      return { ...r, count: a.count, sum: a.sum };
    })
    .sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1));
}

describe('tick caches over many accounts', () => {
  it('a warm state computes what a fresh one computes, and the counts match the plaintext points', () => {
    const n = 150;
    const accounts = new Map<string, TickAccount | null>(Array.from({ length: n }, (_, i) => [id(i), { keys: [key(1)], retentionDays: 30, confidential: false }]));
    const warm = new TickState();
    for (let t = 0; t < 3; t++) {
      const { rows, points } = storefront(accounts, n, 150, 7 + t);
      const input = { rows, accounts, now: NOW, part: `p${t}` };
      const a = computeTick(warm, input);
      const b = computeTick(new TickState(), input);
      expect(opened(a, accounts)).toEqual(opened(b, accounts));
      expect(a.pointsProcessed).toBe(points.length);
      // Every point is counted once per level.
      const minuteCounts = new Map<string, number>();
      for (const r of opened(a, accounts)) if (r.level === 0) minuteCounts.set(r.accountId, (minuteCounts.get(r.accountId) ?? 0) + r.count);
      const expected = new Map<string, number>();
      for (const { accountId } of points) expected.set(accountId, (expected.get(accountId) ?? 0) + 1);
      expect(minuteCounts).toEqual(expected);
      const touched = new Set(rows.map((r) => r.accountId)).size;
      if (t > 0) expect(a.cacheLookups.tick_account.hit).toBeGreaterThan(0);
      expect(a.cacheLookups.tick_account.hit + a.cacheLookups.tick_account.miss).toBe(touched);
      expect(b.cacheLookups.tick_account).toEqual({ hit: 0, miss: touched });
    }
  });

  it('caches far smaller than accounts × series evict in every tick and never give a wrong answer', () => {
    const n = 150;
    const accounts = new Map<string, TickAccount | null>(Array.from({ length: n }, (_, i) => [id(i), { keys: [key(1)], retentionDays: 30, confidential: false }]));
    const small = new TickState(false, { accounts: 7, pseudonyms: 60, series: 40 });
    for (let t = 0; t < 3; t++) {
      const { rows, points } = storefront(accounts, n, 150, 21 + t);
      const input = { rows, accounts, now: NOW, part: `s${t}` };
      const a = computeTick(small, input);
      expect(opened(a, accounts)).toEqual(opened(computeTick(new TickState(), input), accounts));
      expect(a.pointsProcessed).toBe(points.length);
      expect(a.cacheLookups.series.miss).toBeGreaterThan(40); // it did evict
      expect([small.pseudonyms.size, small.pseudonymCache.size, small.seriesCache.size]).toEqual([7, 60, 40]);
    }
  });

  it('least recently used first: an entry read all the time stays while many others come and go (a FIFO by write drops it)', () => {
    const lru = new LruMap<string, number>(3);
    const fifo = new FifoMap<string, number>(3);
    for (const m of [lru, fifo]) {
      m.set('busy', 1);
      for (let i = 0; i < 1000; i++) {
        m.get('busy');
        m.set(`tail${i}`, i);
      }
    }
    expect(lru.get('busy')).toBe(1);
    expect(fifo.get('busy')).toBeUndefined();
    expect([...lru.keys()]).toEqual(['tail998', 'tail999', 'busy']);
    expect(lru.size).toBe(3);
  });

  it('a hit moves its entry only when max/2 or more insertions or moves came after it: a fresh hit leaves the order as it is', () => {
    const m = new LruMap<string, number>(10);
    for (let i = 0; i < 10; i++) m.set(`k${i}`, i);
    const order = () => [...m.keys()].join(' ');
    const before = order();
    // k5..k9: fewer than 5 writes after them (fresh); k0..k4: 5 or more (stale)
    for (const k of ['k9', 'k5', 'k7']) expect(m.get(k)).toBe(Number(k.slice(1)));
    expect(order()).toBe(before);
    expect(m.get('k4')).toBe(4); // 5 writes after it: moved to the back
    expect(order()).toBe('k0 k1 k2 k3 k5 k6 k7 k8 k9 k4');
    expect(m.get('k5')).toBe(5); // now 5 writes after it (k6..k9 and k4's move): stale, moved
    expect(order()).toBe('k0 k1 k2 k3 k6 k7 k8 k9 k4 k5');
    // eviction takes the front: k0 (never read), then k1
    m.set('n1', 1).set('n2', 2);
    expect(order()).toBe('k2 k3 k6 k7 k8 k9 k4 k5 n1 n2');
    // set moves at once, read or not; has() never moves
    m.set('k2', 20);
    expect(m.has('k3')).toBe(true);
    expect(order()).toBe('k3 k6 k7 k8 k9 k4 k5 n1 n2 k2');
    expect(m.get('k2')).toBe(20);
  });

  it('the bound, deterministically over sizes 1..12 and random traffic: an entry stays while at most max - max(1, floor(max/2)) other keys were used (set or read) since its last use; every answer is the last value set; size never exceeds max', () => {
    for (let max = 1; max <= 12; max++) {
      const rnd = mulberry32(1000 + max);
      const m = new LruMap<number, number>(max);
      const truth = new Map<number, number>();
      /** per key: the other keys used since its own last use (true LRU keeps it while there are at most max - 1) */
      const since = new Map<number, Set<number>>();
      const keep = max - Math.max(1, Math.floor(max / 2)); // (max 1: 0, nothing else may be used)
      let evictedEarly = 0;
      for (let step = 0; step < 5000; step++) {
        const key = Math.floor(rnd() ** 2 * 4 * max); // skewed: a few keys hot, most cold
        let used = false;
        if (rnd() < 0.5) {
          const got = m.get(key);
          if (got !== undefined) {
            expect(got).toBe(truth.get(key));
            used = true;
          }
        } else {
          m.set(key, step);
          truth.set(key, step);
          used = true;
        }
        if (used) {
          for (const [k, others] of since) if (k !== key) others.add(key);
          since.set(key, new Set());
        }
        expect(m.size).toBeLessThanOrEqual(max);
        for (const [k, others] of since) {
          if (others.size <= keep) expect(m.has(k), `max ${max}, step ${step}, key ${k}: ${others.size} others used since`).toBe(true);
          else if (others.size < max && !m.has(k)) evictedEarly++; // where it is LRU-ish rather than LRU
        }
      }
      if (max >= 4) expect(evictedEarly).toBeGreaterThan(0); // the cases between the two bounds occur: the bound is what is tested
    }
  });

  it('evicts exactly the front entry a fresh keys() walk finds, through deletes, deleteWhere and clear (the kept front iterator)', () => {
    // the reference: the same bounded maps with the front looked up anew at each eviction (before 2026-12-06)
    class Reference<K, V> {
      readonly map = new Map<K, V>();
      constructor(private readonly max: number) {}
      set(k: K, v: V) {
        this.map.delete(k);
        this.map.set(k, v);
        if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
      }
    }
    for (const max of [1, 2, 5, 64]) {
      const rnd = mulberry32(77 + max);
      const fifo = new FifoMap<number, number>(max);
      const ref = new Reference<number, number>(max);
      for (let step = 0; step < 20_000; step++) {
        const key = Math.floor(rnd() * 3 * max);
        const r = rnd();
        if (r < 0.7) (fifo.set(key, step), ref.set(key, step));
        else if (r < 0.95) (fifo.delete(key), ref.map.delete(key));
        else if (r < 0.999) (fifo.deleteWhere((k) => k % 7 === key % 7), [...ref.map.keys()].filter((k) => k % 7 === key % 7).forEach((k) => ref.map.delete(k)));
        else (fifo.clear(), ref.map.clear());
        expect([...fifo.keys()].join(' '), `max ${max}, step ${step}`).toBe([...ref.map.keys()].join(' '));
      }
    }
  });

  it('an entry read once every max - floor(max/2) insertions survives 10,000 others (true LRU: every max - 1); one never read is gone', () => {
    for (const max of [2, 3, 10, 11, 1000]) {
      const keep = max - Math.floor(max / 2);
      const m = new LruMap<string, number>(max);
      m.set('hot', 1);
      m.set('cold', 2);
      for (let i = 0; i < 10_000; i++) {
        if (i % keep === 0) expect(m.get('hot'), `max ${max}, after ${i}`).toBe(1);
        m.set(`tail${i}`, i);
      }
      expect(m.get('hot')).toBe(1);
      expect(m.has('cold')).toBe(false);
      expect(m.size).toBe(max);
    }
  });

  it('picks up a rotation and a wipe with a new key pair at once', () => {
    const v1 = key(1);
    const accounts = new Map<string, TickAccount | null>([[id(1), { keys: [v1], retentionDays: 30, confidential: false }]]);
    const state = new TickState();
    const batch = (to: TickKey) => {
      const batchId = toHex(randomBytes(16));
      const pts: Point[] = [{ id: 0, kind: 'counter', name: 'orders', value: 1, time: NOW - 1000, tags: {} }];
      return { accountId: id(1), batchId, pointCount: 1, receivedAt: NOW, sealed: seal(encodeInner(id(1), batchId, pts), to.publicKey) };
    };
    const tick = (rows: TickInput['rows']) => computeTick(state, { rows, accounts, now: NOW, part: 'p' });
    expect(tick([batch(v1)]).rollups.map((r) => r.keyVersion)).toEqual([1]); // (a minute row: the point's hour is running)

    // Rotation (same pair carried over): written under version 2 at once.
    const v2 = { ...key(2), publicKey: v1.publicKey, secretKey: v1.secretKey };
    accounts.set(id(1), { keys: [v1, v2], retentionDays: 30, confidential: false });
    const rotated = tick([batch(v1)]);
    expect(rotated.rollups.map((r) => r.keyVersion)).toEqual([2]);
    expect(rotated.cacheLookups.tick_account).toEqual({ hit: 0, miss: 1 });
    expect(opened(rotated, accounts).map((r) => r.count)).toEqual([1]);

    // Wipe with a new pair: the old pair's batches no longer open, the new pair's do.
    const v3 = key(3);
    accounts.set(id(1), { keys: [v3], retentionDays: 30, confidential: false });
    const wiped = tick([batch(v1), batch(v3)]);
    expect(wiped.batchRejects).toEqual({ stale_write_key: 1 });
    expect(wiped.rollups.map((r) => r.keyVersion)).toEqual([3]);
    expect(opened(wiped, accounts).map((r) => r.count)).toEqual([1]);
  });

  it('forgetAccount drops the account\'s keys, pseudonyms and series, and only its own', () => {
    const accounts = new Map<string, TickAccount | null>([0, 1].map((i) => [id(i), { keys: [key(1)], retentionDays: 30, confidential: false }]));
    const state = new TickState();
    const { rows } = storefront(accounts, 2, 20, 3);
    computeTick(state, { rows, accounts, now: NOW, part: 'p' });
    const mine = (k: string) => k.startsWith(`${id(1)}\u0000`);
    const keys = (m: { keys(): Iterable<string> }) => [...m.keys()];
    expect(new Set(rows.map((r) => r.accountId))).toEqual(new Set([id(0), id(1)]));
    expect(keys(state.pseudonymCache).some(mine)).toBe(true);
    state.forgetAccount(id(1));
    expect(keys(state.pseudonyms).some((k) => k.startsWith(`${id(0)}\u0000`))).toBe(true);
    expect(keys(state.pseudonymCache).some((k) => k.startsWith(`${id(0)}\u0000`))).toBe(true);
    for (const m of [state.pseudonyms, state.pseudonymCache, state.seriesCache, state.known]) {
      expect(keys(m).some(mine)).toBe(false);
    }
  });
});
