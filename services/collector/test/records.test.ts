/**
 * The at-rest record format (src/at-rest/records.ts): XChaCha20-Poly1305 with the row identity as
 * associated data (libsodium through sodium-native), checked byte for byte against
 * @noble/ciphers' own xchacha20poly1305 and against the construction used before sodium-native
 * (HChaCha20 + node:crypto's ChaCha20-Poly1305, bench/records-previous.mjs, the baseline of `bench records`);
 * records that implementation sealed (fixed vectors, support/records-vectors.json) still open;
 * legacy secretbox rows still open; anything moved, relabelled or tampered does not; a destroyed
 * (zeroed) key seals nothing; a sealed list (format 4, binary; format 3, text) gives back the list
 * written, and a fixed format 4 vector opens.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { concat, randomBytes, secretSeal } from '@cipherstat/protocol';
import { nodeSha512 } from '@cipherstat/protocol/node';
import { previousOpen, previousSeal } from '../../../bench/records-previous.mjs';
import { RowReader, type StoredRow } from '../src/rollup/rows.js';
import { addPoint, decodeAggregate, emptyAggregate, encodeAggregate } from '../src/rollup/aggregate.js';
import { encodeDayPack } from '../src/rollup/pack.js';
import { SEAL_OVERHEAD, openAny, openDict, openRollup, openRollupJoined, openRollupRow, opensDict, sealDict, sealRecord, sealRollup, sealRollupInto } from '../src/at-rest/records.js';

const id = { accountId: 'acct_x', level: 1 as const, bucket: 1_790_000_000_000, metric: '123', series: '456', tagKeys: ['7', '8'], tagValues: ['9', '10'], keyVersion: 3, part: 'p1' };
const AD = 'rollup\u0000acct_x\u00001\u00001790000000000\u0000123\u0000456\u00007,8\u00009,10';
/** A copy of a sealed row with another format byte (relabelled). */
const asFormat = (sealed: Uint8Array, format: number): Uint8Array => {
  const relabelled = sealed.slice();
  relabelled[0] = format;
  return relabelled;
};

describe('at-rest records', () => {
  it('are XChaCha20-Poly1305 records: 0x01 | nonce | ciphertext | tag, the identity as associated data', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 3000 }), fc.string(), (key, plain, ad) => {
        const sealed = sealRecord(key, ad, plain);
        expect(sealed.length).toBe(plain.length + SEAL_OVERHEAD);
        expect(sealed[0]).toBe(1);
        const nonce = sealed.subarray(1, 25);
        const reference = xchacha20poly1305(key, nonce, new TextEncoder().encode(ad)).encrypt(plain);
        expect(Buffer.from(sealed.subarray(25)).equals(Buffer.from(reference))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('open only under the same key and the same identity', () => {
    const key = randomBytes(32);
    const plain = randomBytes(200);
    const sealed = sealRollup(key, id, plain);
    expect(Buffer.from(openRollup(key, id, sealed)!).equals(Buffer.from(plain))).toBe(true);
    expect(Buffer.from(openRollupJoined(key, id, '7,8', '9,10', sealed)!.payload).equals(Buffer.from(plain))).toBe(true);
    expect(openRollup(randomBytes(32), id, sealed)).toBeNull();
    expect(sealed[0]).toBe(2); // rollup rows: format 2, key version and part bound too
    for (const moved of [{ bucket: id.bucket + 60_000 }, { level: 0 as const }, { series: '457' }, { accountId: 'acct_y' }, { tagValues: ['9', '11'] }, { tagKeys: ['8', '7'] }, { part: 'p2' }, { keyVersion: 4 }]) {
      expect(openRollup(key, { ...id, ...moved }, sealed)).toBeNull();
    }
    const entry = { text: 'page.load', extra: 'histogram' };
    const d = sealDict(key, 'acct_x', 0, '99', entry);
    expect(openDict(key, 'acct_x', 0, '99', d)).toEqual(entry);
    expect(opensDict(key, 'acct_x', 0, '99', d)).toBe(true);
    expect(openDict(key, 'acct_x', 1, '99', d)).toBeNull();
    expect(opensDict(key, 'acct_x', 0, '98', d)).toBe(false);
  });

  it('open rows whose identity text is written as bytes on the open path (non-ASCII, odd numbers, long texts) exactly as sealed from the text', () => {
    const key = randomBytes(32);
    const plain = randomBytes(50);
    const long = 'x'.repeat(3000);
    const odd = [
      { accountId: 'acct_ünï€😀' },
      { part: 'p\u00e9\ud83d\ude00' },
      { part: 'lone\ud800surrogate' },
      { bucket: 0 },
      { bucket: -60_000 },
      { bucket: 1.5 },
      { bucket: 2 ** 53 + 2 },
      { bucket: 1e21 },
      { keyVersion: 0 },
      { keyVersion: 4_294_967_295 },
      { metric: long, series: `${long}é` },
      {}, // after a long one: the short views again
    ];
    for (const change of odd) {
      const row = { ...id, ...change };
      for (const list of [undefined, ['a', 'é']]) {
        const sealed = sealRollup(key, row, plain, list); // the identity as text
        const opened = openRollupJoined(key, row, '7,8', '9,10', sealed);
        expect(opened && Buffer.from(opened.payload).equals(Buffer.from(plain)), JSON.stringify(change).slice(0, 80)).toBe(true);
        expect(openRollupJoined(key, row, '7,8', '9,11', sealed)).toBeNull();
        expect(openRollupJoined(key, { ...row, part: `${row.part}x` }, '7,8', '9,10', sealed)).toBeNull();
      }
    }
  });

  it('sealRollupInto writes format 2 into the caller\'s buffer: the identity as bytes, exactly the XChaCha20-Poly1305 of the format 2 text, and it opens as sealRollup\'s rows do', () => {
    const key = randomBytes(32);
    const long = 'x'.repeat(3000);
    const odd = [{ accountId: 'acct_ünï€😀' }, { part: 'lone\ud800surrogate' }, { bucket: -60_000 }, { bucket: 1.5 }, { bucket: 1e21 }, { keyVersion: 4_294_967_295 }, { metric: long, series: `${long}é` }, {}];
    for (const change of odd) {
      const row = { ...id, ...change };
      for (const n of [0, 1, 50, 700]) {
        const plain = randomBytes(n);
        const arena = new Uint8Array(SEAL_OVERHEAD + n + 10); // a view into a bigger buffer, as a tick seals its rows
        const sealed = arena.subarray(5, 5 + SEAL_OVERHEAD + n);
        sealRollupInto(key, row, '7,8', '9,10', plain, sealed);
        expect(sealed[0]).toBe(2);
        const text = `rollup\u0000${row.accountId}\u0000${row.level}\u0000${row.bucket}\u0000${row.metric}\u0000${row.series}\u00007,8\u00009,10\u0000v${row.keyVersion}\u0000p${row.part}`;
        const reference = xchacha20poly1305(key, sealed.subarray(1, 25), new TextEncoder().encode(text)).encrypt(plain);
        expect(Buffer.from(sealed.subarray(25)).equals(Buffer.from(reference)), JSON.stringify(change).slice(0, 80)).toBe(true);
        expect(Buffer.from(openRollup(key, row, sealed)!).equals(Buffer.from(plain))).toBe(true);
        expect(openRollup(key, { ...row, tagValues: ['9', '11'] }, sealed)).toBeNull();
        expect(arena[0]! | arena[arena.length - 1]!).toBe(0); // nothing written outside its view
      }
    }
    expect(() => sealRollupInto(key, id, '7,8', '9,10', randomBytes(3), new Uint8Array(SEAL_OVERHEAD + 4))).toThrow(/longer/);
    expect(() => sealRollupInto(new Uint8Array(32), id, '7,8', '9,10', randomBytes(3), new Uint8Array(SEAL_OVERHEAD + 3))).toThrow(/destroyed/);
  });

  it('seal what a merged row replaces (format 4): the list in binary in front of the plaintext, under the format 2 identity and a marker', () => {
    const key = randomBytes(32);
    const plain = randomBytes(120);
    const [hexA, hexB, hexC] = ['06494934b3798b88eac1734c9b52deb5', 'c4ea517463cbbf9a6053c012d0d2694b', 'f6f56b22152beaa8e7d419a1c1a5b1fd'];
    // what compaction lists (slot/part, older packs, tick parts) in binary; anything else as text
    const list = [`18/c:${hexA}`, `c:d:${hexB}`, hexC, `7/${hexC}`, `0/c:d:${hexA}`, `c:${hexB}`, 'c:0f', 'p-1', '13/c:ab', 'é', `07/c:${hexA}`, `5/c:${hexA.toUpperCase()}`, `1234567890/c:${hexA}`, `c:${hexA}x`, `x/${hexA}`];
    const sealed = sealRollup(key, { ...id, part: 'c:x' }, plain, list);
    expect(sealed[0]).toBe(4);
    const hex = (h: string) => Buffer.from(h, 'hex');
    const text = (e: string) => concat(Uint8Array.of(0, Buffer.byteLength(e)), Buffer.from(e));
    // byte for byte: varint count, then per entry a kind byte (1–6: [varint slot] | 16 bytes of hex; 0: varint length | UTF-8), then the payload
    const body = concat(
      Uint8Array.of(list.length),
      Uint8Array.of(5, 18), hex(hexA),
      Uint8Array.of(3), hex(hexB),
      Uint8Array.of(1), hex(hexC),
      Uint8Array.of(4, 7), hex(hexC),
      Uint8Array.of(6, 0), hex(hexA),
      Uint8Array.of(2), hex(hexB),
      ...list.slice(6).map(text),
      plain,
    );
    const ad = `${AD}\u0000v3\u0000pc:x\u0000s4`;
    const reference = xchacha20poly1305(key, sealed.subarray(1, 25), new TextEncoder().encode(ad)).encrypt(body);
    expect(Buffer.from(sealed.subarray(25)).equals(Buffer.from(reference))).toBe(true);
    const opened = openRollupRow(key, { ...id, part: 'c:x' }, sealed)!;
    expect(opened.supersedes).toEqual(list);
    expect(Buffer.from(opened.payload).equals(Buffer.from(plain))).toBe(true);
    expect(openRollupJoined(key, { ...id, part: 'c:x' }, '7,8', '9,10', sealed)!.supersedes).toEqual(list);
    expect(openRollupRow(key, { ...id, part: 'c:y' }, sealed)).toBeNull();
    expect(openRollupRow(key, { ...id, part: 'c:x' }, sealRollup(key, { ...id, part: 'c:x' }, plain, []))!.supersedes).toEqual([]);
    // rows of formats 1 and 2 seal no list
    expect(openRollupRow(key, id, sealRollup(key, id, plain))!.supersedes).toBeUndefined();
    // relabelled 4 → 2 or 3, or 2 → 4: does not open
    for (const f of [2, 3]) expect(openRollupRow(key, { ...id, part: 'c:x' }, asFormat(sealed, f))).toBeNull();
    expect(openRollupRow(key, id, asFormat(sealRollup(key, id, plain), 4))).toBeNull();
    // a separator absorbed by a field storage controls: 4 relabelled 2 under part `c:x\0s4` has
    // the same associated data as the format 4 row, and 2 relabelled 1 with the key version and
    // part moved into the tag values has the same as the format 2 row: neither opens
    expect(openRollupRow(key, { ...id, part: 'c:x\u0000s4' }, asFormat(sealed, 2))).toBeNull();
    expect(openRollupJoined(key, id, '7,8', '9,10\u0000v3\u0000pp1', asFormat(sealRollup(key, id, plain), 1))).toBeNull();
    // a 4 that is really a malformed list (only a writer's bug: it is authenticated) does not open:
    // an unknown kind, a truncated entry, a missing slot, text past the end, a count or a slot
    // varint longer than 5 bytes; the well-formed list beside them opens
    const long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    for (const bad of [Uint8Array.of(1, 7, ...hex(hexA)), Uint8Array.of(1, 1, 1, 2), Uint8Array.of(1, 4), Uint8Array.of(2, 0, 1, 97), Uint8Array.of(1, 0, 5, 97), Uint8Array.of(...long), Uint8Array.of(1, 4, ...long, ...hex(hexA))]) {
      expect(openRollupRow(key, { ...id, part: 'c:x' }, sealRecord(key, ad, bad, 4))).toBeNull();
    }
    expect(openRollupRow(key, { ...id, part: 'c:x' }, sealRecord(key, ad, Uint8Array.of(1, 4, 7, ...hex(hexA)), 4))!.supersedes).toEqual([`7/${hexA}`]);
  });

  it('a binary list (format 4) takes 16 bytes, a kind byte and the slot\'s varint for every entry compaction writes, and gives it back', () => {
    const key = randomBytes(32);
    const varintLength = (n: number) => (n < 2 ** 7 ? 1 : n < 2 ** 14 ? 2 : n < 2 ** 21 ? 3 : n < 2 ** 28 ? 4 : 5);
    const entry = fc
      .tuple(fc.option(fc.nat({ max: 999_999_999 }), { nil: undefined }), fc.constantFrom('', 'c:', 'c:d:'), fc.uint8Array({ minLength: 16, maxLength: 16 }))
      .map(([slot, prefix, bytes]) => ({ text: `${slot === undefined ? '' : `${slot}/`}${prefix}${Buffer.from(bytes).toString('hex')}`, size: 1 + (slot === undefined ? 0 : varintLength(slot)) + 16 }));
    const fixed = [128, 16_383, 16_384, 999_999_999].map((slot) => ({ text: `${slot}/c:${'ab'.repeat(16)}`, size: 1 + varintLength(slot) + 16 }));
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 200 }), fc.uint8Array({ maxLength: 300 }), (drawn, plain) => {
        const entries = [...drawn, ...fixed];
        const sealed = sealRollup(key, { ...id, part: 'c:x' }, plain, entries.map((e) => e.text));
        expect(sealed.length).toBe(SEAL_OVERHEAD + varintLength(entries.length) + entries.reduce((n, e) => n + e.size, 0) + plain.length);
        const opened = openRollupRow(key, { ...id, part: 'c:x' }, sealed)!;
        expect(opened.supersedes).toEqual(entries.map((e) => e.text));
        expect(Buffer.from(opened.payload).equals(Buffer.from(plain))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('a binary list (format 4) gives back every list it was given', () => {
    const key = randomBytes(32);
    const hexChar = fc.constantFrom(...'0123456789abcdefABCDEF');
    const entry = fc.oneof(
      fc.tuple(fc.option(fc.nat({ max: 2 ** 31 }), { nil: undefined }), fc.constantFrom('', 'c:', 'c:d:', 'd:', 'C:'), fc.array(hexChar, { minLength: 31, maxLength: 33 })).map(
        ([slot, prefix, h]) => `${slot === undefined ? '' : `${slot}/`}${prefix}${h.join('')}`,
      ),
      fc.string(),
      fc.string({ unit: 'grapheme' }),
      fc.string({ unit: 'binary-ascii' }), // NUL and the kind bytes 1–6 inside text entries
    );
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 40 }), fc.uint8Array({ maxLength: 300 }), (list, plain) => {
        const opened = openRollupRow(key, { ...id, part: 'c:x' }, sealRollup(key, { ...id, part: 'c:x' }, plain, list))!;
        expect(opened.supersedes).toEqual(list);
        expect(Buffer.from(opened.payload).equals(Buffer.from(plain))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('rows compaction sealed in format 3 (the list as text) still open, with their list', () => {
    const key = randomBytes(32);
    const plain = randomBytes(120);
    const list = ['c:0f', 'p-1', '13/c:ab', 'é'];
    // varint count, then varint length | UTF-8 per entry, then the payload; AD `<format 2 identity>\0s`
    const body = concat(Uint8Array.of(4, 4), Buffer.from('c:0f'), Uint8Array.of(3), Buffer.from('p-1'), Uint8Array.of(7), Buffer.from('13/c:ab'), Uint8Array.of(2), Buffer.from('é'), plain);
    const sealed = sealRecord(key, `${AD}\u0000v3\u0000pc:x\u0000s`, body, 3);
    const opened = openRollupRow(key, { ...id, part: 'c:x' }, sealed)!;
    expect(opened.supersedes).toEqual(list);
    expect(Buffer.from(opened.payload).equals(Buffer.from(plain))).toBe(true);
    expect(openRollupJoined(key, { ...id, part: 'c:x' }, '7,8', '9,10', sealed)!.supersedes).toEqual(list);
    expect(openRollupRow(key, { ...id, part: 'c:y' }, sealed)).toBeNull();
    // relabelled 3 → 2 or 4, or 2 → 3: does not open
    for (const f of [2, 4]) expect(openRollupRow(key, { ...id, part: 'c:x' }, asFormat(sealed, f))).toBeNull();
    expect(openRollupRow(key, id, asFormat(sealRollup(key, id, plain), 3))).toBeNull();
  });

  it('an upgraded table: a day pack sealed in format 3 and its repack in format 4 count once, and the rows either list is left out', () => {
    const key = randomBytes(32);
    const H = 3_600_000;
    const day = Math.floor(1_790_000_000_000 / (24 * H)) * 24 * H;
    const [hexA, hexB] = ['06494934b3798b88eac1734c9b52deb5', 'c4ea517463cbbf9a6053c012d0d2694b'];
    const base = { accountId: 'acct_x', metric: '123', series: '456', tagKeys: ['7', '8'], tagValues: ['9', '10'], keyVersion: 1 };
    const agg = (n: number, t: number) => encodeAggregate(addPoint(emptyAggregate(), n, t));
    const row = (level: 1 | 2, bucket: number, part: string, a: Uint8Array): StoredRow => ({ l: level, b: bucket, v: 1, s: '456', a, k: '7,8', t: '9,10', m: '123', p: part, u: [] });
    // the old pack (what compaction wrote before format 4): hour 1, listing hour row h1, its list as text
    const oldPart = `c:d:${hexA}`;
    const oldPack = encodeDayPack([{ hour: 1, bytes: agg(5, day + H) }]);
    const oldBody = concat(Uint8Array.of(1, 4), Buffer.from('1/h1'), oldPack);
    const oldAd = `rollup\u0000acct_x\u00002\u0000${day}\u0000123\u0000456\u00007,8\u00009,10\u0000v1\u0000p${oldPart}\u0000s`;
    const old = row(2, day, oldPart, sealRecord(key, oldAd, oldBody, 3));
    const h1 = row(1, day + H, 'h1', sealRollup(key, { ...base, level: 1, bucket: day + H, part: 'h1' }, agg(5, day + H)));
    const h2 = row(1, day + 2 * H, 'h2', sealRollup(key, { ...base, level: 1, bucket: day + 2 * H, part: 'h2' }, agg(7, day + 2 * H)));
    // the repack (format 4): hours 1 and 2, listing the old pack and the late hour row h2
    const newPart = `c:d:${hexB}`;
    const repack = encodeDayPack([{ hour: 1, bytes: agg(5, day + H) }, { hour: 2, bytes: agg(7, day + 2 * H) }]);
    const neu = row(2, day, newPart, sealRollup(key, { ...base, level: 2, bucket: day, part: newPart }, repack, [oldPart, '2/h2']));
    expect([old.a[0], neu.a[0]]).toEqual([3, 4]);
    const read = (rows: StoredRow[]) => {
      const reader = new RowReader({ accountId: 'acct_x', dataKey: () => key, level: (r) => r.l as 1 | 2 });
      let sum = 0;
      for (const c of reader.cells(rows)) sum += decodeAggregate(c.bytes).sum;
      return { sum, failed: reader.failed };
    };
    // before the repack: the old pack and the late row; h1 (named by the old pack's list) put back is left out
    expect(read([h1, old, h2])).toEqual({ sum: 12, failed: 0 });
    // after it: the repack alone counts, whatever else storage still holds or puts back
    for (const rows of [[neu], [old, neu], [h2, old, h1, neu], [neu, h2]]) expect(read(rows)).toEqual({ sum: 12, failed: 0 });
  });

  it('a format 4 row sealed with fixed bytes (a vector) opens to its list and payload', () => {
    // key byte i = 13i + 1, nonce byte i = 29i + 5, payload byte i = 7i + 3 (40 bytes); a day pack's identity
    const key = Uint8Array.from({ length: 32 }, (_, i) => (i * 13 + 1) & 255);
    const vid = { accountId: 'acct_vec', level: 2 as const, bucket: 1_790_000_000_000, metric: '123', series: '456', tagKeys: ['7', '8'], tagValues: ['9', '10'], keyVersion: 2, part: 'c:d:vec' };
    const sealed = Buffer.from(
      '0405223f5c7996b3d0ed0a2744617e9bb8d5f20f2c496683a0049c824b028d679b5333b4da6b2bbcdfed6921576f90311113a5decffcb1a7c29915a4689e89d4425d22b03f4bfbc640b14a3f84caf224e367a8ddd4fe4a07a7299b82f07fde3bf03f301c38a5c191d4e0dcd27f8c947c50ff7251c70ed9d91c5ddb145631c714f337b6be3cb01b29d3c46f',
      'hex',
    );
    const opened = openRollupRow(key, vid, sealed)!;
    expect(opened.supersedes).toEqual(['18/c:06494934b3798b88eac1734c9b52deb5', 'c:d:c4ea517463cbbf9a6053c012d0d2694b', 'f6f56b22152beaa8e7d419a1c1a5b1fd', 'p-1']);
    expect(Buffer.from(opened.payload).equals(Buffer.from(Uint8Array.from({ length: 40 }, (_, i) => (i * 7 + 3) & 255)))).toBe(true);
    expect(openRollupRow(key, { ...vid, part: 'c:d:other' }, sealed)).toBeNull();
  });

  it('refuse every tampered byte and every truncation', () => {
    const key = randomBytes(32);
    const sealed = sealRollup(key, id, randomBytes(64));
    for (let i = 0; i < sealed.length; i++) {
      const t = sealed.slice();
      t[i] = t[i]! ^ 0x01;
      expect(openRollup(key, id, t)).toBeNull();
    }
    for (let n = 0; n < sealed.length; n++) expect(openRollup(key, id, sealed.subarray(0, n))).toBeNull();
  });

  it('still open rows written in format 1 (identity without key version and part), but not as format 2', () => {
    const key = randomBytes(32);
    const plain = randomBytes(100);
    const v1 = sealRecord(key, AD, plain);
    expect(v1[0]).toBe(1);
    expect(Buffer.from(openRollup(key, { ...id, part: 'any' }, v1)!).equals(Buffer.from(plain))).toBe(true);
    expect(openRollup(key, { ...id, series: '457' }, v1)).toBeNull();
    // relabelled as format 2 (or a format 2 row as format 1): the tag no longer verifies
    expect(openRollup(key, id, asFormat(v1, 2))).toBeNull();
    expect(openRollup(key, id, asFormat(sealRollup(key, id, plain), 1))).toBeNull();
  });

  it('still open rows written before format 1 (secretbox with an 8-byte identity tag inside)', () => {
    const key = randomBytes(32);
    const plain = randomBytes(100);
    // the nonce comes first and is random: a legacy row can start with any format's marker
    for (const first of [0, 1, 2, 3, 4, 200]) {
      const nonce = (n: number) => { const b = randomBytes(n); b[0] = first; return b; };
      const legacy = secretSeal(key, concat(nodeSha512(AD).subarray(0, 8), plain), nonce);
      expect(legacy[0]).toBe(first);
      expect(Buffer.from(openRollup(key, id, legacy)!).equals(Buffer.from(plain)), `first byte ${first}`).toBe(true);
      expect(openRollup(key, { ...id, series: '457' }, legacy)).toBeNull();
    }
  });

  describe('across implementations (sodium-native now; HChaCha20 + node:crypto before session 8)', () => {
    const vectors = JSON.parse(readFileSync(new URL('./support/records-vectors.json', import.meta.url), 'utf8')) as {
      key: string;
      id: typeof id;
      records: { kind: 'record' | 'rollup' | 'dict'; format: number; ad?: string; n?: number; supersedes?: string[]; entry?: { text: string; extra?: string }; sealed: string }[];
    };
    const vkey = Buffer.from(vectors.key, 'hex');
    const plainOf = (n: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 255);

    it('records sealed by the previous implementation (fixed vectors) open, byte for byte, and fail when tampered', () => {
      expect(vectors.records.length).toBe(8);
      for (const r of vectors.records) {
        const sealed = Buffer.from(r.sealed, 'hex');
        expect(sealed[0]).toBe(r.format);
        if (r.kind === 'dict') {
          expect(openDict(vkey, 'acct_vec', 0, '99', sealed)).toEqual(r.entry);
          expect(openDict(vkey, 'acct_vec', 0, '98', sealed)).toBeNull();
          continue;
        }
        const rid = r.format === 3 ? { ...vectors.id, part: 'c:vec' } : vectors.id;
        const opened = r.kind === 'record' ? openAny(vkey, r.ad!, sealed) : openRollupRow(vkey, rid, sealed)?.payload;
        expect(Buffer.from(opened!).equals(Buffer.from(plainOf(r.n!))), `${r.kind} ${r.format} ${r.n}`).toBe(true);
        if (r.format === 3) expect(openRollupRow(vkey, rid, sealed)!.supersedes).toEqual(r.supersedes);
        // the previous implementation (kept below) opens its own vector too: the vectors are what it wrote
        if (r.kind === 'record') expect(Buffer.from(previousOpen(vkey, r.ad!, sealed)!).equals(Buffer.from(plainOf(r.n!)))).toBe(true);
        // one flipped bit anywhere (first, inside the nonce, body, tag, last) and it no longer opens
        for (const at of [1, 12, 25, sealed.length - 17, sealed.length - 1]) {
          const t = Buffer.from(sealed);
          t[at] = t[at]! ^ 0x80;
          expect(r.kind === 'record' ? openAny(vkey, r.ad!, t) : openRollupRow(vkey, rid, t), `${r.kind} ${r.n} byte ${at}`).toBeNull();
        }
      }
    });

    it('records sealed now open with the previous implementation and the reverse, at 0 B to 5 KB', () => {
      const key = randomBytes(32);
      for (const n of [0, 1, 15, 16, 17, 63, 64, 65, 100, 1024, 5120]) {
        for (const ad of ['', 'a', AD, AD.repeat(40), 'ü€😀']) {
          const plain = plainOf(n);
          const now = sealRecord(key, ad, plain);
          expect(Buffer.from(previousOpen(key, ad, now)!).equals(Buffer.from(plain)), `now → before, ${n} B`).toBe(true);
          const before = previousSeal(key, ad, plain);
          expect(Buffer.from(openAny(key, ad, before)!).equals(Buffer.from(plain)), `before → now, ${n} B`).toBe(true);
          // same nonce, same bytes
          expect(Buffer.from(previousSeal(key, ad, plain, now.subarray(1, 25))).equals(Buffer.from(now))).toBe(true);
          expect(openAny(key, `${ad}x`, before)).toBeNull();
        }
      }
    });

    it('refuse to seal under a destroyed (zeroed) key, and a zeroed key opens nothing sealed under the real one', () => {
      const key = randomBytes(32);
      const sealed = sealRollup(key, id, plainOf(120));
      const destroyed = new Uint8Array(32);
      expect(() => sealRecord(destroyed, AD, plainOf(10))).toThrow(/destroyed/);
      expect(() => sealRollup(destroyed, id, plainOf(10))).toThrow(/destroyed/);
      expect(() => sealDict(destroyed, 'acct_x', 0, '1', { text: 't' })).toThrow(/destroyed/);
      key.fill(0); // what shred does to a key still held
      expect(openRollup(key, id, sealed)).toBeNull();
      expect(() => sealRollup(key, id, plainOf(10))).toThrow(/destroyed/);
      expect(() => sealRecord(randomBytes(31), AD, plainOf(10))).toThrow(/32 bytes/);
    });

    it('nonces differ between seals and the pool keeps none it handed out', () => {
      const key = randomBytes(32);
      const seen = new Set<string>();
      for (let i = 0; i < 1000; i++) seen.add(Buffer.from(sealRecord(key, '', plainOf(1)).subarray(1, 25)).toString('hex'));
      expect(seen.size).toBe(1000);
    });
  });
});
