/**
 * Seal: a formed batch gets its id and its inner layer (sealed to the account key) once,
 * and is stored in that form. The outer layer (sealed to the collector key) is built from
 * the stored ephemeral secret `seed`, so every retry of a batch — in this page, after a
 * reload, or after a restart — sends the same bytes for the same collector key, and a
 * rotated collector key only needs a new outer layer around the same inner one.
 */
import { BATCH_ID_PATTERN, concat, encodeHeader, encodeInner, fromBase64, randomBytes, seal, sha512, toBase64, toHex, utf8, wrapOuter, type Point } from '@cipherstat/protocol';
import type { Key } from './options.js';
import type { StoredBatch } from './persist.js';
import { SDK } from './version.js';

export interface Batch {
  _stored: StoredBatch;
  _inner: Uint8Array;
  _seed: Uint8Array;
  /** Envelope cache and the collector key id it was built for. */
  _env?: Uint8Array;
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

/** Forms a batch: ids (batch: 16 random bytes, point: index), inner seal. */
export function form(accountId: string, accountKey: Uint8Array, points: Point[]): StoredBatch {
  points.forEach((p, i) => (p.id = i));
  const id = toHex(randomBytes(16));
  const inner = seal(encodeInner(accountId, id, points), accountKey);
  return [id, Date.now(), points.length, toBase64(inner), toBase64(randomBytes(32))];
}

/** Stored form → Batch; undefined when malformed. */
export function revive(s: StoredBatch, seq: number): Batch | undefined {
  const inner = Array.isArray(s) && BATCH_ID_PATTERN.test(s[0]) && s[2] > 0 && fromBase64(s[3]);
  const seed = inner && fromBase64(s[4]);
  if (seed && seed.length == 32 && s[1] > 0) return { _stored: s, _inner: inner, _seed: seed, _attempts: 0, _wait: 0, _seq: seq };
}

/** The envelope of a batch for a collector key: deterministic per (batch, key, header). */
export function envelope(b: Batch, key: Key, accountId: string, sdk = SDK): Uint8Array {
  if (b._envKey !== key.keyId) {
    const [batchId, createdAt, count] = b._stored;
    const header = encodeHeader({ accountId, batchId, createdAt, sdk, count });
    // One ephemeral secret (so one nonce) per (batch, collector key, exact header): a retry by
    // another SDK version (a deploy between retries) seals its other header under another key.
    const ephemeral = sha512(concat(b._seed, utf8(key.keyId), header)).subarray(0, 32);
    b._env = wrapOuter(header, b._inner, { collectorKeyId: key.keyId, collectorPublicKey: key.publicKey }, () => ephemeral);
    b._envKey = key.keyId;
  }
  return b._env!;
}
