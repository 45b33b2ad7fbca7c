/**
 * The text form's base64 validation is one linear pass (it replaced a regular expression
 * that backtracked on long input) and accepts exactly what that expression accepted.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { base64DecodedLength, fromBase64, fromTextForm, toBase64 } from '@cipherstat/protocol';

/** The previous definition of strict base64, kept as the oracle. */
const STRICT = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const chars = fc.constantFrom(...'AZaz09+/=-_ \n!é'.split(''));

describe('strict base64 (text form)', () => {
  it('accepts exactly what the old regular expression accepted', () => {
    fc.assert(
      fc.property(fc.array(chars, { maxLength: 24 }).map((a) => a.join('')), (text) => {
        expect(base64DecodedLength(text) >= 0).toBe(STRICT.test(text));
        expect(fromBase64(text) !== null).toBe(STRICT.test(text));
      }),
      { numRuns: 20_000 },
    );
  });

  it('round-trips bytes and predicts the decoded length before decoding', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const text = toBase64(bytes);
        expect(base64DecodedLength(text)).toBe(bytes.length);
        expect(fromBase64(text)).toEqual(bytes);
      }),
    );
  });

  it('refuses a 1.4 MB run of "A" whose length is not a multiple of 4 from its length alone, and sizes a valid one without decoding', () => {
    expect(base64DecodedLength('A'.repeat(1_398_101))).toBe(-1);
    expect(fromTextForm('A'.repeat(1_398_101))).toBeNull();
    expect(base64DecodedLength('A'.repeat(1_398_104))).toBe(1_048_578);
    expect(base64DecodedLength('A'.repeat(1_398_100) + '!AAA')).toBe(-1);
  });
});
