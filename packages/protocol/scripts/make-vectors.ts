/**
 * Writes the envelope v1 (001-035), v2 (036-063) and v2 deflate (064-) test vectors, one case per file, into packages/protocol/vectors/.
 * Deterministic: fixed keys, a seeded random source, a fixed clock. Published vectors never
 * change; `test/vectors.test.ts` checks that this script still reproduces them byte for byte.
 *
 *   npx tsx packages/protocol/scripts/make-vectors.ts [--check]
 */
import { readFileSync, writeFileSync, readdirSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { concat, publicKeyOf, seal, sha512, type Random } from '../src/crypto.js';
import { toBase64, utf8 } from '../src/codec.js';
import { encodeHeader, encodeInner, envelopePrefix, FLAG_DEFLATE, INFO_INNER, INFO_OUTER, innerAad, outerPlaintext, wrapOuter, type BatchHeader } from '../src/envelope.js';
import { deflateRaw, hpkeSeal } from '../src/node.js';
import type { Point } from '../src/limits.js';

export const VECTORS_DIR = fileURLToPath(new URL('../vectors/', import.meta.url));

const NOW = 1767225600000; // 2026-01-01T00:00:00Z
const secret = (label: string) => sha512(utf8(`cipherstat v1 test vector: ${label}`)).slice(0, 32);

/** A deterministic random source: SHA-512(seed || counter) stream. */
function seeded(seed: string): Random {
  let counter = 0;
  let pool: Uint8Array = new Uint8Array(0);
  return (n) => {
    while (pool.length < n) pool = concat(pool, sha512(utf8(`${seed}/${counter++}`)));
    const out = pool.slice(0, n);
    pool = pool.slice(n);
    return out;
  };
}

const collector = { keyId: '0c011ec7000000a1', secretKey: secret('collector key a1') };
const collectorOld = { keyId: '0c011ec7000000a0', secretKey: secret('collector key a0') };
const account = { id: 'acct_vector_A1', secretKey: secret('account A1') };
const other = { id: 'acct_vector_B2', secretKey: secret('account B2') };
const BATCH = '5eed0000000000000000000000000001';

const basePoints: Point[] = [
  { id: 0, kind: 'counter', name: 'orders', value: 1, time: NOW - 5000, tags: { country: 'DE', channel: 'web' } },
  { id: 1, kind: 'gauge', name: 'cart.items', value: 3, time: NOW - 4000, tags: {} },
  { id: 2, kind: 'histogram', name: 'page.load_ms', value: 812.5, time: NOW - 3000, tags: { page: '/checkout' } },
  { id: 3, kind: 'counter', name: 'revenue.eur', value: 49.99, time: NOW - 2000, tags: { country: 'FR', channel: 'app' } },
];

interface Build {
  header?: Partial<BatchHeader> | Uint8Array;
  inner?: Uint8Array; // inner plaintext
  innerSealed?: Uint8Array;
  points?: Point[];
  innerAccount?: string;
  innerBatch?: string;
  sealTo?: Uint8Array;
  keyId?: string;
  collectorSecret?: Uint8Array;
  version?: number;
  flags?: number;
}

function build(name: string, b: Build = {}): Uint8Array {
  const random = seeded(name);
  const points = b.points ?? basePoints;
  const inner = b.inner ?? encodeInner(b.innerAccount ?? account.id, b.innerBatch ?? BATCH, points);
  const innerSealed = b.innerSealed ?? seal(inner, b.sealTo ?? publicKeyOf(account.secretKey), random);
  const header =
    b.header instanceof Uint8Array
      ? b.header
      : encodeHeader({ accountId: account.id, batchId: BATCH, createdAt: NOW - 1000, sdk: 'js/0.1.0', count: points.length, ...b.header });
  return wrapOuter(
    header,
    innerSealed,
    { collectorKeyId: b.keyId ?? collector.keyId, collectorPublicKey: publicKeyOf(b.collectorSecret ?? collector.secretKey) },
    random,
    b.version,
    b.flags,
  );
}

interface BuildV2 {
  header?: Partial<BatchHeader>;
  points?: Point[];
  inner?: Uint8Array; // inner plaintext
  innerSealed?: Uint8Array;
  innerAccount?: string;
  innerAadBatch?: string;
  /** The flags the inner AAD is built for (default: `flags`). */
  innerAadFlags?: number;
  /** Deflate the inner plaintext before sealing (default: when `flags` has FLAG_DEFLATE). */
  deflate?: boolean;
  innerInfo?: Uint8Array;
  innerTo?: Uint8Array;
  outerInfo?: Uint8Array;
  outerTo?: Uint8Array;
  outerAad?: Uint8Array;
  keyId?: string;
  collectorSecret?: Uint8Array;
  version?: number;
  flags?: number;
}

/** An envelope v2 with every choice overridable; ephemeral keys from a seeded stream. */
function buildV2(name: string, b: BuildV2 = {}): Uint8Array {
  const random = seeded(name);
  const points = b.points ?? basePoints;
  const flags = b.flags ?? 0;
  const plain = b.inner ?? encodeInner(b.innerAccount ?? account.id, BATCH, points);
  const innerSealed =
    b.innerSealed ??
    hpkeSeal(
      b.innerTo ?? publicKeyOf(account.secretKey),
      b.innerInfo ?? INFO_INNER,
      innerAad(account.id, b.innerAadBatch ?? BATCH, b.innerAadFlags ?? flags),
      (b.deflate ?? (flags & FLAG_DEFLATE) !== 0) ? deflateRaw(plain) : plain,
      random(32),
    );
  const header = encodeHeader({ accountId: account.id, batchId: BATCH, createdAt: NOW - 1000, sdk: 'js/0.2.0', count: points.length, ...b.header });
  const prefix = envelopePrefix(b.version ?? 2, flags, b.keyId ?? collector.keyId);
  const outerTo = b.outerTo ?? publicKeyOf(b.collectorSecret ?? collector.secretKey);
  return concat(prefix, hpkeSeal(outerTo, b.outerInfo ?? INFO_OUTER, b.outerAad ?? prefix, outerPlaintext(header, innerSealed), random(32)));
}

interface Case {
  name: string;
  description: string;
  expect: string;
  envelope: Uint8Array;
  padding?: number;
  points?: Point[];
  rejects?: { index: number; code: string }[];
}

function flip(bytes: Uint8Array, at: number): Uint8Array {
  const out = bytes.slice();
  out[at] = out[at]! ^ 0x01;
  return out;
}

function cases(): Case[] {
  const ok = build('ok-basic');
  const lowOrderPoint = Uint8Array.from(Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex'));
  const withEphemeral = (env: Uint8Array, epk: Uint8Array) => concat(env.subarray(0, 12), epk, env.subarray(44));
  const many: Point[] = Array.from({ length: 2001 }, (_, i) => ({ id: i, kind: 'counter', name: 'c', value: 1, time: NOW - 1000, tags: {} }));
  const tags17 = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
  const one = (p: Partial<Point>): Point[] => [{ ...basePoints[0]!, ...p }, basePoints[1]!];
  const rawInner = (p: unknown[]) => utf8(JSON.stringify({ a: account.id, b: BATCH, t: NOW - 5000, m: ['orders'], p }));

  return [
    { name: 'ok-basic', description: 'four points of every kind, with and without tags', expect: 'ok', envelope: ok, points: basePoints },
    {
      name: 'ok-unicode-tags',
      description: 'tag values are arbitrary Unicode strings',
      expect: 'ok',
      envelope: build('ok-unicode-tags', { points: one({ tags: { city: 'Zürich', note: '日本語 ✓ "quoted"' } }) }),
      points: one({ tags: { city: 'Zürich', note: '日本語 ✓ "quoted"' } }),
    },
    {
      name: 'ok-previous-collector-key',
      description: 'sealed to the previous collector key, still accepted during the rotation overlap',
      expect: 'ok',
      envelope: build('ok-previous-collector-key', { keyId: collectorOld.keyId, collectorSecret: collectorOld.secretKey }),
      points: basePoints,
    },
    { name: 'empty', description: 'zero bytes', expect: 'envelope_empty', envelope: new Uint8Array(0) },
    { name: 'truncated', description: 'a valid envelope cut after 60 bytes', expect: 'envelope_truncated', envelope: ok.slice(0, 60) },
    { name: 'not-an-envelope', description: 'bytes without the "CS" magic', expect: 'not_an_envelope', envelope: utf8('{"hello":"world", "this is": "json, not an envelope"} padding padding padding padding padding padding') },
    { name: 'unknown-version', description: 'version byte 2', expect: 'unsupported_version', envelope: build('unknown-version', { version: 2 }) },
    { name: 'unknown-flags', description: 'a flags byte other than 0 in version 1', expect: 'unsupported_flags', envelope: build('unknown-flags', { flags: 1 }) },
    { name: 'unknown-key-id', description: 'sealed to a collector key id the collector does not hold', expect: 'unknown_key_id', envelope: build('unknown-key-id', { keyId: 'ffffffffffffffff', collectorSecret: secret('unknown collector') }) },
    { name: 'tampered-outer', description: 'one bit of the outer ciphertext flipped', expect: 'outer_auth_failed', envelope: flip(ok, 100) },
    { name: 'tampered-key-id', description: 'key id rewritten to the other accepted key: the outer box no longer opens', expect: 'outer_auth_failed', envelope: concat(ok.subarray(0, 4), Uint8Array.from(Buffer.from(collectorOld.keyId, 'hex')), ok.subarray(12)) },
    { name: 'low-order-ephemeral-zero', description: 'outer ephemeral public key u = 0 (all-zero shared secret)', expect: 'low_order_key', envelope: withEphemeral(ok, new Uint8Array(32)) },
    { name: 'low-order-ephemeral-order8', description: 'outer ephemeral public key of order 8 (Wycheproof tcId 63)', expect: 'low_order_key', envelope: withEphemeral(ok, lowOrderPoint) },
    {
      name: 'tampered-inner',
      description: 'outer layer intact, one bit of the inner ciphertext flipped',
      expect: 'inner_auth_failed',
      envelope: build('tampered-inner', { innerSealed: flip(seal(encodeInner(account.id, BATCH, basePoints), publicKeyOf(account.secretKey), seeded('x')), 60) }),
    },
    { name: 'inner-sealed-to-other-account', description: 'inner layer sealed to account B, header names account A', expect: 'inner_auth_failed', envelope: build('inner-sealed-to-other-account', { sealTo: publicKeyOf(other.secretKey), innerAccount: other.id }) },
    { name: 'account-mismatch', description: 'inner plaintext names another account than the header (moved between accounts)', expect: 'account_mismatch', envelope: build('account-mismatch', { innerAccount: other.id }) },
    { name: 'batch-mismatch', description: 'inner plaintext names another batch id than the header (replayed under a new id)', expect: 'batch_mismatch', envelope: build('batch-mismatch', { innerBatch: '5eed0000000000000000000000000002' }) },
    { name: 'oversize', description: 'an envelope of 1 MiB + 1 byte (valid prefix, zero padding)', expect: 'envelope_too_large', envelope: ok, padding: 1024 * 1024 + 1 },
    { name: 'too-many-points', description: '2001 points, over the 2000 per batch limit', expect: 'too_many_points', envelope: build('too-many-points', { points: many }) },
    { name: 'header-not-json', description: 'the header is not JSON', expect: 'invalid_header', envelope: build('header-not-json', { header: utf8('{"a":"acct_vector_A1",') }) },
    { name: 'header-bad-account-id', description: 'account id with characters outside [A-Za-z0-9_-]', expect: 'invalid_account_id', envelope: build('header-bad-account-id', { header: { accountId: 'acct vector/A1' } }) },
    { name: 'header-bad-batch-id', description: 'batch id that is not 32 lowercase hex characters', expect: 'invalid_batch_id', envelope: build('header-bad-batch-id', { header: { batchId: '5EED0000000000000000000000000001' } }) },
    { name: 'header-too-old', description: 'created 60 days before now', expect: 'timestamp_out_of_range', envelope: build('header-too-old', { header: { createdAt: NOW - 60 * 86400000 } }) },
    { name: 'point-count-mismatch', description: 'header announces 5 points, inner layer holds 4', expect: 'point_count_mismatch', envelope: build('point-count-mismatch', { header: { count: 5 } }) },
    { name: 'inner-not-json', description: 'the inner plaintext is not JSON', expect: 'invalid_payload', envelope: build('inner-not-json', { inner: utf8('not json'), header: { count: 0 } }) },
    { name: 'bad-name', description: 'a metric name with a space; the other point is kept', expect: 'invalid_name', envelope: build('bad-name', { points: one({ name: 'bad name' }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_name' }] },
    {
      name: 'nan-value',
      description: 'a NaN value (JSON has no NaN: it is serialized as null); the other point is kept',
      expect: 'invalid_value',
      envelope: build('nan-value', { points: one({ value: Number.NaN }) }),
      points: [basePoints[1]!],
      rejects: [{ index: 0, code: 'invalid_value' }],
    },
    { name: 'infinite-value', description: 'a value of 1e999 in the JSON text (parses to Infinity)', expect: 'invalid_value', envelope: build('infinite-value', { inner: utf8(`{"a":"${account.id}","b":"${BATCH}","t":${NOW - 5000},"m":["orders"],"p":[[0,0,0,1e999,0]]}`), header: { count: 1 } }), points: [], rejects: [{ index: 0, code: 'invalid_value' }] },
    { name: 'too-many-tags', description: '17 tags on one point, over the limit of 16', expect: 'invalid_tags', envelope: build('too-many-tags', { points: one({ tags: tags17 }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_tags' }] },
    { name: 'point-in-future', description: 'a point one hour ahead of the collector clock', expect: 'invalid_timestamp', envelope: build('point-in-future', { points: one({ time: NOW + 3600000 }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_timestamp' }] },
    { name: 'unknown-kind', description: 'point kind 7', expect: 'invalid_kind', envelope: build('unknown-kind', { inner: rawInner([[0, 7, 0, 1, 0]]), header: { count: 1 } }), points: [], rejects: [{ index: 0, code: 'invalid_kind' }] },
    {
      name: 'duplicate-point-id',
      description: 'two points with id 0; the second is rejected',
      expect: 'duplicate_point',
      envelope: build('duplicate-point-id', { inner: rawInner([[0, 0, 0, 1, 0], [0, 0, 0, 2, 0]]), header: { count: 2 } }),
      points: [{ id: 0, kind: 'counter', name: 'orders', value: 1, time: NOW - 5000, tags: {} }],
      rejects: [{ index: 1, code: 'duplicate_point' }],
    },
    { name: 'tags-null', description: 'a sixth point element that is null instead of a tags object', expect: 'invalid_tags', envelope: build('tags-null', { inner: rawInner([[0, 0, 0, 1, 0, null]]), header: { count: 1 } }), points: [], rejects: [{ index: 0, code: 'invalid_tags' }] },
    { name: 'tag-value-nul', description: 'a tag value containing NUL (it would collide with another tag set once pseudonymized)', expect: 'invalid_tags', envelope: build('tag-value-nul', { points: one({ tags: { a: 'x\u0000b' } }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_tags' }] },
    { name: 'tag-value-lone-surrogate', description: 'a tag value with a lone UTF-16 surrogate (not representable in UTF-8)', expect: 'invalid_tags', envelope: build('tag-value-lone-surrogate', { points: one({ tags: { a: 'x\ud800' } }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_tags' }] },
    ...casesV2(),
    ...casesDeflate(),
  ];
}

/** Envelope v2 with a deflated inner plaintext (FLAG_DEFLATE), for a reader of versions 1 and 2 and that flag: 064 on. */
function casesDeflate(): Case[] {
  const z = FLAG_DEFLATE;
  const one = (p: Partial<Point>): Point[] => [{ ...basePoints[0]!, ...p }, basePoints[1]!];
  // Valid JSON whose text is one byte over the limit: what a zip bomb inflates to, stopped at 1 MiB.
  const head = `{"a":"${account.id}","b":"${BATCH}","t":${NOW - 5000},"m":["orders"],"p":[[0,0,0,1,0]]`;
  const bomb = utf8(head + ' '.repeat(1024 * 1024 + 1 - head.length - 1) + '}');
  return [
    { name: 'v2-deflate-ok-basic', description: 'v2 flag 0x01: the inner plaintext deflated (raw) before sealing, inner AAD "account/batch/z"', expect: 'ok', envelope: buildV2('v2-deflate-ok-basic', { flags: z }), points: basePoints },
    { name: 'v2-deflate-ok-unicode-tags', description: 'v2 flag 0x01: tag values are arbitrary Unicode strings', expect: 'ok', envelope: buildV2('v2-deflate-ok-unicode-tags', { flags: z, points: one({ tags: { city: 'Zürich', note: '日本語 ✓' } }) }), points: one({ tags: { city: 'Zürich', note: '日本語 ✓' } }) },
    { name: 'v2-deflate-inner-aad-uncompressed', description: 'v2 flag 0x01 and a deflated inner plaintext, but the inner AAD of an uncompressed layer (no "/z")', expect: 'inner_auth_failed', envelope: buildV2('v2-deflate-inner-aad-uncompressed', { flags: z, innerAadFlags: 0 }) },
    { name: 'v2-deflate-flag-cleared', description: 'v2 flags 0x00 around an inner layer sealed deflated (AAD "/z"): the flag cannot be dropped', expect: 'inner_auth_failed', envelope: buildV2('v2-deflate-flag-cleared', { flags: 0, innerAadFlags: z, deflate: true }) },
    { name: 'v2-deflate-not-deflated', description: 'v2 flag 0x01, inner AAD "/z", but the inner plaintext is JSON, not a deflate-raw stream', expect: 'invalid_payload', envelope: buildV2('v2-deflate-not-deflated', { flags: z, deflate: false }) },
    { name: 'v2-deflate-bomb', description: 'v2 flag 0x01: ~1 KiB that inflates to 1 MiB + 1 byte (over maxInflatedBytes); decompression stops at the limit', expect: 'inflated_too_large', envelope: buildV2('v2-deflate-bomb', { flags: z, inner: bomb, header: { count: 1 } }) },
    { name: 'v2-deflate-unknown-flag', description: 'v2 flags 0x03: bit 1 is not defined', expect: 'unsupported_flags', envelope: buildV2('v2-deflate-unknown-flag', { flags: 3 }) },
    { name: 'v1-deflate-flag', description: 'version 1 with flag 0x01: version 1 has no flags', expect: 'unsupported_flags', envelope: build('v1-deflate-flag', { flags: z }) },
    { name: 'v2-deflate-bad-name', description: 'v2 flag 0x01: every point check applies after inflating; the other point is kept', expect: 'invalid_name', envelope: buildV2('v2-deflate-bad-name', { flags: z, points: one({ name: 'bad name' }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_name' }] },
  ];
}

/** Envelope v2 (HPKE) cases: 036 on. */
function casesV2(): Case[] {
  const ok = buildV2('v2-ok-basic');
  const lowOrderPoint = Uint8Array.from(Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex'));
  const withEphemeral = (env: Uint8Array, epk: Uint8Array) => concat(env.subarray(0, 12), epk, env.subarray(44));
  const accountKey = publicKeyOf(account.secretKey);
  const innerV2 = (name: string, to = accountKey) => hpkeSeal(to, INFO_INNER, innerAad(account.id, BATCH), encodeInner(account.id, BATCH, basePoints), seeded(name)(32));
  const lastFlipped = (bytes: Uint8Array) => flip(bytes, bytes.length - 1);
  const many: Point[] = Array.from({ length: 2001 }, (_, i) => ({ id: i, kind: 'counter', name: 'c', value: 1, time: NOW - 1000, tags: {} }));
  const one = (p: Partial<Point>): Point[] => [{ ...basePoints[0]!, ...p }, basePoints[1]!];
  return [
    { name: 'v2-ok-basic', description: 'v2: four points of every kind, both layers HPKE', expect: 'ok', envelope: ok, points: basePoints },
    { name: 'v2-ok-previous-collector-key', description: 'v2: sealed to the previous collector key, still accepted during the rotation overlap', expect: 'ok', envelope: buildV2('v2-ok-previous-collector-key', { keyId: collectorOld.keyId, collectorSecret: collectorOld.secretKey }), points: basePoints },
    { name: 'v2-ok-unicode-tags', description: 'v2: tag values are arbitrary Unicode strings', expect: 'ok', envelope: buildV2('v2-ok-unicode-tags', { points: one({ tags: { city: 'Zürich', note: '日本語 ✓' } }) }), points: one({ tags: { city: 'Zürich', note: '日本語 ✓' } }) },
    { name: 'v2-outer-wrong-aad', description: 'v2: outer layer sealed with an empty AAD instead of the 12-byte prefix', expect: 'outer_auth_failed', envelope: buildV2('v2-outer-wrong-aad', { outerAad: new Uint8Array(0) }) },
    { name: 'v2-tampered-key-id', description: 'v2: key id rewritten to the other accepted key (the prefix is the AAD)', expect: 'outer_auth_failed', envelope: concat(ok.subarray(0, 4), Uint8Array.from(Buffer.from(collectorOld.keyId, 'hex')), ok.subarray(12)) },
    { name: 'v2-outer-aad-other-flags', description: 'v2: outer AAD with flags 0x80 while the prefix says 0x00', expect: 'outer_auth_failed', envelope: buildV2('v2-outer-aad-other-flags', { outerAad: envelopePrefix(2, 0x80, collector.keyId) }) },
    { name: 'v2-reserved-flag', description: 'v2: flag 0x01 (compressed inner plaintext, reserved) is not read by this version', expect: 'unsupported_flags', envelope: buildV2('v2-reserved-flag', { flags: 1, innerAadFlags: 0, deflate: false }) },
    { name: 'v2-layers-swapped', description: 'v2: each layer sealed with the other layer\'s info', expect: 'outer_auth_failed', envelope: buildV2('v2-layers-swapped', { outerInfo: INFO_INNER, innerInfo: INFO_OUTER }) },
    { name: 'v2-inner-outer-info', description: 'v2: inner layer sealed with the outer layer\'s info', expect: 'inner_auth_failed', envelope: buildV2('v2-inner-outer-info', { innerInfo: INFO_OUTER }) },
    { name: 'v2-outer-sealed-to-account-key', description: 'v2: outer layer sealed to the account key instead of the collector key', expect: 'outer_auth_failed', envelope: buildV2('v2-outer-sealed-to-account-key', { outerTo: accountKey }) },
    { name: 'v2-inner-sealed-to-collector-key', description: 'v2: inner layer sealed to the collector key instead of the account key', expect: 'inner_auth_failed', envelope: buildV2('v2-inner-sealed-to-collector-key', { innerTo: publicKeyOf(collector.secretKey) }) },
    { name: 'v2-low-order-ephemeral-zero', description: 'v2: outer enc u = 0 (all-zero DH)', expect: 'low_order_key', envelope: withEphemeral(ok, new Uint8Array(32)) },
    { name: 'v2-low-order-ephemeral-order8', description: 'v2: outer enc of order 8 (Wycheproof tcId 63)', expect: 'low_order_key', envelope: withEphemeral(ok, lowOrderPoint) },
    { name: 'v2-inner-low-order-ephemeral', description: 'v2: inner enc of order 8', expect: 'low_order_key', envelope: buildV2('v2-inner-low-order-ephemeral', { innerSealed: concat(lowOrderPoint, innerV2('x').subarray(32)) }) },
    { name: 'v2-truncated', description: 'v2: a valid envelope cut after 60 bytes', expect: 'envelope_truncated', envelope: ok.slice(0, 60) },
    { name: 'v2-truncated-tag', description: 'v2: the last byte (of the outer tag) cut off', expect: 'outer_auth_failed', envelope: ok.slice(0, ok.length - 1) },
    { name: 'v2-flipped-outer-tag', description: 'v2: one bit of the outer tag flipped', expect: 'outer_auth_failed', envelope: lastFlipped(ok) },
    { name: 'v2-flipped-inner-tag', description: 'v2: outer intact, one bit of the inner tag flipped', expect: 'inner_auth_failed', envelope: buildV2('v2-flipped-inner-tag', { innerSealed: lastFlipped(innerV2('y')) }) },
    { name: 'v2-unknown-version', description: 'version byte 3', expect: 'unsupported_version', envelope: buildV2('v2-unknown-version', { version: 3 }) },
    { name: 'v2-header-v1-body', description: 'version byte 2 around a v1 (NaCl sealed box) outer layer', expect: 'outer_auth_failed', envelope: build('v2-header-v1-body', { version: 2 }) },
    { name: 'v1-header-v2-body', description: 'version byte 1 around a v2 (HPKE) outer layer', expect: 'outer_auth_failed', envelope: buildV2('v1-header-v2-body', { version: 1 }) },
    { name: 'v2-inner-v1-body', description: 'v2 outer layer around a v1 (NaCl sealed box) inner layer', expect: 'inner_auth_failed', envelope: buildV2('v2-inner-v1-body', { innerSealed: seal(encodeInner(account.id, BATCH, basePoints), accountKey, seeded('z')) }) },
    { name: 'v2-inner-wrong-aad', description: 'v2: inner AAD names another batch id than the header (replayed under a new id)', expect: 'inner_auth_failed', envelope: buildV2('v2-inner-wrong-aad', { innerAadBatch: '5eed0000000000000000000000000002' }) },
    { name: 'v2-account-mismatch', description: 'v2: inner plaintext names another account than the header and the AAD', expect: 'account_mismatch', envelope: buildV2('v2-account-mismatch', { innerAccount: other.id }) },
    { name: 'v2-header-too-old', description: 'v2: created 60 days before now', expect: 'timestamp_out_of_range', envelope: buildV2('v2-header-too-old', { header: { createdAt: NOW - 60 * 86400000 } }) },
    { name: 'v2-too-many-points', description: 'v2: 2001 points', expect: 'too_many_points', envelope: buildV2('v2-too-many-points', { points: many }) },
    { name: 'v2-point-count-mismatch', description: 'v2: header announces 5 points, inner layer holds 4', expect: 'point_count_mismatch', envelope: buildV2('v2-point-count-mismatch', { header: { count: 5 } }) },
    { name: 'v2-bad-name', description: 'v2: a metric name with a space; the other point is kept', expect: 'invalid_name', envelope: buildV2('v2-bad-name', { points: one({ name: 'bad name' }) }), points: [basePoints[1]!], rejects: [{ index: 0, code: 'invalid_name' }] },
  ];
}

const CONTEXT = {
  now: NOW,
  collector_keys: [
    { key_id: collector.keyId, secret_key: toBase64(collector.secretKey) },
    { key_id: collectorOld.keyId, secret_key: toBase64(collectorOld.secretKey) },
  ],
  account: { id: account.id, secret_key: toBase64(account.secretKey) },
};

export function renderVectors(): Map<string, string> {
  const files = new Map<string, string>();
  cases().forEach((c, i) => {
    const file = `${String(i + 1).padStart(3, '0')}-${c.name}.json`;
    const body: Record<string, unknown> = { description: c.description, expect: c.expect, ...CONTEXT, envelope: toBase64(c.envelope) };
    if (c.padding) body.envelope_padded_to = c.padding;
    if (c.points || c.expect === 'ok') body.points = c.points;
    if (c.rejects) body.rejects = c.rejects;
    files.set(file, JSON.stringify(body, null, 1) + '\n');
  });
  return files;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes('--check');
  mkdirSync(VECTORS_DIR, { recursive: true });
  const existing = new Set(readdirSync(VECTORS_DIR));
  let changed = 0;
  for (const [file, text] of renderVectors()) {
    const same = existing.has(file) && readFileSync(VECTORS_DIR + file, 'utf8') === text;
    if (!same) changed++;
    if (!check && !same) writeFileSync(VECTORS_DIR + file, text);
    console.log(`${same ? 'same   ' : check ? 'DIFFERS' : 'written'} ${file}`);
  }
  if (check && changed) process.exit(1);
}
