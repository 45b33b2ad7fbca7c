/**
 * Node-only fast paths. X25519 through node:crypto (OpenSSL, ~18x faster than tweetnacl's
 * scalar multiplication), or through libsodium (`libsodiumX25519`) for a process that loads
 * sodium-native: the collector, where node:crypto's key imports cost more than the multiplication
 * (~0.5 ms the first time a secret key is seen, a JWK import of the peer's key every time).
 * The same bytes as tweetnacl, proven by RFC 7748's and Wycheproof's vectors (test/x25519.test.ts,
 * test/wycheproof.test.ts). HPKE seal and open take the backend (default node:crypto).
 * Kept out of the main entry so browser bundles never import node:crypto.
 */
import { randomBytes, createCipheriv, createDecipheriv, createHash, createHmac, createPrivateKey, createSecretKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { concat, isZero, KEY_BYTES, MAC_BYTES, SEAL_OVERHEAD, type KeyPair, type OpenResult, type X25519 } from './crypto.js';
import { HPKE_SUITE, KEM_SUITE, labeledExpand, labeledExtract, ZERO_SALT } from './hpke.js';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import type { Deflate, Inflate } from './envelope.js';

/** An X25519 implementation: the shared secret (throws when it would be all zero: a low-order peer key) and the public key of a secret key. */
export interface X25519Backend {
  name: 'libsodium' | 'openssl';
  dh: X25519;
  publicKeyOf(secretKey: Uint8Array): Uint8Array;
  /** HMAC-SHA-256 for the HPKE key schedule (its keys are 32 bytes); absent: node:crypto's, an Hmac object per call. */
  hmacSha256?: HmacSha256;
}

/** HMAC-SHA-256 under `key` (at most 64 bytes: the key schedule's are 32) of the concatenation of `message` (its parts, in order). */
export type HmacSha256 = (key: Uint8Array, ...message: Uint8Array[]) => Uint8Array;

/** HMAC-SHA-256 through node:crypto: a KeyObject and an Hmac object per call. */
const nodeHmacSha256: HmacSha256 = (key, ...message) => {
  const h = createHmac('sha256', key);
  for (const part of message) h.update(part);
  return h.digest();
};

/**
 * HMAC-SHA-256 (RFC 2104) from a one-shot SHA-256 (`sha256(out, input)`): two hash calls on
 * reused scratch buffers, zeroed after each call (they held the key and the message: in the key
 * schedule, the DH output and the secrets derived from it). No object per call.
 */
export function hmacFromSha256(sha256: (out: Uint8Array, input: Uint8Array) => void): HmacSha256 {
  let scratch = new Uint8Array(64 + 128); // (key ^ ipad) || message, grown for longer messages
  const outer = new Uint8Array(64 + 32); // (key ^ opad) || inner hash
  return (key, ...message) => {
    if (key.length > 64) throw new RangeError('HMAC key over 64 bytes');
    let n = 64;
    for (const part of message) n += part.length;
    if (scratch.length < n) scratch = new Uint8Array(n);
    for (let i = 0; i < 64; i++) {
      const k = i < key.length ? key[i]! : 0;
      scratch[i] = k ^ 0x36;
      outer[i] = k ^ 0x5c;
    }
    n = 64;
    for (const part of message) {
      scratch.set(part, n);
      n += part.length;
    }
    const input = scratch.subarray(0, n);
    try {
      sha256(outer.subarray(64), input);
      const mac = new Uint8Array(32);
      sha256(mac, outer);
      return mac;
    } finally {
      input.fill(0);
      outer.fill(0);
    }
  };
}

const PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
/**
 * Imported private keys (node:crypto path), keyed by the very secret key buffer they came from
 * (never by its bytes or their base64: no copy of a secret key ever lives in a map key). An entry
 * goes with its buffer, or at once with `forgetX25519Key` (shred, wipe, a worker dropping an account).
 */
const privateKeys = new WeakMap<Uint8Array, KeyObject>();

function privateKey(secretKey: Uint8Array): KeyObject {
  let key = privateKeys.get(secretKey);
  if (!key) {
    const der = Buffer.concat([PKCS8, secretKey]);
    key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    der.fill(0);
    privateKeys.set(secretKey, key);
  }
  return key;
}

/** Drops the imported private key of this secret key buffer (call before zeroing the buffer). */
export function forgetX25519Key(secretKey: Uint8Array): void {
  privateKeys.delete(secretKey);
}

/** Destroys key buffers for good: their imported X25519 keys dropped, their bytes zeroed. */
export function destroyKeys(...keys: Uint8Array[]): void {
  for (const k of keys) {
    privateKeys.delete(k);
    k.fill(0);
  }
}

/** X25519 through node:crypto: the private key imported once per secret key buffer, the public key per call (JWK). OpenSSL throws on an all-zero shared secret. */
export const openssl: X25519Backend = {
  name: 'openssl',
  dh: (secretKey, publicKey) =>
    diffieHellman({
      privateKey: privateKey(secretKey),
      // JWK import: OpenSSL 3 decodes a DER SubjectPublicKeyInfo ~10x slower than a JWK.
      publicKey: createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64url') }, format: 'jwk' }),
    }),
  publicKeyOf: (secretKey) => Buffer.from(createPublicKey(privateKey(secretKey)).export({ format: 'jwk' }).x!, 'base64url'),
};

/** The functions of sodium-native (libsodium) an X25519 backend needs; both throw on a failure, `crypto_scalarmult` on an all-zero result. With `crypto_hash_sha256`, the key schedule's HMACs are libsodium's too. */
export interface SodiumX25519 {
  crypto_scalarmult(q: Uint8Array, n: Uint8Array, p: Uint8Array): void;
  crypto_scalarmult_base(q: Uint8Array, n: Uint8Array): void;
  crypto_hash_sha256?(out: Uint8Array, input: Uint8Array): void;
}

/**
 * X25519 through libsodium, for a process that loads sodium-native itself (the collector: its
 * dependency; this package does not depend on it, so the Library never loads a native module).
 * One native call on the raw key bytes: no key import.
 */
export function libsodiumX25519(sodium: SodiumX25519): X25519Backend {
  return {
    name: 'libsodium',
    // libsodium refuses (-1, which sodium-native throws) exactly where the result would be all zero, as OpenSSL does.
    dh: (secretKey, publicKey) => {
      const q = new Uint8Array(KEY_BYTES);
      sodium.crypto_scalarmult(q, secretKey, publicKey);
      return q;
    },
    publicKeyOf: (secretKey) => {
      const q = new Uint8Array(KEY_BYTES);
      sodium.crypto_scalarmult_base(q, secretKey);
      return q;
    },
    ...(sodium.crypto_hash_sha256 ? { hmacSha256: hmacFromSha256((out, input) => sodium.crypto_hash_sha256!(out, input)) } : {}),
  };
}

/** Raw X25519 through node:crypto; throws on an all-zero shared secret (`sharedKey` maps that to null). */
export const nodeX25519: X25519 = openssl.dh;

/** SHA-512 through node:crypto: the same bytes as tweetnacl's `sha512`, ~3x faster for short inputs. */
export const nodeSha512 = (message: Uint8Array | string): Uint8Array => createHash('sha512').update(message).digest();

/**
 * HMAC-SHA-512 through node:crypto with the key imported once: the same bytes as `hmacSha512`
 * (tweetnacl), ~6x faster for short messages.
 */
export function nodeHmacSha512(key: Uint8Array): (message: Uint8Array | string) => Uint8Array {
  const k = createSecretKey(key); // no JS copy of the key: OpenSSL keeps its own, freed with the KeyObject
  return (message) => createHmac('sha512', k).update(message).digest();
}

/** The public key of an X25519 secret key, through node:crypto. */
export const nodePublicKeyOf = (secretKey: Uint8Array): Uint8Array => openssl.publicKeyOf(secretKey);

const EMPTY = new Uint8Array(0);
const ONE = new Uint8Array([1]);
/** The labeled message of `eae_prk` before the DH output, of `shared_secret` before kem_context (its 0x01 after), and the whole of `secret` (base mode: no psk). */
const EAE_PRK = labeledExtract(KEM_SUITE, 'eae_prk', EMPTY);
const SHARED_SECRET = labeledExpand(KEM_SUITE, 'shared_secret', EMPTY, 32).subarray(0, -1);
const SECRET = labeledExtract(HPKE_SUITE, 'secret', EMPTY);
/** psk_id_hash: in base mode the same for every context. */
const PSK_ID_HASH = nodeHmacSha256(ZERO_SALT, labeledExtract(HPKE_SUITE, 'psk_id_hash', EMPTY));

/**
 * Per `info` buffer (the envelope's two constants): the whole messages of the key schedule's
 * `key` and `base_nonce` expansions, which in base mode depend on nothing but `info` (through
 * info_hash). Keyed by the buffer object (so a caller's own buffers are never kept alive) and
 * checked against a copy of its bytes (a caller may have changed its buffer since).
 */
const infoMessages = new WeakMap<Uint8Array, { bytes: Uint8Array; key: Uint8Array; nonce: Uint8Array }>();

function messagesOf(info: Uint8Array): { key: Uint8Array; nonce: Uint8Array } {
  const known = infoMessages.get(info);
  if (known && known.bytes.length === info.length) {
    let same = true;
    for (let i = 0; same && i < info.length; i++) same = known.bytes[i] === info[i];
    if (same) return known;
  }
  const context = concat(new Uint8Array([0]), PSK_ID_HASH, nodeHmacSha256(ZERO_SALT, labeledExtract(HPKE_SUITE, 'info_hash', info)));
  const entry = { bytes: info.slice(), key: labeledExpand(HPKE_SUITE, 'key', context, 16), nonce: labeledExpand(HPKE_SUITE, 'base_nonce', context, 12) };
  infoMessages.set(info, entry);
  return entry;
}

/**
 * The base-mode key schedule (RFC 9180 §4.1 ExtractAndExpand, §5.1 KeySchedule) for the DH
 * output, kem_context = enc || pkR and `info`: [key(16), base_nonce(12)]. The same HMACs as
 * hpke.ts's `keySchedule` (proven equal in test/hpke.test.ts), of which five remain per call:
 * the labeled messages are constants or constants around the inputs (passed as parts, never
 * concatenated), and psk_id_hash, info_hash and the two expansions' messages are per `info`.
 * The intermediate secrets are zeroed.
 */
export function hpkeKeySchedule(dh: Uint8Array, enc: Uint8Array, recipientPublicKey: Uint8Array, info: Uint8Array, hmac: HmacSha256 = nodeHmacSha256): [Uint8Array, Uint8Array] {
  const m = messagesOf(info);
  const eaePrk = hmac(ZERO_SALT, EAE_PRK, dh);
  const shared = hmac(eaePrk, SHARED_SECRET, enc, recipientPublicKey, ONE);
  const secret = hmac(shared, SECRET);
  const key = hmac(secret, m.key).subarray(0, 16);
  const nonce = hmac(secret, m.nonce).subarray(0, 12);
  eaePrk.fill(0);
  shared.fill(0);
  secret.fill(0);
  return [key, nonce];
}

/**
 * HPKE base mode single-shot Seal (RFC 9180; DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 * AES-128-GCM) through node:crypto, X25519 through `x` (default node:crypto; the collector passes
 * libsodium): `enc(32) || ct || tag(16)`. `ephemeralSecretKey` is for test vectors only; otherwise a
 * fresh one is drawn. Throws on a low-order recipient key.
 */
export function hpkeSeal(recipientPublicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, ephemeralSecretKey?: Uint8Array, x: X25519Backend = openssl): Uint8Array {
  const skE = ephemeralSecretKey ?? new Uint8Array(randomBytes(KEY_BYTES));
  const enc = x.publicKeyOf(skE);
  let dh: Uint8Array;
  try {
    dh = x.dh(skE, recipientPublicKey);
    if (isZero(dh)) throw 0;
  } catch {
    throw new RangeError('low-order recipient key');
  } finally {
    if (!ephemeralSecretKey) destroyKeys(skE);
  }
  const [key, nonce] = hpkeKeySchedule(dh, enc, recipientPublicKey, info, x.hmacSha256);
  const c = createCipheriv('aes-128-gcm', key, nonce).setAAD(aad);
  return concat(enc, c.update(plaintext), c.final(), c.getAuthTag());
}

/**
 * HPKE base mode single-shot Open through node:crypto, X25519 through `x` (default node:crypto).
 * An all-zero DH output (a low-order `enc`) is `low_order_key` before anything else; a failed
 * tag is `auth_failed`.
 */
export function hpkeOpen(recipient: KeyPair, info: Uint8Array, aad: Uint8Array, sealed: Uint8Array, x: X25519Backend = openssl): OpenResult {
  if (sealed.length < SEAL_OVERHEAD) return { ok: false, code: 'auth_failed' };
  const enc = sealed.subarray(0, KEY_BYTES);
  let dh: Uint8Array;
  try {
    dh = x.dh(recipient.secretKey, enc);
    if (isZero(dh)) throw 0;
  } catch {
    return { ok: false, code: 'low_order_key' }; // libsodium and OpenSSL refuse an all-zero shared secret
  }
  const [key, nonce] = hpkeKeySchedule(dh, enc, recipient.publicKey, info, x.hmacSha256);
  try {
    const d = createDecipheriv('aes-128-gcm', key, nonce).setAAD(aad).setAuthTag(sealed.subarray(sealed.length - MAC_BYTES));
    return { ok: true, value: concat(d.update(sealed.subarray(KEY_BYTES, sealed.length - MAC_BYTES)), d.final()) };
  } catch {
    return { ok: false, code: 'auth_failed' };
  }
}

/** Deflate-raw (RFC 1951) of an inner plaintext, envelope v2 FLAG_DEFLATE (docs/protocol.md §Flags). */
export const deflateRaw: Deflate = (plain) => deflateRawSync(plain);

/**
 * Bounded deflate-raw decompression: zlib stops producing output once it would pass `maxBytes`
 * (`maxOutputLength`), so a zip bomb costs at most `maxBytes` of output and the time to make it.
 */
export const inflateRaw: Inflate = (deflated, maxBytes) => {
  try {
    const out = inflateRawSync(deflated, { maxOutputLength: maxBytes });
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch (e) {
    return (e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? 'too_large' : 'invalid';
  }
};
