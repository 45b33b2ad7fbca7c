/**
 * The X25519 backends of the Node entry (src/node.ts): libsodium through sodium-native (what the
 * collector uses) and node:crypto (OpenSSL, the default). Both against RFC 7748's vectors, each
 * other and tweetnacl; Wycheproof's 518 cases are in wycheproof.test.ts, RFC 9180's HPKE vector
 * with both in hpke.test.ts, the envelope vectors with both in vectors.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { fromHex, naclX25519, publicKeyOf, randomBytes, sharedKey, toHex, type X25519 } from '@cipherstat/protocol';
import { nodePublicKeyOf, nodeX25519, openssl, type X25519Backend } from '@cipherstat/protocol/node';
import { libsodium } from './support/libsodium.js';

const hex = (s: string) => fromHex(s)!;

describe('X25519 backends of the Node entry', () => {
  it('names: libsodium built from sodium-native; node:crypto the default (nodeX25519)', () => {
    expect(libsodium.name).toBe('libsodium');
    expect(openssl.name).toBe('openssl');
    expect(nodeX25519).toBe(openssl.dh);
  });

  const backends: [string, X25519Backend][] = [
    ['libsodium', libsodium],
    ['node:crypto', openssl],
    ['tweetnacl', { name: 'openssl', dh: naclX25519, publicKeyOf }],
  ];

  describe.each(backends)('%s', (_, b) => {
    it('RFC 7748 §5.2: the two scalar multiplication vectors', () => {
      expect(toHex(b.dh(hex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'), hex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c')))).toBe(
        'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
      );
      expect(toHex(b.dh(hex('4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d'), hex('e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493')))).toBe(
        '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
      );
    });

    it('RFC 7748 §5.2: the iterated vector after 1 and 1,000 iterations', () => {
      let k: Uint8Array = hex('09'.padEnd(64, '0'));
      let u: Uint8Array = k.slice();
      const after = new Map<number, string>();
      for (let i = 1; i <= 1000; i++) {
        const next = b.dh(k, u);
        u = k;
        k = next;
        if (i === 1 || i === 1000) after.set(i, toHex(k));
      }
      expect(after.get(1)).toBe('422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
      expect(after.get(1000)).toBe('684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51');
    });

    it('RFC 7748 §6.1: both public keys and the shared secret of the Diffie-Hellman example', () => {
      const a = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
      const bob = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
      expect(toHex(b.publicKeyOf(a))).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
      expect(toHex(b.publicKeyOf(bob))).toBe('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
      const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
      expect(toHex(b.dh(a, b.publicKeyOf(bob)))).toBe(shared);
      expect(toHex(b.dh(bob, b.publicKeyOf(a)))).toBe(shared);
    });
  });

  it('libsodium and node:crypto agree with tweetnacl on 300 random pairs (public keys and shared secrets), reused secret buffers included', () => {
    const secrets = Array.from({ length: 30 }, () => randomBytes(32));
    for (let i = 0; i < 300; i++) {
      const sk = secrets[i % secrets.length]!; // the node:crypto path caches its import per buffer: reused buffers too
      const pk = publicKeyOf(randomBytes(32));
      const expected = toHex(naclX25519(sk, pk));
      expect(toHex(libsodium.dh(sk, pk))).toBe(expected);
      expect(toHex(openssl.dh(sk, pk))).toBe(expected);
      expect(toHex(libsodium.publicKeyOf(sk))).toBe(toHex(publicKeyOf(sk)));
      expect(toHex(nodePublicKeyOf(sk))).toBe(toHex(publicKeyOf(sk)));
    }
  });

  it('both refuse (throw) exactly where the result would be all zero: every low-order point, canonical or not, top bit set or not', () => {
    const lowOrder = [
      '0000000000000000000000000000000000000000000000000000000000000000', // 0
      '0100000000000000000000000000000000000000000000000000000000000000', // 1
      'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', // order 8
      '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157', // order 8
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p - 1
      'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p (= 0)
      'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f', // p + 1 (= 1)
    ];
    const sk = randomBytes(32);
    for (const l of lowOrder) {
      for (const top of [0, 0x80]) {
        const pk = hex(l);
        pk[31]! |= top;
        expect(toHex(naclX25519(sk, pk)), l).toBe('00'.repeat(32)); // the reference: all zero
        for (const impl of [libsodium.dh, openssl.dh] as X25519[]) {
          expect(() => impl(sk, pk), l).toThrow();
          expect(sharedKey(sk, pk, impl)).toBeNull();
        }
      }
    }
  });
});
