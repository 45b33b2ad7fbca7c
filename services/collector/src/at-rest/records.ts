/**
 * What the collector encrypts at rest under an account's data key: rollup aggregates and
 * dictionary entries, each bound to its row's identity (account, level, bucket, metric,
 * series and the tag key/value pseudonyms stored beside it; or account, kind, pseudonym), so
 * a ciphertext moved to another row, or a row whose `tag_values` storage rewrote (moving its
 * numbers to another group), fails to open like a tampered one.
 *
 * Format 1: `0x01 | nonce (24) | XChaCha20-Poly1305 ciphertext | tag (16)`, the identity text
 * as associated data, a random nonce per seal (192 bits: no limit on how many rows one key
 * seals). XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha, libsodium's
 * `crypto_aead_xchacha20poly1305_ietf`) through sodium-native: one native call per record, no
 * cipher object per row (the query engine opens thousands of rows per query, a tick seals
 * thousands). Until session 8 the same bytes came from @noble/ciphers' HChaCha20 and
 * node:crypto's ChaCha20-Poly1305 (a cipher object per row): records of either open with the
 * other (test/records.test.ts, fixed vectors).
 * Rows written before format 1 (secretbox with an 8-byte identity tag in front of the
 * plaintext) still open.
 *
 * Format 2 (rollup rows since then; same cipher, `0x02` first): the identity also binds the
 * row's key version and `part`, so storage cannot copy a row under another part (it does not
 * open) and a second row with the same identity is a copy that readers count once. A version
 * marker rather than a migration: stored rows keep opening as they are (format 1 rows with
 * the weaker identity until compaction re-seals them into merged rows), nothing is rewritten
 * in place, and the marker is authenticated (a row relabelled to the other format fails).
 *
 * Format 3 (rows compaction writes: merged rows and day packs; same cipher, `0x03` first, the
 * format 2 identity then `\0s` as associated data): the plaintext starts with the row's
 * `supersedes` list as compaction wrote it — `varint n`, then n × (`varint length` | UTF-8
 * entry) — and the aggregate or day pack follows. The stored `supersedes` column is then only
 * compaction's to-do list (emptied once the sources are deleted): readers decide which rows a
 * merged row replaces from the sealed list alone, so storage can neither hide a row by listing
 * it nor bring a merged-away row back while the row that merged it is stored.
 *
 * Format 4 (what compaction writes since session 15; same cipher, `0x04` first, the format 2
 * identity then `\0s4` as associated data): format 3 with the list's entries in a binary form.
 * An entry is almost always `<slot>/<part>` or `<part>` with a part of 32 hex digits after
 * `c:`, `c:d:` or nothing (compaction/pass.ts `newPart`, the tick's parts): 37–41 bytes as text,
 * and at 2,000,000 points (bench query's state) the sealed list was 65–72 % of a counter's
 * day and quarter pack (ARCHITECTURE, "Where a pack's bytes go"). Per entry a kind byte: 0 —
 * `varint length | UTF-8`, any entry as format 3 writes it; 1–6 — the entry is
 * `[<slot>/]<prefix><hex>`: kinds 4–6 have a slot (varint), prefix '' / 'c:' / 'c:d:' by
 * (kind − 1) % 3, then the 32 lowercase hex digits as 16 bytes. The writer uses 1–6 only for an
 * entry that reads back as the same text (a canonical slot, lowercase hex), so the decoded list
 * is the list written, and readers decide exactly as with format 3. Format 3 rows still open;
 * relabelled 3 ↔ 4 they do not (the marker differs).
 */
import * as nodeCrypto from 'node:crypto';
import { createRequire } from 'node:module';
import { equalBytes, fromUtf8, isZero, secretOpen, utf8 } from '@cipherstat/protocol';
import { nodeSha512 } from '@cipherstat/protocol/node';
import type { DictKind, RollupLevel } from '../storage/types.js';

export interface RollupIdentity {
  accountId: string;
  level: RollupLevel;
  bucket: number;
  metric: string;
  series: string;
  /** Tag key pseudonyms as stored (`tag_keys`), in order. */
  tagKeys: readonly string[];
  /** Tag key=value pseudonyms as stored (`tag_values`), in order. */
  tagValues: readonly string[];
  /** The key version the row is sealed under (`key_version`). */
  keyVersion: number;
  /** The row's `part`: unique within its group, so a copy under another part does not open. */
  part: string;
}

const FORMAT = 1;
/** Rollup rows since row identities bind key version and part (format 1 rows still open). */
const FORMAT_ROW = 2;
/** Rows compaction writes: format 2 plus the sealed `supersedes` list in front of the plaintext. */
const FORMAT_MERGED = 3;
/** Format 3 with the list's entries in binary (compaction writes it since session 15; format 3 rows still open). */
const FORMAT_MERGED_BINARY = 4;
const NONCE = 24;
const MAC = 16;
/** Bytes a sealed record adds to its plaintext. */
export const SEAL_OVERHEAD = 1 + NONCE + MAC;

/**
 * libsodium's XChaCha20-Poly1305 (IETF) through sodium-native: one native call per seal or open,
 * on the caller's buffers — no cipher object, no subkey in JavaScript memory. The functions we
 * call, typed here (the package ships no types).
 */
interface Sodium {
  crypto_aead_xchacha20poly1305_ietf_encrypt(c: Uint8Array, m: Uint8Array, ad: Uint8Array | null, nsec: null, npub: Uint8Array, k: Uint8Array): number;
  /** Throws when the tag does not verify. */
  crypto_aead_xchacha20poly1305_ietf_decrypt(m: Uint8Array, nsec: null, c: Uint8Array, ad: Uint8Array | null, npub: Uint8Array, k: Uint8Array): number;
}
const sodium = createRequire(import.meta.url)('sodium-native') as Sodium;

let adScratch = Buffer.allocUnsafe(1024);
/** The associated data as UTF-8, in a reused buffer (valid until the next call). */
function adBytes(ad: string): Buffer {
  prefixEnd = -1; // rowAd's fields are overwritten
  if (ad.length * 3 > adScratch.length) growAd(ad.length * 3, 0);
  return adScratch.subarray(0, adScratch.write(ad, 0, 'utf8'));
}

// Nonces come from a pool refilled 4 KiB at a time (one randomFillSync per ~170 seals).
const pool = new Uint8Array(4096);
let poolAt = pool.length;
function fillNonce(into: Uint8Array): Uint8Array {
  if (poolAt + NONCE > pool.length) {
    nodeCrypto.randomFillSync(pool);
    poolAt = 0;
  }
  into.set(pool.subarray(poolAt, poolAt + NONCE));
  pool.fill(0, poolAt, poolAt + NONCE); // a nonce never stays in the pool once used
  poolAt += NONCE;
  return into;
}

/** Seals `plain` under `key` with `ad` as associated data (format 1; rollup rows: 2, same cipher). */
export function sealRecord(key: Uint8Array, ad: string, plain: Uint8Array, format = FORMAT): Uint8Array {
  // A zeroed key was destroyed (shred, wipe) while a caller still held it: never seal under it.
  if (isZero(key)) throw new Error('refusing to seal under a destroyed (all-zero) data key');
  const out = new Uint8Array(SEAL_OVERHEAD + plain.length);
  out[0] = format;
  if (key.length !== 32) throw new Error('a data key is 32 bytes');
  const nonce = fillNonce(out.subarray(1, 1 + NONCE));
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(1 + NONCE), plain, adBytes(ad), null, nonce, key);
  return out;
}

/**
 * A plaintext's bytes: up to 4 KiB a view into a 64 KiB slab shared by the plaintexts opened
 * after it (the decrypt overwrites all of its view, and a view is never returned when the tag
 * fails), so opening a row allocates no ArrayBuffer of its own — a query opens tens of
 * thousands, and each backing store costs the garbage collector more than the view (Node's
 * own 8 KiB pool took a new one every 5 opened day packs). A full slab is dropped, never
 * reused: a view kept stays valid, and keeps at most its slab alive. A plain Uint8Array:
 * `slice` copies.
 */
const SLAB = 64 * 1024;
const SLAB_MAX_VIEW = 4 * 1024;
let slab = new ArrayBuffer(0);
let slabAt = 0;
function plainBuffer(n: number): Uint8Array {
  if (n > SLAB_MAX_VIEW) return new Uint8Array(n);
  if (slabAt + n > slab.byteLength) {
    slab = new ArrayBuffer(SLAB);
    slabAt = 0;
  }
  const view = new Uint8Array(slab, slabAt, n);
  slabAt += (n + 7) & ~7; // 8-byte aligned, like Node's pool
  return view;
}

/** The plaintext, or null when `sealed` is not a record of `format` of `ad` under `key`. */
const openRecord = (key: Uint8Array, ad: string, sealed: Uint8Array, format = FORMAT): Uint8Array | null => openRecordAd(key, adBytes(ad), sealed, format);

/** openRecord with the associated data as bytes. */
function openRecordAd(key: Uint8Array, ad: Uint8Array, sealed: Uint8Array, format: number): Uint8Array | null {
  if (sealed.length < SEAL_OVERHEAD || sealed[0] !== format) return null;
  if (key.length !== 32) throw new Error('a data key is 32 bytes');
  const plain = plainBuffer(sealed.length - SEAL_OVERHEAD);
  try {
    sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(plain, null, sealed.subarray(1 + NONCE), ad, sealed.subarray(1, 1 + NONCE), key);
  } catch {
    return null; // the tag did not verify: another key, another identity, or tampered
  }
  return plain;
}

// ---- a rollup row's identity written as bytes, without building its text (the open path) ----
// The bytes are exactly the UTF-8 of rowText / binaryText (or format 3's text): ASCII characters are copied one by
// one, a string from its first other character on is encoded by Buffer.write, a bucket that is
// a non-negative safe integer is written digit by digit (anything else as String() writes it).

/** Writes `s` as UTF-8 at `o` of adScratch (grown as needed); the offset after it. */
function putText(o: number, s: string): number {
  const n = s.length;
  if (o + n * 3 + 64 > adScratch.length) growAd(o + n * 3 + 64, o);
  const b = adScratch;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return o + b.write(s.substring(i), o, 'utf8');
    b[o++] = c;
  }
  return o;
}
/** Writes a number as `${v}` does. */
function putNumber(o: number, v: number): number {
  if (!(Number.isSafeInteger(v) && v >= 0)) return putText(o, String(v));
  if (o + 32 > adScratch.length) growAd(o + 32, o);
  let digits = 1;
  for (let x = v; x >= 10; x = Math.floor(x / 10)) digits++;
  for (let i = o + digits - 1, x = v; i >= o; i--, x = Math.floor(x / 10)) adScratch[i] = 48 + (x % 10);
  return o + digits;
}
function growAd(size: number, keep: number): void {
  if (keep < prefixEnd) prefixEnd = -1; // not copied
  const next = Buffer.allocUnsafe(Math.max(size, adScratch.length * 2));
  adScratch.copy(next, 0, 0, keep);
  adScratch = next;
  adViews.length = 0;
}
/** Views of adScratch by length (the decrypt needs the exact length): one per length, not one per row. */
const adViews: Uint8Array[] = [];
const adView = (n: number): Uint8Array => (adViews[n] ??= adScratch.subarray(0, n));
const NUL = '\u0000';

/**
 * Where the identity's fields up to the metric (account, level, bucket, metric, each followed by
 * NUL) end in adScratch when they are still there (-1: not), and what they were: a query reads
 * its rows in the table's order (level, metric, bucket, series), so consecutive rows mostly share
 * them and only the rest is written again. Anything else writing adScratch sets -1.
 */
let prefixEnd = -1;
let prefixAccount = '';
let prefixLevel = -1;
let prefixBucket = -1;
let prefixMetric = '';

/** rowText (format 2), or with `marker` appended format 3's text ('\0s') or binaryText (format 4: '\0s4'), as bytes in adScratch (valid until the next call). */
function rowAd(id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string, marker: '' | typeof MERGED_MARK | typeof BINARY_MARK): Uint8Array {
  let o = prefixEnd;
  if (o < 0 || id.bucket !== prefixBucket || id.level !== prefixLevel || id.metric !== prefixMetric || id.accountId !== prefixAccount) {
    o = putText(0, 'rollup\u0000');
    o = putText(o, id.accountId);
    o = putText(o, NUL);
    o = putNumber(o, id.level);
    o = putText(o, NUL);
    o = putNumber(o, id.bucket);
    o = putText(o, NUL);
    o = putText(o, id.metric);
    o = putText(o, NUL);
    prefixEnd = o;
    prefixAccount = id.accountId;
    prefixLevel = id.level;
    prefixBucket = id.bucket;
    prefixMetric = id.metric;
  }
  o = putText(o, id.series);
  o = putText(o, NUL);
  o = putText(o, keys);
  o = putText(o, NUL);
  o = putText(o, values);
  o = putText(o, '\u0000v');
  o = putNumber(o, id.keyVersion);
  o = putText(o, '\u0000p');
  o = putText(o, id.part);
  if (marker) o = putText(o, marker);
  return adView(o);
}

// Rows written before format 1: secretbox(identity tag (8 bytes) | plaintext).
const TAG = 8;
// One-shot hash (Node ≥ 20.12): no Hash object per row.
const oneShot = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'buffer') => Buffer }).hash;
const legacyTag = oneShot ? (text: string): Uint8Array => oneShot('sha512', text, 'buffer').subarray(0, TAG) : (text: string) => nodeSha512(text).subarray(0, TAG);
function openLegacy(key: Uint8Array, ad: string, sealed: Uint8Array): Uint8Array | null {
  const plain = secretOpen(key, sealed);
  if (!plain || plain.length < TAG || !equalBytes(plain.subarray(0, TAG), legacyTag(ad))) return null;
  return plain.subarray(TAG);
}

/** Opens a record of either format (a format-1 record first: a legacy one starts with a random byte). */
export const openAny = (key: Uint8Array, ad: string, sealed: Uint8Array): Uint8Array | null =>
  openRecord(key, ad, sealed) ?? openLegacy(key, ad, sealed);

/** Pseudonyms are decimal strings: joined with ',' they are unambiguous. */
export const joinPseudonyms = (list: readonly string[]): string => list.join(',');
const rollupText = (id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string) =>
  `rollup\u0000${id.accountId}\u0000${id.level}\u0000${id.bucket}\u0000${id.metric}\u0000${id.series}\u0000${keys}\u0000${values}`;
/** Format 2: the format 1 identity, then the key version and the part. */
const rowText = (id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string) =>
  `${rollupText(id, keys, values)}\u0000v${id.keyVersion}\u0000p${id.part}`;
/** Format 3 (read only now): the format 2 identity and a marker; format 4: another marker (a row relabelled 2, 3 or 4 as another does not open: no identity field may hold a NUL, `hasNul`). */
const MERGED_MARK = '\u0000s';
const BINARY_MARK = '\u0000s4';
const binaryText = (id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string) => `${rowText(id, keys, values)}${BINARY_MARK}`;

/** An opened rollup row: its aggregate (or day pack) and, for a format 3 or 4 row, the sealed `supersedes` list. */
export interface OpenedRollup {
  payload: Uint8Array;
  /** Whether the row seals a list (format 3 or 4). */
  readonly sealsList: boolean;
  /** The rows this row replaces, as compaction listed them (decoded on first use); undefined for rows of formats 1 and 2 (none sealed). */
  readonly supersedes: string[] | undefined;
}

/** Prefixes of a binary entry's part (kinds 1–3 without a slot, 4–6 with one). */
const PREFIXES = ['', 'c:', 'c:d:'] as const;
const RAW = 0;
const HEX_BYTES = 16;
/** Writes `n` as a varint at `o` of `out`; the offset after it. */
function putVarint(out: Uint8Array, o: number, n: number): number {
  for (; n >= 0x80; n = Math.floor(n / 0x80)) out[o++] = (n % 0x80) | 0x80;
  out[o++] = n;
  return o;
}
/** A lowercase hex digit's value, else -1. */
const hexDigit = (c: number): number => (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1);

/**
 * Writes `e` as kinds 1–6 at `o` of `out` (room for 22 bytes): `[<slot>/]<prefix><32 hex>` with a
 * canonical slot (digits, no leading zero, at most 9) and lowercase hex, which reads back as the
 * same text; the offset after it, or -1 (then it is written as text). No regex, no buffer per
 * entry: compaction seals a list with every pack.
 */
function putBinaryEntry(e: string, out: Uint8Array, o: number): number {
  let i = 0;
  let slot = -1;
  const slash = e.indexOf('/');
  if (slash >= 0) {
    if (slash === 0 || slash > 9 || (slash > 1 && e.charCodeAt(0) === 48)) return -1;
    slot = 0;
    for (; i < slash; i++) {
      const d = e.charCodeAt(i) - 48;
      if (d < 0 || d > 9) return -1;
      slot = slot * 10 + d;
    }
    i++;
  }
  const prefix = e.startsWith('c:d:', i) ? 2 : e.startsWith('c:', i) ? 1 : 0;
  i += prefix * 2;
  if (e.length - i !== HEX_BYTES * 2) return -1;
  let w = o + 1;
  out[o] = 1 + prefix + (slot < 0 ? 0 : 3);
  if (slot >= 0) w = putVarint(out, w, slot);
  for (let j = 0; j < HEX_BYTES; j++, i += 2) {
    const hi = hexDigit(e.charCodeAt(i));
    const lo = hexDigit(e.charCodeAt(i + 1));
    if (hi < 0 || lo < 0) return -1;
    out[w++] = hi * 16 + lo;
  }
  return w;
}

let listScratch = Buffer.allocUnsafe(16 * 1024);
/** Format 4's list, `varint n | n × entry` (above), then the payload: a view of a reused buffer, valid until the next call (sealed at once). */
function withBinaryList(list: readonly string[], payload: Uint8Array): Uint8Array {
  let max = 5 + payload.length;
  for (const e of list) max += 6 + Math.max(HEX_BYTES, e.length * 3);
  if (max > listScratch.length) listScratch = Buffer.allocUnsafe(Math.max(max, listScratch.length * 2));
  const out = listScratch;
  let o = putVarint(out, 0, list.length);
  for (const e of list) {
    const w = putBinaryEntry(e, out, o);
    if (w >= 0) {
      o = w;
      continue;
    }
    out[o++] = RAW;
    o = putVarint(out, o, Buffer.byteLength(e, 'utf8'));
    o += out.write(e, o, 'utf8');
  }
  out.set(payload, o);
  return out.subarray(0, o + payload.length);
}
/** Reads a varint at `at.o` (advancing it); -1 when truncated or too long. */
function readVarint(b: Uint8Array, at: { o: number }): number {
  let n = 0;
  for (let mul = 1; at.o < b.length && mul <= 2 ** 28; mul *= 0x80) {
    const x = b[at.o++]!;
    n += (x & 0x7f) * mul;
    if (x < 0x80) return n;
  }
  return -1;
}
/**
 * Steps over one list entry at `at.o`: format 3's `varint length | UTF-8`, or format 4's
 * (`binary`); its text when `text`, else ''. null when truncated or of an unknown kind.
 */
function readEntry(b: Uint8Array, at: { o: number }, binary: boolean, text: boolean): string | null {
  let slot = -1;
  let prefix = '';
  let len = HEX_BYTES;
  if (binary) {
    if (at.o >= b.length) return null;
    const kind = b[at.o++]!;
    if (kind > 6) return null;
    if (kind === RAW) binary = false;
    else {
      if (kind > 3 && (slot = readVarint(b, at)) < 0) return null;
      prefix = PREFIXES[(kind - 1) % 3]!;
    }
  }
  if (!binary && (len = readVarint(b, at)) < 0) return null;
  if (at.o + len > b.length) return null;
  const start = b.byteOffset + at.o;
  at.o += len;
  if (!text) return '';
  const buf = Buffer.from(b.buffer, start, len);
  if (!binary) return buf.toString('utf8');
  return `${slot < 0 ? '' : `${slot}/`}${prefix}${buf.toString('hex')}`;
}
/** A format 3 or 4 row opened: the list is only located here, and decoded when a reader asks for it. */
class Merged implements OpenedRollup {
  readonly sealsList = true;
  #list: string[] | undefined;
  constructor(
    readonly payload: Uint8Array,
    private readonly bytes: Uint8Array,
    private readonly count: number,
    private readonly binary: boolean,
  ) {}
  get supersedes(): string[] {
    if (this.#list) return this.#list;
    const list: string[] = [];
    const at = { o: 0 };
    readVarint(this.bytes, at);
    for (let i = 0; i < this.count; i++) list.push(readEntry(this.bytes, at, this.binary, true)!); // located by splitList: well formed
    return (this.#list = list);
  }
}
/** The list and the payload of a format 3 (or, `binary`, 4) plaintext; null when malformed (only a writer's bug: it is authenticated). */
function splitList(plain: Uint8Array, binary: boolean): OpenedRollup | null {
  const at = { o: 0 };
  const count = readVarint(plain, at);
  if (count < 0) return null;
  for (let i = 0; i < count; i++) if (readEntry(plain, at, binary, false) === null) return null;
  return new Merged(plain.subarray(at.o), plain.subarray(0, at.o), count, binary);
}

/**
 * Whether an identity column storage gave holds a NUL, the associated data's separator. No writer
 * puts one there; refused, so no field can absorb a separator and turn one format's associated
 * data into another's (a format 4 row relabelled 2 with `part` = `X\0s4`, or a format 2 row
 * relabelled 1 with the key version and part moved into `values`).
 */
const hasNul = (id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string): boolean =>
  id.part.includes('\u0000') || values.includes('\u0000') || keys.includes('\u0000') || id.series.includes('\u0000') || id.metric.includes('\u0000');

/** Format 4, 3 or 2 (key version and part bound) or, for rows written before them, format 1 / legacy. */
function openRow(key: Uint8Array, id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string, sealed: Uint8Array): OpenedRollup | null {
  if (hasNul(id, keys, values)) return null;
  if (sealed[0] === FORMAT_MERGED_BINARY) {
    const plain = openRecordAd(key, rowAd(id, keys, values, BINARY_MARK), sealed, FORMAT_MERGED_BINARY);
    if (plain) return splitList(plain, true);
  }
  if (sealed[0] === FORMAT_MERGED) {
    const plain = openRecordAd(key, rowAd(id, keys, values, MERGED_MARK), sealed, FORMAT_MERGED);
    if (plain) return splitList(plain, false);
  }
  // A legacy row starts with a random nonce byte, which is 2, 3 or 4 for 3 rows in 256: when the
  // marked format does not open, the row may still be legacy.
  const payload =
    (sealed[0] === FORMAT_ROW ? openRecordAd(key, rowAd(id, keys, values, ''), sealed, FORMAT_ROW) : null) ??
    openAny(key, rollupText(id, keys, values), sealed);
  return payload && { payload, sealsList: false, supersedes: undefined };
}
const dictAd = (accountId: string, kind: DictKind, pseudonym: string) => `dict\u0000${accountId}\u0000${kind}\u0000${pseudonym}`;

/**
 * Seals a rollup row: format 2, or with `supersedes` (the rows compaction replaces with it,
 * as in its `supersedes` column) format 4, the list sealed in binary in front of the aggregate.
 */
export function sealRollup(dataKey: Uint8Array, id: RollupIdentity, aggregate: Uint8Array, supersedes?: readonly string[]): Uint8Array {
  const keys = joinPseudonyms(id.tagKeys);
  const values = joinPseudonyms(id.tagValues);
  return supersedes === undefined
    ? sealRecord(dataKey, rowText(id, keys, values), aggregate, FORMAT_ROW)
    : sealRecord(dataKey, binaryText(id, keys, values), withBinaryList(supersedes, aggregate), FORMAT_MERGED_BINARY);
}

/**
 * sealRollup (format 2) into `out` (SEAL_OVERHEAD + aggregate.length bytes, not overlapping
 * it), with the tag pseudonym lists already joined by ',': no identity text, no buffer per row
 * (a tick seals thousands into one). The same bytes as sealRollup for the same nonce.
 */
export function sealRollupInto(dataKey: Uint8Array, id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, tagKeys: string, tagValues: string, aggregate: Uint8Array, out: Uint8Array): void {
  if (isZero(dataKey)) throw new Error('refusing to seal under a destroyed (all-zero) data key');
  if (dataKey.length !== 32) throw new Error('a data key is 32 bytes');
  if (out.length !== SEAL_OVERHEAD + aggregate.length) throw new Error('a sealed row is SEAL_OVERHEAD bytes longer than its aggregate');
  out[0] = FORMAT_ROW;
  const nonce = fillNonce(out.subarray(1, 1 + NONCE));
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(out.subarray(1 + NONCE), aggregate, rowAd(id, tagKeys, tagValues, ''), null, nonce, dataKey);
}

/** A rollup row of any format opened: its payload and sealed list. */
export const openRollupRow = (dataKey: Uint8Array, id: RollupIdentity, sealed: Uint8Array): OpenedRollup | null =>
  openRow(dataKey, id, joinPseudonyms(id.tagKeys), joinPseudonyms(id.tagValues), sealed);

/** The payload (aggregate or day pack) of a rollup row of any format. */
export const openRollup = (dataKey: Uint8Array, id: RollupIdentity, sealed: Uint8Array): Uint8Array | null =>
  openRollupRow(dataKey, id, sealed)?.payload ?? null;

/**
 * openRollup with the tag pseudonym lists already joined by ',' (what the query engine
 * selects with `arrayStringConcat(tag_keys, ',')`): no arrays per row in the hot loop.
 */
export const openRollupJoined = (
  dataKey: Uint8Array,
  id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>,
  tagKeys: string,
  tagValues: string,
  sealed: Uint8Array,
): OpenedRollup | null => openRow(dataKey, id, tagKeys, tagValues, sealed);

/** Whether `key` opens a stored dictionary ciphertext under its row's identity (`verify`, tests). */
export const opensDict = (key: Uint8Array, accountId: string, kind: DictKind, pseudonym: string, sealed: Uint8Array): boolean =>
  openAny(key, dictAd(accountId, kind, pseudonym), sealed) !== null;

/** Dictionary plaintext: the metric name (with its kind), the tag key, or the tag key and value. */
export interface DictEntry {
  text: string;
  /** metric kind for kind 0, tag key for kind 2 */
  extra?: string;
}

export const sealDict = (dataKey: Uint8Array, accountId: string, kind: DictKind, pseudonym: string, entry: DictEntry): Uint8Array =>
  sealRecord(dataKey, dictAd(accountId, kind, pseudonym), utf8(JSON.stringify(entry)));

export function openDict(dataKey: Uint8Array, accountId: string, kind: DictKind, pseudonym: string, sealed: Uint8Array): DictEntry | null {
  const plain = openAny(dataKey, dictAd(accountId, kind, pseudonym), sealed);
  if (!plain) return null;
  try {
    return JSON.parse(fromUtf8(plain)) as DictEntry;
  } catch {
    return null;
  }
}
