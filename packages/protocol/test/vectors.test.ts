import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openssl } from '@cipherstat/protocol/node';
import { libsodium } from './support/libsodium.js';
import { ERROR_CODES } from '@cipherstat/protocol';
import { loadVectors, runVector, VECTORS_DIR } from './support/vectors.js';
import { renderVectors } from '../scripts/make-vectors.js';

const vectors = loadVectors();

describe('envelope v1 test vectors', () => {
  it('has at least 16 cases, one per file, each with a known expectation', () => {
    expect(vectors.length).toBeGreaterThanOrEqual(16);
    for (const v of vectors) expect(['ok', ...ERROR_CODES]).toContain(v.expect);
  });

  it('covers the required failure kinds', () => {
    const expected = new Set(vectors.map((v) => v.expect));
    for (const code of ['ok', 'envelope_truncated', 'unsupported_version', 'unknown_key_id', 'outer_auth_failed', 'inner_auth_failed', 'account_mismatch', 'batch_mismatch', 'envelope_too_large', 'too_many_points', 'invalid_name', 'invalid_value', 'low_order_key']) {
      expect(expected, code).toContain(code);
    }
  });

  for (const v of vectors) {
    it(`${v.file}: ${v.description} → ${v.expect}`, () => {
      // tweetnacl (v1) and the default; libsodium and node:crypto for both layers of both versions
      for (const backend of [undefined, libsodium, openssl]) {
        const r = runVector(v, backend);
        expect(r.outcome).toBe(v.expect);
        if (v.points) expect(r.points).toEqual(v.points);
        if (v.rejects) expect(r.rejects).toEqual(v.rejects);
      }
    });
  }

  it('the generator reproduces every published file byte for byte', () => {
    const files = renderVectors();
    expect(files.size).toBe(vectors.length);
    for (const [file, text] of files) expect(readFileSync(VECTORS_DIR + file, 'utf8'), file).toBe(text);
  });
});
