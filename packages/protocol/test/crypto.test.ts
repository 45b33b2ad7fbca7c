import { createHmac, randomBytes as nodeRandom } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  keyPair, seal, openSeal, sealWith, secretSeal, secretOpen, hmacSha512, equalBytes, sharedKey,
  toBase64, fromBase64, toHex, fromHex, publicKeyOf,
} from '@cipherstat/protocol';
import { nodeX25519 } from '@cipherstat/protocol/node';

const msg = new TextEncoder().encode('the quick brown fox');

describe('sealed boxes', () => {
  it('round-trips and is randomized', () => {
    const r = keyPair();
    const a = seal(msg, r.publicKey);
    const b = seal(msg, r.publicKey);
    expect(toHex(a)).not.toBe(toHex(b));
    for (const s of [a, b]) {
      const o = openSeal(s, r);
      expect(o.ok && new TextDecoder().decode(o.value)).toBe('the quick brown fox');
      const n = openSeal(s, r, nodeX25519);
      expect(n.ok).toBe(true);
    }
  });

  it('rejects the wrong recipient, a flipped bit, and short input with a typed result', () => {
    const r = keyPair();
    const s = seal(msg, r.publicKey);
    expect(openSeal(s, keyPair())).toEqual({ ok: false, code: 'auth_failed' });
    for (let i = 0; i < s.length; i++) {
      const t = s.slice();
      t[i]! ^= 0x80;
      const res = openSeal(t, r);
      expect(res.ok, `flip at ${i}`).toBe(false);
    }
    expect(openSeal(new Uint8Array(10), r)).toEqual({ ok: false, code: 'auth_failed' });
  });

  it('is deterministic given the ephemeral key (for vectors)', () => {
    const r = keyPair();
    const e = new Uint8Array(32).fill(7);
    expect(toHex(sealWith(msg, r.publicKey, e))).toBe(toHex(sealWith(msg, r.publicKey, e)));
  });

  it('refuses to seal to a low-order recipient key', () => {
    expect(() => seal(msg, new Uint8Array(32))).toThrow(RangeError);
    expect(sharedKey(keyPair().secretKey, new Uint8Array(32))).toBeNull();
  });

  it('uses the injected random source', () => {
    let calls = 0;
    const random = (n: number) => (calls++, new Uint8Array(n).fill(3));
    const k = keyPair(random);
    expect(toHex(k.secretKey)).toBe('03'.repeat(32));
    expect(toHex(k.publicKey)).toBe(toHex(publicKeyOf(k.secretKey)));
    seal(msg, k.publicKey, random);
    expect(calls).toBe(2);
  });
});

describe('secretbox at rest', () => {
  it('round-trips, fails closed on wrong key or tampering, checks key length', () => {
    const key = nodeRandom(32);
    const s = secretSeal(key, msg);
    expect(new TextDecoder().decode(secretOpen(key, s)!)).toBe('the quick brown fox');
    expect(secretOpen(nodeRandom(32), s)).toBeNull();
    const t = s.slice();
    t[30]! ^= 1;
    expect(secretOpen(key, t)).toBeNull();
    expect(secretOpen(key, s.subarray(0, 10))).toBeNull();
    expect(() => secretSeal(new Uint8Array(16), msg)).toThrow(RangeError);
  });
});

describe('HMAC-SHA-512 and helpers', () => {
  it('matches node:crypto for short, block-sized and long keys', () => {
    for (const len of [0, 1, 32, 127, 128, 129, 300]) {
      const key = nodeRandom(len);
      const data = nodeRandom(len * 3 + 1);
      expect(toHex(hmacSha512(key, data))).toBe(createHmac('sha512', key).update(data).digest('hex'));
    }
  });

  it('equalBytes, base64 and hex', () => {
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(equalBytes(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(equalBytes(new Uint8Array([1]), new Uint8Array([1, 2]))).toBe(false);
    const b = nodeRandom(1000);
    expect(toBase64(b)).toBe(b.toString('base64'));
    expect(Buffer.from(fromBase64(b.toString('base64'))!)).toEqual(b);
    for (const bad of ['abc', 'ab=c', 'a b=', '====', 'ab\n==']) expect(fromBase64(bad)).toBeNull();
    expect(toHex(fromHex('00ff10')!)).toBe('00ff10');
    expect(fromHex('0g')).toBeNull();
    expect(fromHex('abc')).toBeNull();
  });
});

describe('node fast paths', () => {
  it('nodeSha512 equals tweetnacl sha512', async () => {
    const { sha512, utf8 } = await import('@cipherstat/protocol');
    const { nodeSha512 } = await import('@cipherstat/protocol/node');
    for (const text of ['', 'a', 'rollup\u0000acct\u00001', 'x'.repeat(1000)]) {
      expect(toHex(nodeSha512(text))).toBe(toHex(sha512(utf8(text))));
      expect(toHex(nodeSha512(utf8(text)))).toBe(toHex(sha512(utf8(text))));
    }
  });
});
