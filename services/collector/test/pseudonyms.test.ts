/**
 * Pseudonyms go through libsodium's crypto_auth (HMAC-SHA-512-256), before that node:crypto's
 * HMAC-SHA-512: they must be byte-identical to the protocol's tweetnacl `hmacSha512`, which every
 * pseudonym stored so far was computed with.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { hmacSha512, isZero, utf8 } from '@cipherstat/protocol';
import { nodeHmacSha512 } from '@cipherstat/protocol/node';
import { Pseudonyms, type PseudonymLabel } from '../src/at-rest/pseudonyms.js';

/** The implementation before node:crypto: first 8 bytes of the tweetnacl HMAC, as a UInt64. */
function reference(macKey: Uint8Array, label: PseudonymLabel, text: string): string {
  const mac = hmacSha512(macKey, utf8(`${label}\u0000${text}`));
  return new DataView(mac.buffer, mac.byteOffset, 8).getBigUint64(0).toString();
}

// (an all-zero key is a destroyed one: refused, below)
const key32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).filter((k) => !isZero(k));
// Any UTF-16 string, lone surrogates included (both sides encode them as U+FFFD).
const text = fc.string({ unit: 'binary', maxLength: 300 });

describe('pseudonyms through node:crypto', () => {
  it('node HMAC-SHA-512 equals the tweetnacl HMAC for random keys (any length) and messages', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 1000 }), (key, message) => {
        expect(Buffer.from(nodeHmacSha512(key)(message)).toString('hex')).toBe(Buffer.from(hmacSha512(key, message)).toString('hex'));
      }),
      { numRuns: 500 },
    );
  });

  it('every kind of pseudonym equals the tweetnacl-based one on random keys, names and tags', () => {
    fc.assert(
      fc.property(key32, text, text, text, fc.array(fc.tuple(text, text), { maxLength: 5 }), (macKey, name, k, v, tags) => {
        const p = new Pseudonyms(macKey);
        const sorted = tags.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        expect(p.metric(name)).toBe(reference(macKey, 'metric', name));
        expect(p.tagKey(k)).toBe(reference(macKey, 'key', k));
        expect(p.tagValue(k, v)).toBe(reference(macKey, 'value', `${k}\u0000${v}`));
        expect(p.series(sorted)).toBe(reference(macKey, 'series', sorted.map(([a, b]) => `${a}\u0000${b}`).join('\u0000')));
        // Cached answers are the same answers.
        expect(p.metric(name)).toBe(reference(macKey, 'metric', name));
        // node:crypto's HMAC (what computed them before libsodium's) agrees too.
        const mac = nodeHmacSha512(macKey)(`metric\u0000${name}`);
        expect(p.metric(name)).toBe(new DataView(mac.buffer, mac.byteOffset, 8).getBigUint64(0).toString());
      }),
      { numRuns: 500 },
    );
  });

  it('a MAC key zeroed (shred, wipe) refuses new pseudonyms instead of giving those of the zero key; cached ones are still answered', () => {
    const macKey = new Uint8Array(32).fill(7);
    const p = new Pseudonyms(macKey);
    const known = p.metric('orders');
    macKey.fill(0);
    expect(p.metric('orders')).toBe(known);
    expect(() => p.metric('revenue')).toThrow(/destroyed/);
    expect(() => new Pseudonyms(new Uint8Array(16))).toThrow(/32 bytes/);
  });
});
