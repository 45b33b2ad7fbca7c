/**
 * Seal: a formed batch gets its id and its inner layer (sealed to the account key) once, and
 * is stored in that form.
 *
 * Envelope v2 (HPKE through WebCrypto, docs/protocol.md) wherever there is `crypto.subtle`:
 * the outer layer is sealed once per collector key with a fresh ephemeral key, and the sealed
 * envelope is stored with the batch, so every retry — in this page, after a reload, after a
 * restart — sends exactly the same bytes and nothing is ever sealed twice. Where
 * crypto.subtle lacks X25519, that one step comes from the fallback (tweetnacl); where there
 * is no crypto.subtle at all (plain HTTP), the batch is envelope v1, sealed by the fallback.
 * Which applies is detected once.
 */
import { BATCH_ID_PATTERN, concat, type HpkeSeal, encodeHeader, encodeInner, INFO_INNER, INFO_OUTER, innerAad, outerPlaintext, toBase64, webSeal, type Point, type WebHpkeOptions } from '@cipherstat/protocol';
import type { Fallback } from './fallback.js';
import type { Key } from './options.js';
import type { StoredBatch } from './persist.js';
import { SDK } from './version.js';

export interface Batch {
  _stored: StoredBatch;
  _inner: Uint8Array;
  /** The envelope being sealed or sealed, and the collector key id it is for. */
  _env?: Promise<Uint8Array>;
  _envKey?: string;
  /** Failed attempts so far. */
  _attempts: number;
  /** Not sent before this epoch ms (after a beacon). */
  _wait: number;
  /** Order of formation, for flush(). */
  _seq: number;
  _busy?: boolean;
  /** Already re-sealed once after unknown_key_id. */
  _rekeyed?: boolean;
}

/** How this platform seals: `v` the envelope version, `h` node:crypto's HPKE, `o` WebCrypto HPKE options, `f` the fallback. */
interface Sealer {
  v: 1 | 2;
  h?: HpkeSeal;
  o?: WebHpkeOptions;
  f?: Fallback;
}

/** Where the platform brings its own (synchronous) HPKE: node:crypto in Node. */
export interface Sealing {
  load: () => Promise<Fallback>;
  hpke?: HpkeSeal;
  /** Deflate-raw the platform brings (Node: node:zlib; browsers: CompressionStream): then v2 batches are deflated (flag 0x01). */
  deflate?: (plain: Uint8Array) => Uint8Array | Promise<Uint8Array>;
}

let sealer: Promise<Sealer> | undefined;
let fallback: Promise<Fallback> | undefined;

/** Detected once: v2 with node:crypto, with WebCrypto's X25519, with the fallback's X25519, or v1 (no crypto.subtle). */
export const detect = ({ load, hpke }: Sealing): Promise<Sealer> =>
  (sealer ||= (async (): Promise<Sealer> => {
    if (hpke) return { v: 2, h: hpke };
    const subtle = globalThis.crypto?.subtle;
    if (!subtle) return { v: 1, f: await loadOnce(load) };
    try {
      await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
      return { v: 2 };
    } catch {
      const x = await loadOnce(load);
      return { v: 2, o: { x25519: x.x25519 }, f: x };
    }
  })().catch((e) => {
    sealer = undefined; // the fallback did not load: the next batch detects (and loads) again
    throw e;
  }));

/** The fallback, loaded at most once at a time; a failed load is tried again next time. */
const loadOnce = (load: () => Promise<Fallback>) =>
  (fallback ||= load().catch((e) => {
    fallback = undefined;
    throw e;
  }));

/** Forgets the detection (tests switch platforms). */
export const redetect = () => (sealer = fallback = undefined);

const hpke = (s: Sealer, pk: Uint8Array, info: Uint8Array, aad: Uint8Array, plain: Uint8Array) => (s.h ? s.h(pk, info, aad, plain) : webSeal(pk, info, aad, plain, s.o));

const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));

/** Strict base64: exactly what btoa writes (padded, no whitespace), else undefined. */
export const fromBase64 = (text: string): Uint8Array | undefined => {
  try {
    const s = atob(text);
    if (btoa(s) == text) return Uint8Array.from(s, (c) => c.charCodeAt(0));
  } catch {}
};

const batch = (s: StoredBatch, inner: Uint8Array, seq: number): Batch => ({ _stored: s, _inner: inner, _attempts: 0, _wait: 0, _seq: seq });

/** Forms a batch: ids (batch: 16 random bytes, point: index), inner seal (v2, or v1 without crypto.subtle). */
export async function form(accountId: string, accountKey: Uint8Array, points: Point[], sealing: Sealing): Promise<Batch> {
  points.forEach((p, i) => (p.id = i));
  const id = Array.from(random(16), (b) => (b | 256).toString(16).slice(1)).join(''); // hex (smaller here than the protocol's toHex)
  const plain = encodeInner(accountId, id, points);
  const s = await detect(sealing);
  // v2: deflated where the platform can (flag 0x01, the inner AAD says so); v1 has no flags
  let z;
  try {
    z = s.v == 2 && (await sealing.deflate?.(plain));
  } catch {} // no CompressionStream or no 'deflate-raw' here: flags 0
  const f = z ? 1 : 0;
  const inner = s.v == 2 ? await hpke(s, accountKey, INFO_INNER, innerAad(accountId, id, f), z || plain) : s.f!.inner(plain, accountKey);
  // the bytes are kept as they are: only storage needs them as text
  return batch(s.v == 2 ? [id, Date.now(), points.length, toBase64(inner), '', 2, '', f] : [id, Date.now(), points.length, toBase64(inner), toBase64(random(32))], inner, 0);
}

/** Stored form → Batch; undefined when malformed. */
export function revive(s: StoredBatch, seq: number): Batch | undefined {
  const inner = Array.isArray(s) && BATCH_ID_PATTERN.test(s[0]) && s[2] > 0 && s[1] > 0 && fromBase64(s[3]);
  const other = inner && fromBase64(s[4]);
  if (!other) return;
  const b = batch(s, inner, seq);
  if (s[5] == 2) {
    if (s[6]) (b._env = Promise.resolve(other)), (b._envKey = s[6]);
    return b;
  }
  if (other.length == 32) return b;
}

/**
 * The envelope of a batch for a collector key. v2: sealed once per key, then the same bytes
 * (stored: `sealed` says so, the caller persists); v1: deterministic per (batch, key, header).
 */
export function envelope(b: Batch, key: Key, accountId: string, sealing: Sealing, sdk = SDK, sealed?: (s: StoredBatch) => void): Promise<Uint8Array> {
  if (b._envKey != key.keyId || !b._env) {
    const s = b._stored;
    const [batchId, createdAt, count] = s;
    const h = { accountId, batchId, createdAt, sdk, count };
    b._envKey = key.keyId;
    b._env =
      s[5] == 2
        ? detect(sealing).then(async (x) => {
            // magic "CS", version 2, the batch's flags (docs/protocol.md); the key id was checked when parsed (16 hex)
            const prefix = concat(new Uint8Array([0x43, 0x53, 2, s[7]! | 0]), Uint8Array.from(key.keyId.match(/../g)!, (h) => parseInt(h, 16)));
            const env = concat(prefix, await hpke(x, key.publicKey, INFO_OUTER, prefix, outerPlaintext(encodeHeader(h), b._inner)));
            s[4] = toBase64(env);
            s[6] = key.keyId;
            sealed?.(s);
            return env;
          })
        : loadOnce(sealing.load).then((f) => f.outer(b._inner, fromBase64(s[4])!, key.keyId, key.publicKey, h));
    b._env.catch(() => (b._envKey = undefined));
  }
  return b._env;
}
