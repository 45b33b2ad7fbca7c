/**
 * Envelopes v1 and v2 (spec: docs/protocol.md).
 *
 *   envelope    = "CS" version flags key-id(8) outer-seal     (flags: 0x00, or v2 FLAG_DEFLATE)
 *   outer-seal  = seal(collector public key, header-len(u16 BE) header(JSON) inner-seal)
 *   inner-seal  = seal(account public key, inner(JSON))        (FLAG_DEFLATE: deflate-raw(inner(JSON)))
 *
 * v1 seals with NaCl sealed boxes (./crypto.ts). v2 seals each layer with HPKE base mode
 * (RFC 9180; ./hpke.ts, ./node.ts), the outer layer with the 12-byte cleartext prefix as
 * AAD and the inner layer with account id and batch id as AAD. The HPKE functions are passed
 * in, so this module stays free of node:crypto and of WebCrypto.
 */
import { concat, openSeal, seal, type KeyPair, type OpenResult, type Random, type X25519, KEY_BYTES, SEAL_OVERHEAD } from './crypto.js';
import { fromHex, fromUtf8, toHex, utf8, fromBase64 } from './codec.js';
import { fail, type ErrorCode, type Result } from './errors.js';
import {
  ACCOUNT_ID_PATTERN,
  BATCH_ID_PATTERN,
  LIMITS,
  POINT_KINDS,
  pointError,
  type Point,
} from './limits.js';

export const MAGIC = [0x43, 0x53] as const; // "CS"
export const VERSION = 1;
export const VERSION_2 = 2;
/** Envelope v2: HPKE `info` of the outer layer (sealed to the collector's transport key). */
export const INFO_OUTER = /*#__PURE__*/ utf8('cipherstat envelope v2 outer');
/** Envelope v2: HPKE `info` of the inner layer (sealed to the account key). */
export const INFO_INNER = /*#__PURE__*/ utf8('cipherstat envelope v2 inner');
/** Envelope v2 flag: the inner plaintext is deflated (RFC 1951, raw: no zlib or gzip header) before sealing. */
export const FLAG_DEFLATE = 1;
/**
 * Envelope v2: the inner layer's AAD, ASCII `account-id "/" batch-id`, and `"/z"` after them
 * when the inner plaintext is deflated (FLAG_DEFLATE): a layer opens only in the form it was sealed for.
 */
export const innerAad = (accountId: string, batchId: string, flags = 0): Uint8Array => utf8(accountId + '/' + batchId + (flags & FLAG_DEFLATE ? '/z' : ''));
/** Deflate-raw (RFC 1951) compression, synchronous (node:zlib's `deflateRaw` in ./node.ts). */
export type Deflate = (plain: Uint8Array) => Uint8Array;
/**
 * Deflate-raw decompression of at most `maxBytes` output bytes: the bytes, `'too_large'` as soon
 * as the output would pass `maxBytes` (never more is produced), `'invalid'` when not a deflate-raw stream.
 */
export type Inflate = (deflated: Uint8Array, maxBytes: number) => Uint8Array | 'too_large' | 'invalid';

/** HPKE single-shot Seal to a recipient public key (sync: node:crypto). */
export type HpkeSeal = (recipientPublicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array) => Uint8Array;
/** HPKE single-shot Open with a recipient key pair. */
export type HpkeOpen = (recipient: KeyPair, info: Uint8Array, aad: Uint8Array, sealed: Uint8Array) => OpenResult;
export const KEY_ID_BYTES = 8;
export const PREFIX_BYTES = 4 + KEY_ID_BYTES;
/** The smallest well-formed envelope: prefix, outer seal, header length, inner seal. */
export const MIN_ENVELOPE_BYTES = PREFIX_BYTES + SEAL_OVERHEAD + 2 + SEAL_OVERHEAD;

export interface BatchHeader {
  accountId: string;
  /** 32 lowercase hex characters (16 random bytes). */
  batchId: string;
  /** Epoch milliseconds at which the Library sealed the batch. */
  createdAt: number;
  /** SDK name/version, e.g. "js/0.1.0". */
  sdk: string;
  /** Number of points in the inner layer. */
  count: number;
}

export interface SealKeys {
  accountPublicKey: Uint8Array;
  collectorKeyId: string;
  collectorPublicKey: Uint8Array;
}

type WirePoint = [id: number, kind: number, name: number, value: number, dt: number, tags?: Record<string, string>];

/** The inner plaintext: account id and batch id repeated (NaCl boxes are not key-committing). */
export function encodeInner(accountId: string, batchId: string, points: readonly Point[]): Uint8Array {
  const names: string[] = [];
  const index = new Map<string, number>();
  const base = points.length ? points[0]!.time : 0;
  const p = points.map((pt): WirePoint => {
    let n = index.get(pt.name);
    if (n === undefined) index.set(pt.name, (n = names.push(pt.name) - 1));
    const w: WirePoint = [pt.id, POINT_KINDS.indexOf(pt.kind), n, pt.value, pt.time - base];
    for (const _ in pt.tags) return (w.push(pt.tags), w);
    return w;
  });
  return utf8(JSON.stringify({ a: accountId, b: batchId, t: base, m: names, p }));
}

export function encodeHeader(h: BatchHeader): Uint8Array {
  return utf8(JSON.stringify({ a: h.accountId, b: h.batchId, t: h.createdAt, s: h.sdk, n: h.count }));
}

/** The 12 cleartext bytes: magic, version, flags, key id (v2: the outer layer's AAD). */
export function envelopePrefix(version: number, flags: number, collectorKeyId: string): Uint8Array {
  const keyId = fromHex(collectorKeyId);
  if (!keyId || keyId.length !== KEY_ID_BYTES) throw new RangeError('bad collector key id');
  return concat(new Uint8Array([MAGIC[0], MAGIC[1], version, flags]), keyId);
}

/** The outer layer's plaintext: u16be(header length) || header || inner layer. */
export const outerPlaintext = (headerBytes: Uint8Array, innerSealed: Uint8Array): Uint8Array =>
  concat(new Uint8Array([headerBytes.length >> 8, headerBytes.length & 0xff]), headerBytes, innerSealed);

/** Builds a v1 envelope around an already sealed inner layer (written out: the v1 script build counts its bytes). */
export function wrapOuter(headerBytes: Uint8Array, innerSealed: Uint8Array, keys: Pick<SealKeys, 'collectorKeyId' | 'collectorPublicKey'>, random?: Random, version = VERSION, flags = 0): Uint8Array {
  const keyId = fromHex(keys.collectorKeyId);
  if (!keyId || keyId.length !== KEY_ID_BYTES) throw new RangeError('bad collector key id');
  const len = new Uint8Array([headerBytes.length >> 8, headerBytes.length & 0xff]);
  const outer = seal(concat(len, headerBytes, innerSealed), keys.collectorPublicKey, random);
  return concat(new Uint8Array([MAGIC[0], MAGIC[1], version, flags]), keyId, outer);
}

/** Builds a v2 envelope around an already sealed (v2) inner layer. */
export function wrapOuterV2(headerBytes: Uint8Array, innerSealed: Uint8Array, keys: Pick<SealKeys, 'collectorKeyId' | 'collectorPublicKey'>, hpke: HpkeSeal, flags = 0, version = VERSION_2): Uint8Array {
  const prefix = envelopePrefix(version, flags, keys.collectorKeyId);
  return concat(prefix, hpke(keys.collectorPublicKey, INFO_OUTER, prefix, outerPlaintext(headerBytes, innerSealed)));
}

/**
 * Seals a batch as envelope v2, both layers, with a synchronous HPKE Seal (node:crypto's `hpkeSeal`);
 * with `deflate`, the inner plaintext is deflated first and the envelope carries FLAG_DEFLATE.
 */
export function sealBatchV2(header: Omit<BatchHeader, 'count'>, points: readonly Point[], keys: SealKeys, hpke: HpkeSeal, deflate?: Deflate): Uint8Array {
  const flags = deflate ? FLAG_DEFLATE : 0;
  const plain = encodeInner(header.accountId, header.batchId, points);
  const inner = hpke(keys.accountPublicKey, INFO_INNER, innerAad(header.accountId, header.batchId, flags), deflate ? deflate(plain) : plain);
  return wrapOuterV2(encodeHeader({ ...header, count: points.length }), inner, keys, hpke, flags);
}

/** Seals a batch, both layers: what the Library sends. */
export function sealBatch(header: Omit<BatchHeader, 'count'>, points: readonly Point[], keys: SealKeys, random?: Random): Uint8Array {
  const inner = seal(encodeInner(header.accountId, header.batchId, points), keys.accountPublicKey, random);
  return wrapOuter(encodeHeader({ ...header, count: points.length }), inner, keys, random);
}

export interface OpenedEnvelope {
  /** 1 or 2: how the inner layer is sealed (the process role needs it). */
  version: number;
  /** The flags byte (version 2: FLAG_DEFLATE or 0; the process role needs it). */
  flags: number;
  keyId: string;
  header: BatchHeader;
  /** The inner layer, still sealed to the account key: what ingest stores. */
  inner: Uint8Array;
}

export interface OpenEnvelopeOptions {
  /** The collector's transport key pair for a key id, or undefined when unknown/retired. */
  keys: (keyId: string) => KeyPair | undefined;
  now: number;
  x25519?: X25519;
  /** HPKE Open (node:crypto's `hpkeOpen`): without it only version 1 is read. */
  hpke?: HpkeOpen;
  /** The versions read (default: 1, and 2 when `hpke` is given). */
  versions?: readonly number[];
  /** The version 2 flags read (default: none; a collector whose process role inflates passes FLAG_DEFLATE). Version 1 has none. */
  flags?: number;
}

/** Decodes the base64 text form used by sendBeacon; null when malformed. */
export function fromTextForm(text: string): Uint8Array | null {
  return fromBase64(text.trim());
}

const str = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;

/** Ingest role: checks the prefix, opens the outer layer and validates the header. */
export function openEnvelope(bytes: Uint8Array, opts: OpenEnvelopeOptions): Result<OpenedEnvelope> {
  if (bytes.length === 0) return fail('envelope_empty');
  if (bytes.length > LIMITS.maxEnvelopeBytes) return fail('envelope_too_large');
  if (bytes.length < 4) return fail('envelope_truncated');
  if (bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1]) return fail('not_an_envelope');
  const versions = opts.versions ?? (opts.hpke ? [VERSION, VERSION_2] : [VERSION]);
  const version = bytes[2]!;
  if (!versions.includes(version)) return fail('unsupported_version', `envelope version ${version} is not supported; this collector reads versions ${versions.join(', ')}`);
  const flags = bytes[3]!;
  if (flags & ~(version === VERSION_2 ? (opts.flags ?? 0) : 0)) return fail('unsupported_flags');
  if (bytes.length < MIN_ENVELOPE_BYTES) return fail('envelope_truncated');
  const keyId = toHex(bytes.subarray(4, PREFIX_BYTES));
  const key = opts.keys(keyId);
  if (!key) return fail('unknown_key_id', `collector key ${keyId} is unknown or retired; fetch /v1/collector-key`);
  const opened = version === VERSION_2 ? opts.hpke!(key, INFO_OUTER, bytes.subarray(0, PREFIX_BYTES), bytes.subarray(PREFIX_BYTES)) : openSeal(bytes.subarray(PREFIX_BYTES), key, opts.x25519);
  if (!opened.ok) return fail(opened.code === 'low_order_key' ? 'low_order_key' : 'outer_auth_failed');
  const plain = opened.value;
  const headerLength = (plain[0]! << 8) | plain[1]!;
  if (headerLength > LIMITS.maxHeaderBytes || plain.length < 2 + headerLength + SEAL_OVERHEAD) return fail('invalid_header');
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(fromUtf8(plain.subarray(2, 2 + headerLength)));
  } catch {
    return fail('invalid_header');
  }
  if (h === null || typeof h !== 'object' || Array.isArray(h)) return fail('invalid_header');
  const { a, b, t, s, n } = h;
  if (!str(a, 64) || !ACCOUNT_ID_PATTERN.test(a)) return fail('invalid_account_id');
  if (!str(b, 32) || !BATCH_ID_PATTERN.test(b)) return fail('invalid_batch_id');
  if (!str(s, LIMITS.maxSdkLength) || !Number.isSafeInteger(t) || !Number.isSafeInteger(n) || (n as number) < 0) return fail('invalid_header');
  if ((t as number) < opts.now - LIMITS.maxPastMs || (t as number) > opts.now + LIMITS.maxClockAheadMs) return fail('timestamp_out_of_range');
  if ((n as number) > LIMITS.maxPointsPerBatch) return fail('too_many_points');
  return {
    ok: true,
    value: {
      version,
      flags,
      keyId,
      header: { accountId: a, batchId: b, createdAt: t as number, sdk: s, count: n as number },
      inner: plain.subarray(2 + headerLength),
    },
  };
}

export interface PointReject {
  /** Position of the point in the batch. */
  index: number;
  code: ErrorCode;
}

export interface OpenedBatch {
  points: Point[];
  rejects: PointReject[];
}

export interface OpenInnerOptions {
  account: KeyPair;
  accountId: string;
  batchId: string;
  /** Point count announced in the header. */
  count: number;
  now: number;
  x25519?: X25519;
  /** The envelope version the inner layer came in (default 1). */
  version?: number;
  /** HPKE Open, for version 2. */
  hpke?: HpkeOpen;
  /** The envelope's flags (default 0): FLAG_DEFLATE needs `inflate`. */
  flags?: number;
  /** Bounded deflate-raw decompression (node:zlib's `inflateRaw` in ./node.ts), for FLAG_DEFLATE. */
  inflate?: Inflate;
}

/**
 * Process role: opens the inner layer with the account key, checks the bound identities,
 * and validates every point. Invalid points are returned as rejects (to be counted), the
 * valid ones as points.
 */
export function openInner(inner: Uint8Array, opts: OpenInnerOptions): Result<OpenedBatch> {
  if (inner.length < SEAL_OVERHEAD) return fail('inner_auth_failed');
  const v2 = opts.version === VERSION_2;
  if (v2 && !opts.hpke) return fail('unsupported_version');
  const flags = v2 ? (opts.flags ?? 0) : 0;
  if (flags & ~FLAG_DEFLATE || (flags & FLAG_DEFLATE && !opts.inflate)) return fail('unsupported_flags');
  const opened = v2 ? opts.hpke!(opts.account, INFO_INNER, innerAad(opts.accountId, opts.batchId, flags), inner) : openSeal(inner, opts.account, opts.x25519);
  if (!opened.ok) return fail(opened.code === 'low_order_key' ? 'low_order_key' : 'inner_auth_failed');
  let plain = opened.value;
  if (flags & FLAG_DEFLATE) {
    // Bounded: never more than an uncompressed envelope could carry is produced (a zip bomb stops there).
    const inflated = opts.inflate!(plain, LIMITS.maxInflatedBytes);
    if (inflated === 'too_large') return fail('inflated_too_large', `the inflated inner plaintext is over ${LIMITS.maxInflatedBytes} bytes`);
    if (inflated === 'invalid') return fail('invalid_payload', 'the inner plaintext is not a deflate-raw stream');
    plain = inflated;
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(fromUtf8(plain));
  } catch {
    return fail('invalid_payload');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return fail('invalid_payload');
  if (body.a !== opts.accountId) return fail('account_mismatch');
  if (body.b !== opts.batchId) return fail('batch_mismatch');
  const { t, m, p } = body;
  if (!Number.isSafeInteger(t) || !Array.isArray(m) || !Array.isArray(p)) return fail('invalid_payload');
  if (p.length !== opts.count) return fail('point_count_mismatch');
  const points: Point[] = [];
  const rejects: PointReject[] = [];
  const seen = new Set<number>();
  for (let index = 0; index < p.length; index++) {
    const w: unknown = p[index];
    const code = wireError(w, m);
    if (code) {
      rejects.push({ index, code });
      continue;
    }
    const [id, kind, name, value, dt, tags] = w as WirePoint;
    // A sixth element must be a tags object (null or an array is invalid_tags, via pointError).
    const point: Point = { id, kind: POINT_KINDS[kind]!, name: m[name] as string, value, time: (t as number) + dt, tags: (w as unknown[]).length === 6 ? tags! : {} };
    const err = seen.has(id) ? 'duplicate_point' : pointError(point, opts.now);
    if (err) rejects.push({ index, code: err });
    else (seen.add(id), points.push(point));
  }
  return { ok: true, value: { points, rejects } };
}

function wireError(w: unknown, names: unknown[]): ErrorCode | null {
  if (!Array.isArray(w) || w.length < 5 || w.length > 6) return 'invalid_point';
  const [id, kind, name, value, dt] = w;
  if (!Number.isSafeInteger(id) || id < 0) return 'invalid_point';
  if (!Number.isInteger(kind) || POINT_KINDS[kind] === undefined) return 'invalid_kind';
  if (!Number.isInteger(name) || typeof names[name] !== 'string') return 'invalid_name';
  if (typeof value !== 'number') return 'invalid_value';
  if (!Number.isSafeInteger(dt)) return 'invalid_timestamp';
  return null;
}

export { KEY_BYTES };
