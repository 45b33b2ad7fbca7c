/**
 * The one module that touches raw cryptography. It wraps tweetnacl and follows its rules:
 * Uint8Array in and out, lengths checked first, authentication failure returns a typed
 * result (never throws), randomness injectable.
 *
 * Sealed boxes: an ephemeral X25519 key pair per message, a NaCl box (XSalsa20-Poly1305)
 * to the recipient's public key, nonce = SHA-512(ephemeralPublicKey || recipientPublicKey)[0..24].
 * The ephemeral key is never reused, so the derived nonce is unique per key.
 *
 * tweetnacl does not reject low-order public keys; `sharedKey` does (an all-zero X25519
 * output is refused), proven against Wycheproof's x25519_test.json.
 */
import nacl from 'tweetnacl';

export type Random = (length: number) => Uint8Array;
/** Raw X25519 (RFC 7748): secret scalar x public u-coordinate → 32-byte shared secret. */
export type X25519 = (secretKey: Uint8Array, publicKey: Uint8Array) => Uint8Array;

export interface KeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const MAC_BYTES = 16;
/** Bytes a sealed box adds to its message: ephemeral public key + Poly1305 tag. */
export const SEAL_OVERHEAD = KEY_BYTES + MAC_BYTES;
/** Bytes secretSeal adds: nonce + tag. */
export const SECRET_OVERHEAD = NONCE_BYTES + MAC_BYTES;

export const randomBytes: Random = (n) => nacl.randomBytes(n);
export const naclX25519: X25519 = (sk, pk) => nacl.scalarMult(sk, pk);

const SIGMA = new Uint8Array([101, 120, 112, 97, 110, 100, 32, 51, 50, 45, 98, 121, 116, 101, 32, 107]); // "expand 32-byte k"
const ZERO16 = new Uint8Array(16);
const hsalsa20 = (nacl as unknown as { lowlevel: { crypto_core_hsalsa20(out: Uint8Array, inp: Uint8Array, k: Uint8Array, c: Uint8Array): number } }).lowlevel.crypto_core_hsalsa20;

export type OpenResult = { ok: true; value: Uint8Array } | { ok: false; code: 'low_order_key' | 'auth_failed' };

export function keyPair(random: Random = randomBytes): KeyPair {
  const secretKey = random(KEY_BYTES);
  return { secretKey, publicKey: nacl.scalarMult.base(secretKey) };
}

export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  return nacl.scalarMult.base(secretKey);
}

/**
 * X25519 then HSalsa20: the NaCl box key for (secretKey, publicKey), or null when the
 * shared secret is all zero (low-order or non-canonical low-order public key).
 */
export function sharedKey(secretKey: Uint8Array, publicKey: Uint8Array, x25519: X25519 = naclX25519): Uint8Array | null {
  if (secretKey.length !== KEY_BYTES || publicKey.length !== KEY_BYTES) return null;
  let shared: Uint8Array;
  try {
    shared = x25519(secretKey, publicKey);
  } catch {
    return null; // native backends refuse an all-zero result by throwing
  }
  if (shared.length !== KEY_BYTES || isZero(shared)) return null;
  const key = new Uint8Array(KEY_BYTES);
  hsalsa20(key, ZERO16, shared, SIGMA);
  return key;
}

function sealNonce(ephemeralPublicKey: Uint8Array, recipientPublicKey: Uint8Array): Uint8Array {
  return nacl.hash(concat(ephemeralPublicKey, recipientPublicKey)).subarray(0, NONCE_BYTES);
}

/** Seals `message` to `recipientPublicKey`: ephemeralPublicKey(32) || box. */
export function seal(message: Uint8Array, recipientPublicKey: Uint8Array, random: Random = randomBytes): Uint8Array {
  return sealWith(message, recipientPublicKey, random(KEY_BYTES));
}

/** `seal` with a caller-chosen ephemeral secret key: for test vectors only. */
export function sealWith(message: Uint8Array, recipientPublicKey: Uint8Array, ephemeralSecretKey: Uint8Array): Uint8Array {
  const ephemeralPublicKey = nacl.scalarMult.base(ephemeralSecretKey);
  const key = sharedKey(ephemeralSecretKey, recipientPublicKey);
  if (!key) throw new RangeError('low-order recipient key');
  const box = nacl.secretbox(message, sealNonce(ephemeralPublicKey, recipientPublicKey), key);
  return concat(ephemeralPublicKey, box);
}

/** Opens a sealed box with the recipient's key pair. */
export function openSeal(sealed: Uint8Array, recipient: KeyPair, x25519: X25519 = naclX25519): OpenResult {
  if (sealed.length < SEAL_OVERHEAD) return { ok: false, code: 'auth_failed' };
  const ephemeralPublicKey = sealed.subarray(0, KEY_BYTES);
  const key = sharedKey(recipient.secretKey, ephemeralPublicKey, x25519);
  if (!key) return { ok: false, code: 'low_order_key' };
  const opened = nacl.secretbox.open(
    sealed.subarray(KEY_BYTES),
    sealNonce(ephemeralPublicKey, recipient.publicKey),
    key,
  );
  return opened ? { ok: true, value: opened } : { ok: false, code: 'auth_failed' };
}

/** Symmetric authenticated encryption at rest: nonce(24) || secretbox. */
export function secretSeal(key: Uint8Array, message: Uint8Array, random: Random = randomBytes): Uint8Array {
  if (key.length !== KEY_BYTES) throw new RangeError('secretSeal: key must be 32 bytes');
  const nonce = random(NONCE_BYTES);
  return concat(nonce, nacl.secretbox(message, nonce, key));
}

/** Opens secretSeal output; null when the key is wrong or the bytes were altered. */
export function secretOpen(key: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  if (key.length !== KEY_BYTES || sealed.length < SECRET_OVERHEAD) return null;
  return nacl.secretbox.open(sealed.subarray(NONCE_BYTES), sealed.subarray(0, NONCE_BYTES), key);
}

export function sha512(message: Uint8Array): Uint8Array {
  return nacl.hash(message);
}

/** HMAC-SHA-512 (RFC 2104) over tweetnacl's SHA-512. */
export function hmacSha512(key: Uint8Array, message: Uint8Array): Uint8Array {
  const block = 128;
  let k = key.length > block ? nacl.hash(key) : key;
  const padded = new Uint8Array(block);
  padded.set(k);
  const inner = new Uint8Array(block);
  const outer = new Uint8Array(block);
  for (let i = 0; i < block; i++) {
    inner[i] = padded[i]! ^ 0x36;
    outer[i] = padded[i]! ^ 0x5c;
  }
  k = nacl.hash(concat(inner, message));
  return nacl.hash(concat(outer, k));
}

/** Constant-time equality (lengths are not secret). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

export function isZero(bytes: Uint8Array): boolean {
  let d = 0;
  for (let i = 0; i < bytes.length; i++) d |= bytes[i]!;
  return d === 0;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
