/**
 * Unique visitors' building blocks: the distinct-count sketch (rollup/distinct.ts) and its error
 * bound, the aggregate codec's version 2 (visitors) beside version 1, and the daily visitor
 * secret (ingest/visitors.ts). Inputs are fixed (hashes of counters): every run sees the same.
 */
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addPoint, decodeAggregate, emptyAggregate, encodeAggregate, finalize, mergeEncoded, mergeInto } from '../src/rollup/aggregate.js';
import { addHash, cloneDistinct, emptyDistinct, estimateDistinct, mergeDistinct, readDistinct, writeDistinct, type Distinct } from '../src/rollup/distinct.js';
import { ByteReader, ByteWriter } from '../src/rollup/bytes.js';
import { RollupError } from '../src/rollup/errors.js';
import { Visitors } from '../src/ingest/visitors.js';
import { openVisitor, sealVisitor } from '../src/at-rest/visitor.js';
import { keyPair } from '@cipherstat/protocol';

const T0 = Date.UTC(2026, 5, 1);
const DAY = 86_400_000;
const hashOf = (s: string): Uint8Array => new Uint8Array(createHash('sha256').update(s).digest().subarray(0, 8));
const sketchOf = (prefix: string, n: number): Distinct => {
  const d = emptyDistinct();
  for (let i = 0; i < n; i++) addHash(d, hashOf(`${prefix}/${i}`));
  return d;
};
const encode = (d: Distinct): Uint8Array => {
  const w = new ByteWriter();
  writeDistinct(w, d);
  return w.finish();
};

/** The bound the README states: exact up to 100 distinct, then within 1 % below 4,096 (sparse) and 3 % beyond (dense: about four standard errors of 1.04/√16384 = 0.81 %). */
const within = (n: number, e: number) => (n <= 100 ? e === n : Math.abs(e - n) / n <= (n <= 4096 ? 0.01 : 0.03));

describe('distinct-count sketch', () => {
  it('estimates within the stated error from 1 to 300,000 distinct visitors', () => {
    let worst = 0;
    for (let n = 1; n <= 200; n++) {
      const e = estimateDistinct(sketchOf(`small${n}`, n));
      expect(within(n, e), `${n} → ${e}`).toBe(true);
    }
    for (const seed of ['a', 'b', 'c']) {
      for (const n of [1000, 4000, 5000, 10_000, 30_000, 100_000, 300_000]) {
        const e = estimateDistinct(sketchOf(seed, n));
        expect(within(n, e), `${seed}: ${n} → ${e}`).toBe(true);
        worst = Math.max(worst, Math.abs(e - n) / n);
      }
    }
    console.log(`distinct sketch: worst relative error from 1,000 to 300,000 distinct: ${(worst * 100).toFixed(2)} %`);
    expect(estimateDistinct(emptyDistinct())).toBe(0);
  });

  it('counts a repeated visitor once; merging is the union, in any order, idempotent', () => {
    const d = emptyDistinct();
    for (let k = 0; k < 5; k++) for (let i = 0; i < 40; i++) addHash(d, hashOf(`v/${i}`));
    expect(estimateDistinct(d)).toBe(40);
    // overlapping halves: 0..2999 and 2000..4999, union 5000; sparse + dense both ways
    const a = emptyDistinct();
    const b = emptyDistinct();
    for (let i = 0; i < 3000; i++) addHash(a, hashOf(`u/${i}`));
    for (let i = 2000; i < 5000; i++) addHash(b, hashOf(`u/${i}`));
    const whole = sketchOf('u', 5000);
    const ab = mergeDistinct(cloneDistinct(a), b);
    const ba = mergeDistinct(cloneDistinct(b), a);
    expect(encode(ab)).toEqual(encode(whole));
    expect(encode(ba)).toEqual(encode(whole));
    expect(encode(mergeDistinct(cloneDistinct(ab), ab))).toEqual(encode(whole));
    const small = sketchOf('u', 10);
    expect(encode(mergeDistinct(cloneDistinct(small), whole))).toEqual(encode(whole));
    expect(encode(mergeDistinct(cloneDistinct(whole), small))).toEqual(encode(whole));
  });

  it('edge hashes: all-zero and all-one bits after the index land in range', () => {
    const d = emptyDistinct();
    addHash(d, new Uint8Array(8)); // index 0, register capped at 40
    addHash(d, new Uint8Array(8).fill(0xff)); // last index, register 1
    addHash(d, Uint8Array.of(0, 0, 0, 0x7f, 0, 0, 0, 0)); // index 0 again: register from the 7 bits after it
    addHash(d, Uint8Array.of(0xab, 0xcd, 0xef, 0x80, 0, 0, 0, 1)); // rest of the first word zero: register from the low word
    const back = readDistinct(new ByteReader(encode(d)));
    expect(encode(back)).toEqual(encode(d));
    expect(estimateDistinct(d)).toBe(3); // two of them share index 0
    // folded into dense registers, the same edges stay in range and fold as HLL++ does
    const big = sketchOf('fold', 5000);
    mergeDistinct(big, d);
    const again = readDistinct(new ByteReader(encode(big)));
    expect(encode(again)).toEqual(encode(big));
    expect(() => addHash(d, new Uint8Array(7))).toThrow(RangeError);
  });

  it('encodes sparse and dense forms; refuses malformed bytes', () => {
    for (const n of [1, 100, 4096, 4097]) {
      const d = sketchOf('e', n);
      const bytes = encode(d);
      expect(bytes[0]).toBe(n > 4096 ? 1 : 0); // dense beyond 4,096 sparse entries
      expect(estimateDistinct(readDistinct(new ByteReader(bytes)))).toBe(estimateDistinct(d));
    }
    const bad = (b: number[]) => () => readDistinct(new ByteReader(Uint8Array.from(b)));
    expect(bad([2])).toThrow(RollupError); // unknown form
    expect(bad([0, 1, 0, 0])).toThrow(RollupError); // register 0 in the sparse form
    expect(bad([0, 1, 0, 41])).toThrow(RollupError); // register above 40
    expect(bad([0, 1, 0x80, 0x80, 0x80, 0x10, 1])).toThrow(RollupError); // index 2^25
    expect(bad([1, ...new Array(16384).fill(52)])).toThrow(RollupError); // dense register above 51
    expect(bad([0, 2, 0, 1])).toThrow(RollupError); // truncated
    expect(bad([1, 0, 0])).toThrow(RollupError); // truncated dense
  });
});

describe('aggregates with visitors (codec version 2)', () => {
  it('an aggregate without visitors is written as version 3 (compact, no distinct sketch); version 1 rows still open', () => {
    const agg = addPoint(addPoint(emptyAggregate(), 3, T0), 5, T0 + 1);
    const bytes = encodeAggregate(agg);
    expect(bytes[0]).toBe(3);
    expect(Buffer.from(encodeAggregate(decodeAggregate(bytes))).equals(Buffer.from(bytes))).toBe(true);
    // the same aggregate as version 1 wrote it (before visitors and the compact encoding existed)
    const v1 = Buffer.from('010200000000000000084000000000000014400000000000001440000000000000204081d8eb83e83300026e01190100', 'hex');
    expect(Buffer.from(encodeAggregate(decodeAggregate(v1))).equals(Buffer.from(bytes))).toBe(true);
    expect(decodeAggregate(v1).visitors).toBeUndefined();
    expect(finalize(decodeAggregate(bytes), 'uniq')).toBe(0);
    expect(decodeAggregate(bytes).visitors).toBeUndefined();
  });

  it('visitors travel through encode, decode, mergeEncoded and merges; uniq counts them', () => {
    const a = emptyAggregate();
    const b = emptyAggregate();
    for (let i = 0; i < 30; i++) addPoint(a, 1, T0 + i, hashOf(`p/${i % 10}`)); // 10 visitors, 30 views
    for (let i = 0; i < 8; i++) addPoint(b, 1, T0 + i, hashOf(`p/${i + 5}`)); // 8 visitors, 5 of them also in a
    const ea = encodeAggregate(a);
    expect(ea[0]).toBe(4); // compact with visitors (version 2 rows: rollup-encoding.test.ts's vectors)
    expect(finalize(decodeAggregate(ea), 'uniq')).toBe(10);
    expect(finalize(decodeAggregate(ea, false), 'uniq')).toBe(10);
    expect(finalize(decodeAggregate(ea), 'count')).toBe(30);
    for (const withSketch of [true, false]) {
      const into = emptyAggregate();
      mergeEncoded(into, ea, withSketch);
      mergeEncoded(into, encodeAggregate(b), withSketch);
      expect(finalize(into, 'uniq')).toBe(13);
      expect(finalize(into, 'count')).toBe(38);
    }
    expect(finalize(mergeInto(decodeAggregate(ea), b), 'uniq')).toBe(13);
    // an old row (version 1) merged with a new one: its points count, its visitors are unknown
    const old = encodeAggregate(addPoint(emptyAggregate(), 1, T0));
    const into = emptyAggregate();
    mergeEncoded(into, old, false);
    mergeEncoded(into, ea, false);
    expect([finalize(into, 'count'), finalize(into, 'uniq')]).toEqual([31, 10]);
  });

  it('refuses a version 2 encoding without points or with a broken sketch, leaving the target unchanged', () => {
    expect(() => decodeAggregate(Uint8Array.of(2, 0))).toThrow(RollupError);
    const ea = encodeAggregate(addPoint(emptyAggregate(), 1, T0, hashOf('x')));
    const cut = ea.slice(0, ea.length - 1);
    expect(() => decodeAggregate(cut)).toThrow(RollupError);
    const into = addPoint(emptyAggregate(), 1, T0, hashOf('y'));
    const before = encodeAggregate(into);
    expect(() => mergeEncoded(into, cut, true)).toThrow(RollupError);
    expect(encodeAggregate(into)).toEqual(before);
  });
});

describe('the daily visitor secret (ingest/visitors.ts)', () => {
  const browser = { address: '203.0.113.9', userAgent: 'Canary/1.0', origin: 'https://shop.example' };

  it('one hash per visitor, account and day; none without Origin, address or user agent', () => {
    let now = T0 + 5_000;
    const v = new Visitors(() => now);
    const h1 = v.hash('acct_a', browser)!;
    expect(h1).toHaveLength(8);
    expect(v.hash('acct_a', browser)).toEqual(h1);
    expect(v.hash('acct_b', browser)).not.toEqual(h1); // per account
    expect(v.hash('acct_a', { ...browser, userAgent: 'Other/2.0' })).not.toEqual(h1);
    expect(v.hash('acct_a', { ...browser, address: '203.0.113.10' })).not.toEqual(h1);
    for (const missing of ['origin', 'address', 'userAgent'] as const) expect(v.hash('acct_a', { ...browser, [missing]: undefined })).toBeUndefined();
    now = T0 + DAY - 1;
    expect(v.hash('acct_a', browser)).toEqual(h1); // same UTC day
  });

  it('the next day the same visitor is not linkable: the old secret is zeroed, the new hash differs, both days count', () => {
    let now = T0 + 5_000;
    const v = new Visitors(() => now);
    const day1 = v.hash('acct_a', browser)!;
    const secret1 = (v as unknown as { secret: Buffer }).secret;
    expect(secret1.some((b) => b !== 0)).toBe(true);
    now += DAY;
    const day2 = v.hash('acct_a', browser)!;
    expect(day2).not.toEqual(day1);
    expect(secret1.every((b) => b === 0)).toBe(true); // day 1's secret is gone: its hashes cannot be made again
    const secret2 = (v as unknown as { secret: Buffer }).secret;
    expect(secret2).not.toBe(secret1);
    // a range over both days counts the visitor once per day (README "Unique visitors")
    const agg = emptyAggregate();
    addPoint(agg, 1, T0, day1);
    addPoint(agg, 1, T0 + DAY, day2);
    expect(finalize(agg, 'uniq')).toBe(2);
    v.destroy();
    expect(secret2.every((b) => b === 0)).toBe(true);
  });

  it('the sealed field opens only with the account key, bound to account and batch', () => {
    const kp = keyPair();
    const other = keyPair();
    const h = hashOf('visitor');
    const sealed = sealVisitor(kp.publicKey, 'acct_a', 'b1', h);
    expect(sealed.length).toBe(32 + 8 + 16);
    expect(openVisitor([other, kp], 'acct_a', 'b1', sealed)).toEqual(h);
    expect(openVisitor([other], 'acct_a', 'b1', sealed)).toBeNull();
    expect(openVisitor([kp], 'acct_a', 'b2', sealed)).toBeNull(); // moved to another batch
    expect(openVisitor([kp], 'acct_b', 'b1', sealed)).toBeNull();
    expect(openVisitor([kp], 'acct_a', 'b1', randomBytes(sealed.length))).toBeNull();
  });
});
