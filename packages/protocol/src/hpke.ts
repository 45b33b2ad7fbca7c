/**
 * HPKE (RFC 9180) base mode, single shot, for the one suite envelope v2 uses:
 * DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM (0x0020 / 0x0001 / 0x0001).
 *
 * This module holds what every implementation shares (suite ids, the labeled inputs of the
 * key schedule) and the WebCrypto implementation (browsers, Deno, Node's globalThis.crypto),
 * which is asynchronous. The synchronous node:crypto implementation (the collector's hot
 * path) is in ./node.ts. Both are checked against RFC 9180 A.1.1 and @hpke/core.
 *
 * An HPKE seal is `enc(32) || ciphertext || tag(16)`: 48 bytes over the plaintext.
 */
import { concat } from './crypto.js';
import { utf8 } from './codec.js';

export const HPKE_KEM_ID = 0x0020;
export const HPKE_KDF_ID = 0x0001;
export const HPKE_AEAD_ID = 0x0001;

/** The suite ids of the labeled inputs: the KEM's, and the whole suite's (KEM, KDF, AEAD). */
export const KEM_SUITE = utf8('KEM\x00\x20');
export const HPKE_SUITE = utf8('HPKE\x00\x20\x00\x01\x00\x01');
const V1 = utf8('HPKE-v1');
const EMPTY = new Uint8Array(0);

/** `LabeledExtract(salt, label, ikm)` = HMAC(salt, "HPKE-v1" || suite || label || ikm); an empty salt is Nh zero bytes (the same HMAC key). */
export const labeledExtract = (suite: Uint8Array, label: string, ikm: Uint8Array): Uint8Array => concat(V1, suite, utf8(label), ikm);
/** The `info` of HKDF-Expand in `LabeledExpand(prk, label, info, L)`: I2OSP(L,2) || "HPKE-v1" || suite || label || info. */
const labeledInfo = (suite: Uint8Array, label: string, info: Uint8Array, length: number): Uint8Array => concat(new Uint8Array([0, length]), V1, suite, utf8(label), info);
/** `LabeledExpand(prk, label, info, L)` for L ≤ 32: T(1) = HMAC(prk, labeled info || 0x01). */
export const labeledExpand = (suite: Uint8Array, label: string, info: Uint8Array, length: number): Uint8Array =>
  concat(labeledInfo(suite, label, info, length), new Uint8Array([1]));

/** The HMAC key of an Extract with an empty salt. */
export const ZERO_SALT = new Uint8Array(32);

/** One HMAC-SHA256 the key schedule asks for: [key, message]. */
export type HmacStep = [key: Uint8Array, message: Uint8Array];

/**
 * The key schedule of a base-mode context (RFC 9180 §4.1 ExtractAndExpand, §5.1 KeySchedule),
 * step by step, as the reference node.ts's hpkeKeySchedule is tested against (test/hpke.test.ts):
 * it yields each HMAC it needs and returns
 * [key(16), base_nonce(12)] for the DH output and kem_context = enc || pkRm.
 */
export function* keySchedule(dh: Uint8Array, kemContext: Uint8Array, info: Uint8Array): Generator<HmacStep, [Uint8Array, Uint8Array], Uint8Array> {
  const eaePrk = yield [ZERO_SALT, labeledExtract(KEM_SUITE, 'eae_prk', dh)];
  const shared = yield [eaePrk, labeledExpand(KEM_SUITE, 'shared_secret', kemContext, 32)]; // L = Nh: T(1) whole
  const pskIdHash = yield [ZERO_SALT, labeledExtract(HPKE_SUITE, 'psk_id_hash', EMPTY)];
  const infoHash = yield [ZERO_SALT, labeledExtract(HPKE_SUITE, 'info_hash', info)];
  const context = concat(new Uint8Array([0]), pskIdHash, infoHash);
  const secret = yield [shared, labeledExtract(HPKE_SUITE, 'secret', EMPTY)];
  const key = (yield [secret, labeledExpand(HPKE_SUITE, 'key', context, 16)]).subarray(0, 16);
  return [key, (yield [secret, labeledExpand(HPKE_SUITE, 'base_nonce', context, 12)]).subarray(0, 12)];
}

/** Raw X25519 for WebCrypto-less X25519 (tweetnacl in the Library's fallback chunk). */
export type AsyncX25519 = (secretKey: Uint8Array, publicKey: Uint8Array) => Uint8Array | Promise<Uint8Array>;

export interface WebHpkeOptions {
  /** When crypto.subtle has no X25519: a raw X25519 that throws on an all-zero result (a low-order key), and a generator of ephemeral key pairs. */
  x25519?: { dh: AsyncX25519; keyPair(): { publicKey: Uint8Array; secretKey: Uint8Array } };
}

type Buf = Uint8Array<ArrayBuffer>;

/** HMAC-SHA256 through WebCrypto. */
const hmac = async (key: Uint8Array, message: Uint8Array) =>
  new Uint8Array(await crypto.subtle.sign('HMAC', await crypto.subtle.importKey('raw', key as Buf, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']), message as Buf));
/** An HKDF input key (WebCrypto). */
const hkdfKey = (ikm: Uint8Array) => crypto.subtle.importKey('raw', ikm as Buf, 'HKDF', false, ['deriveBits']);
/** HKDF (extract with `salt`, expand with `info`) of `length` bytes: one native call. */
const hkdf = async (key: CryptoKey, salt: Uint8Array, info: Uint8Array, length: number) =>
  new Uint8Array(await crypto.subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: salt as Buf, info: info as Buf }, key, length * 8));

/** Per `info` (keyed by its bytes as text, "1,2,…": never a name of Object.prototype): [psk_id_hash, info_hash] of the key schedule context (base mode: constant per info). */
const contexts: Record<string, Promise<Uint8Array[]>> = {};
/** The input key of `secret = LabeledExtract(shared_secret, "secret", psk = "")`: the same for every seal. */
let secretIkm: Promise<CryptoKey> | undefined;

/**
 * SealBase + Seal (single shot) through WebCrypto: `enc || ct`. Never reuses an ephemeral
 * key: each call generates one (non-extractable in WebCrypto). A low-order recipient key
 * throws: WebCrypto's X25519 deriveBits refuses an all-zero secret (so does `o.x25519.dh`).
 *
 * The key schedule (the same as keySchedule() above) runs as native HKDF calls: each
 * LabeledExtract that a LabeledExpand follows is one HKDF, so a seal is ten WebCrypto calls
 * (X25519 four, HKDF three, AES-GCM two, one import), each a promise settled on the calling
 * thread; the two info-only hashes are computed once per `info`.
 */
export async function webSeal(recipientPublicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, o: WebHpkeOptions = {}): Promise<Uint8Array> {
  const subtle = crypto.subtle;
  let enc: Uint8Array;
  let dh: Uint8Array;
  if (o.x25519) {
    const e = o.x25519.keyPair();
    enc = e.publicKey;
    dh = await o.x25519.dh(e.secretKey, recipientPublicKey);
  } else {
    const alg = { name: 'X25519' };
    const e = (await subtle.generateKey(alg, false, ['deriveBits'])) as CryptoKeyPair;
    enc = new Uint8Array(await subtle.exportKey('raw', e.publicKey));
    const pk = await subtle.importKey('raw', recipientPublicKey as Buf, alg, false, []);
    dh = new Uint8Array(await subtle.deriveBits({ ...alg, public: pk } as EcdhKeyDeriveParams, e.privateKey, 256));
  }
  // ExtractAndExpand: shared_secret = LabeledExpand(LabeledExtract("", "eae_prk", dh), "shared_secret", enc || pkR, 32)
  const shared = await hkdf(await hkdfKey(labeledExtract(KEM_SUITE, 'eae_prk', dh)), EMPTY, labeledInfo(KEM_SUITE, 'shared_secret', concat(enc, recipientPublicKey), 32), 32);
  const c = concat(new Uint8Array([0]), ...(await (contexts[info as any] ||= Promise.all([hmac(ZERO_SALT, labeledExtract(HPKE_SUITE, 'psk_id_hash', EMPTY)), hmac(ZERO_SALT, labeledExtract(HPKE_SUITE, 'info_hash', info))]))));
  const secret = await (secretIkm ||= hkdfKey(labeledExtract(HPKE_SUITE, 'secret', EMPTY)));
  const [key, nonce] = await Promise.all([hkdf(secret, shared, labeledInfo(HPKE_SUITE, 'key', c, 16), 16), hkdf(secret, shared, labeledInfo(HPKE_SUITE, 'base_nonce', c, 12), 12)]);
  const k = await subtle.importKey('raw', key as Buf, 'AES-GCM', false, ['encrypt']);
  return concat(enc, new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv: nonce as Buf, additionalData: aad as Buf }, k, plaintext as Buf)));
}

