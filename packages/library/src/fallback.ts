/**
 * The fallback: tweetnacl, loaded only where the platform needs it (never by the core
 * `<script>` build itself, which fetches `cipherstat-fallback.min.js` from its own origin; npm
 * bundles get it as the separate entry `@cipherstat/library/fallback`, imported dynamically).
 *
 * - `x25519`: the X25519 step of envelope v2 where crypto.subtle exists but lacks X25519
 *   (HKDF and AES-GCM still come from WebCrypto);
 * - `inner` / `outer`: envelope v1 where there is no crypto.subtle at all (a page on plain
 *   HTTP), and for v1 batches a previous page left in storage.
 */
import nacl from 'tweetnacl';
import { concat, encodeHeader, isZero, seal, sha512, utf8, wrapOuter } from '@cipherstat/protocol';

export interface Fallback {
  x25519: { dh(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array; keyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } };
  /** v1 inner layer: a NaCl sealed box to the account key. */
  inner(plaintext: Uint8Array, accountKey: Uint8Array): Uint8Array;
  /** v1 envelope around a stored inner layer, deterministic per (batch seed, collector key, header). */
  outer(inner: Uint8Array, seed: Uint8Array, keyId: string, publicKey: Uint8Array, header: Parameters<typeof encodeHeader>[0]): Uint8Array;
}

export const fallback: Fallback = {
  x25519: {
    dh(s, p) {
      const shared = nacl.scalarMult(s, p);
      if (isZero(shared)) throw new RangeError('low-order key'); // as WebCrypto's deriveBits does
      return shared;
    },
    keyPair() {
      const secretKey = nacl.randomBytes(32);
      return { secretKey, publicKey: nacl.scalarMult.base(secretKey) };
    },
  },
  inner: (plaintext, accountKey) => seal(plaintext, accountKey),
  outer(inner, seed, keyId, publicKey, h) {
    const header = encodeHeader(h);
    // One ephemeral secret (so one nonce) per (batch, collector key, exact header): a retry by
    // another SDK version (a deploy between retries) seals its other header under another key.
    const ephemeral = sha512(concat(seed, utf8(keyId), header)).subarray(0, 32);
    return wrapOuter(header, inner, { collectorKeyId: keyId, collectorPublicKey: publicKey }, () => ephemeral);
  },
};
