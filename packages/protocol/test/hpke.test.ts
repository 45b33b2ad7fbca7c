/**
 * HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM:
 * the RFC's A.1.1 vector, the Wycheproof AES-GCM cases of that AEAD, and @hpke/core as the
 * independent implementation in both directions (node:crypto and WebCrypto paths).
 */
import { readFileSync } from 'node:fs';
import { createCipheriv, createDecipheriv, createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { describe, expect, it } from 'vitest';
import { refOpen, refSeal } from './support/hpke-ref.js';
import { fromHex, toHex, keyPair, keySchedule, webSeal, utf8, concat } from '@cipherstat/protocol';
import { hmacFromSha256, hpkeKeySchedule, hpkeOpen, hpkeSeal, nodePublicKeyOf, openssl } from '@cipherstat/protocol/node';
import { libsodium } from './support/libsodium.js';

const hex = (s: string) => fromHex(s)!;
const a11 = JSON.parse(readFileSync(new URL('./data/hpke/rfc9180-a1-1-base.json', import.meta.url), 'utf8'));
describe('RFC 9180 A.1.1 (base mode, X25519 / HKDF-SHA256 / AES-128-GCM)', () => {
  const e0 = a11.encryptions[0];
  const info = hex(a11.info);
  const expected = a11.enc + e0.ciphertext;

  it('uses the suite 0x0020 / 0x0001 / 0x0001', () => {
    expect([a11.kem_id, a11.kdf_id, a11.aead_id, a11.mode]).toEqual([0x20, 1, 1, 0]);
    expect(toHex(nodePublicKeyOf(hex(a11.skRm)))).toBe(a11.pkRm);
  });

  it.each([
    ['libsodium', libsodium],
    ['node:crypto', openssl],
  ])('node:crypto HPKE, X25519 through %s: sealing with the vector ephemeral key gives its exact bytes; opening gives its plaintext', (_, x) => {
    expect(toHex(hpkeSeal(hex(a11.pkRm), info, hex(e0.aad), hex(e0.plaintext), hex(a11.skEm), x))).toBe(expected);
    const opened = hpkeOpen({ secretKey: hex(a11.skRm), publicKey: hex(a11.pkRm) }, info, hex(e0.aad), hex(expected), x);
    expect(opened.ok && toHex(opened.value)).toBe(e0.plaintext);
    expect(hpkeOpen({ secretKey: hex(a11.skRm), publicKey: hex(a11.pkRm) }, info, hex(a11.encryptions[1].aad), hex(expected), x)).toEqual({ ok: false, code: 'auth_failed' });
    // the default (node:crypto) as well
    expect(toHex(hpkeSeal(hex(a11.pkRm), info, hex(e0.aad), hex(e0.plaintext), hex(a11.skEm)))).toBe(expected);
  });

  it("the libsodium backend brings its own HMAC-SHA-256 for the key schedule (the vector above ran through it)", () => {
    expect(libsodium.hmacSha256).toBeTypeOf('function');
    expect(openssl.hmacSha256).toBeUndefined();
  });

  it('node:crypto keeps the info-only hashes per info buffer: the second and later seals and opens with the same buffer give the exact bytes too', () => {
    const same = hex(a11.info); // a buffer of its own: its first use computes the hashes, the later ones reuse them
    for (let i = 0; i < 3; i++) {
      expect(toHex(hpkeSeal(hex(a11.pkRm), same, hex(e0.aad), hex(e0.plaintext), hex(a11.skEm)))).toBe(expected);
      const opened = hpkeOpen({ secretKey: hex(a11.skRm), publicKey: hex(a11.pkRm) }, same, hex(e0.aad), hex(expected));
      expect(opened.ok && toHex(opened.value)).toBe(e0.plaintext);
    }
    // The same buffer with other contents: its hashes are computed afresh, never taken for the old ones.
    same.fill(0x61);
    expect(hpkeOpen({ secretKey: hex(a11.skRm), publicKey: hex(a11.pkRm) }, same, hex(e0.aad), hex(expected))).toEqual({ ok: false, code: 'auth_failed' });
    const sealed = hpkeSeal(hex(a11.pkRm), same, hex(e0.aad), hex(e0.plaintext));
    const fresh = hpkeOpen({ secretKey: hex(a11.skRm), publicKey: hex(a11.pkRm) }, new Uint8Array(same), hex(e0.aad), sealed);
    expect(fresh.ok && toHex(fresh.value)).toBe(e0.plaintext);
  });

  it('WebCrypto path with a raw X25519 (the Library fallback): the same exact bytes', async () => {
    const fixed = { publicKey: hex(a11.pkEm), secretKey: hex(a11.skEm) };
    const sealed = await webSeal(hex(a11.pkRm), info, hex(e0.aad), hex(e0.plaintext), { x25519: { dh: (s, p) => nacl.scalarMult(s, p), keyPair: () => fixed } });
    expect(toHex(sealed)).toBe(expected);
  });

  it('@hpke/core opens the vector ciphertext to the same plaintext', async () => {
    expect(toHex(await refOpen(hex(a11.skRm), info, hex(e0.aad), hex(expected)))).toBe(e0.plaintext);
  });
});

describe('HMAC-SHA-256 from a one-shot SHA-256 (hmacFromSha256: the libsodium backend\'s key schedule)', () => {
  const bySha256 = [
    ['libsodium', libsodium.hmacSha256!],
    ['node:crypto sha256', hmacFromSha256((out, input) => out.set(createHash('sha256').update(input).digest()))],
  ] as const;
  it.each(bySha256)('%s: the same bytes as node:crypto createHmac for keys of 0-64 bytes and messages of any length, one after another (reused buffers)', (_, hmac) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 600 }), (key, message) => {
        const mac = hmac(key, message);
        expect(toHex(mac)).toBe(createHmac('sha256', key).update(message).digest('hex'));
        // an independent copy: a later call does not change what an earlier one returned
        const again = hmac(key, message);
        expect(again).not.toBe(mac);
        expect(toHex(again)).toBe(toHex(mac));
      }),
      { numRuns: 500 },
    );
  });
  it.each(bySha256)('%s: a message in parts is the HMAC of their concatenation', (_, hmac) => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.array(fc.uint8Array({ maxLength: 100 }), { maxLength: 5 }), (key, parts) => {
        expect(toHex(hmac(key, ...parts))).toBe(createHmac('sha256', key).update(concat(...parts)).digest('hex'));
      }),
      { numRuns: 200 },
    );
  });
  it('leaves neither the key nor the message in its buffers, and refuses a key over 64 bytes (the schedule never uses one)', () => {
    const seen: Uint8Array[] = [];
    const hmac = hmacFromSha256((out, input) => {
      seen.push(input);
      out.set(createHash('sha256').update(input).digest());
    });
    hmac(new Uint8Array(32).fill(0xaa), new Uint8Array(100).fill(0xbb));
    expect(seen).toHaveLength(2);
    for (const b of seen) expect(b.every((x) => x === 0)).toBe(true);
    expect(() => hmac(new Uint8Array(65), new Uint8Array(1))).toThrow(RangeError);
  });
});

describe('the key schedule of node.ts (hpkeKeySchedule: constant messages kept, parts not concatenated)', () => {
  /** hpke.ts's keySchedule, every HMAC through node:crypto: the reference. */
  const reference = (dh: Uint8Array, kemContext: Uint8Array, info: Uint8Array) => {
    const steps = keySchedule(dh, kemContext, info);
    let step = steps.next();
    while (!step.done) step = steps.next(createHmac('sha256', step.value[0]).update(step.value[1]).digest());
    return step.value.map(toHex);
  };
  it.each([
    ['node:crypto', undefined],
    ['libsodium', libsodium.hmacSha256],
  ])('through %s: the same key and base nonce as the reference for any DH output, keys and info, also for an info buffer changed in place', (_, hmac) => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 64 }), (dh, enc, pkR, info) => {
        expect(hpkeKeySchedule(dh, enc, pkR, info, hmac).map(toHex)).toEqual(reference(dh, concat(enc, pkR), info));
        if (info.length) {
          info[0]! ^= 1; // the same buffer, other bytes: its messages are computed afresh
          expect(hpkeKeySchedule(dh, enc, pkR, info, hmac).map(toHex)).toEqual(reference(dh, concat(enc, pkR), info));
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('interoperability with @hpke/core (independent implementation)', () => {
  const r = keyPair();
  const info = utf8('cipherstat test');
  const aad = utf8('aad');
  const pt = utf8('{"hello":"world"}'.repeat(50));

  it('@hpke/core opens what node:crypto seals, and node:crypto opens what @hpke/core seals', async () => {
    expect(await refOpen(r.secretKey, info, aad, hpkeSeal(r.publicKey, info, aad, pt))).toEqual(pt);
    const opened = hpkeOpen(r, info, aad, await refSeal(r.publicKey, info, aad, pt));
    expect(opened.ok && opened.value).toEqual(pt);
  });

  it('@hpke/core opens what the WebCrypto path seals (native X25519 and the raw-X25519 fallback)', async () => {
    expect(await refOpen(r.secretKey, info, aad, await webSeal(r.publicKey, info, aad, pt))).toEqual(pt);
    const fallback = { dh: (s: Uint8Array, p: Uint8Array) => nacl.scalarMult(s, p), keyPair: () => nacl.box.keyPair() };
    // (the Library's fallback refuses an all-zero X25519 output itself: packages/library/test/batch.test.ts)
    expect(await refOpen(r.secretKey, info, aad, await webSeal(r.publicKey, info, aad, pt, { x25519: fallback }))).toEqual(pt);
  });

  it('a low-order enc is low_order_key before any AEAD work; a low-order recipient key is refused when sealing', async () => {
    const sealed = hpkeSeal(r.publicKey, info, aad, pt);
    for (const bad of [new Uint8Array(32), hex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800')]) {
      for (const x of [libsodium, openssl]) {
        expect(hpkeOpen(r, info, aad, concat(bad, sealed.subarray(32)), x)).toEqual({ ok: false, code: 'low_order_key' });
        expect(() => hpkeSeal(bad, info, aad, pt, undefined, x)).toThrow(RangeError);
      }
      await expect(webSeal(bad, info, aad, pt)).rejects.toThrow();
    }
  });

  it('truncated or flipped: auth_failed', () => {
    const sealed = hpkeSeal(r.publicKey, info, aad, pt);
    expect(hpkeOpen(r, info, aad, sealed.subarray(0, 47)).ok).toBe(false);
    const flipped = sealed.slice();
    flipped[flipped.length - 1]! ^= 1;
    expect(hpkeOpen(r, info, aad, flipped)).toEqual({ ok: false, code: 'auth_failed' });
    expect(hpkeOpen(r, utf8('other info'), aad, sealed)).toEqual({ ok: false, code: 'auth_failed' });
  });
});

describe('Wycheproof aes_gcm_test.json: the AES-128-GCM cases (96-bit nonce, 128-bit tag) through node:crypto', () => {
  interface Case { tcId: number; key: string; iv: string; aad: string; msg: string; ct: string; tag: string; result: string }
  const file = JSON.parse(readFileSync(new URL('./data/wycheproof/aes_gcm_test.json', import.meta.url), 'utf8'));
  const groups = file.testGroups.filter((g: { keySize: number; ivSize: number; tagSize: number }) => g.keySize === 128 && g.ivSize === 96 && g.tagSize === 128);
  const cases: Case[] = groups.flatMap((g: { tests: Case[] }) => g.tests);

  it('every valid case encrypts to its ciphertext and tag; every invalid one fails to open', () => {
    expect(cases.length).toBeGreaterThan(20);
    let valid = 0;
    for (const c of cases) {
      const d = createDecipheriv('aes-128-gcm', hex(c.key), hex(c.iv)).setAAD(hex(c.aad)).setAuthTag(hex(c.tag));
      let opened: string | null;
      try {
        opened = toHex(concat(d.update(hex(c.ct)), d.final()));
      } catch {
        opened = null;
      }
      if (c.result === 'invalid') {
        expect(opened, `tcId ${c.tcId}`).toBeNull();
        continue;
      }
      const e = createCipheriv('aes-128-gcm', hex(c.key), hex(c.iv)).setAAD(hex(c.aad));
      expect(toHex(concat(e.update(hex(c.msg)), e.final(), e.getAuthTag())), `tcId ${c.tcId}`).toBe(c.ct + c.tag);
      expect(opened, `tcId ${c.tcId}`).toBe(c.msg);
      valid++;
    }
    expect(valid).toBeGreaterThan(10);
  });
});
