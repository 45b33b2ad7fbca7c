/**
 * The protocol's published vectors, posted to a running collector: outer-layer failures get
 * their HTTP status and error code from ingest; inner-layer outcomes are what the process
 * role records (accepted points, reject counts by code).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { toBase64 } from '@cipherstat/protocol';
import { loadVectors } from '../../../packages/protocol/test/support/vectors.js';
import { post, startTestCollector, type TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';

const vectors = loadVectors();
const NOW = vectors[0]!.now;
let c: TestCollector;

beforeAll(async () => {
  c = await startTestCollector({ now: () => NOW });
  const v = vectors[0]!;
  for (const [keyId, pair] of v.collectorKeys) c.services.keyring.importTransportKey(keyId, pair, NOW + 86_400_000);
  c.services.keyring.importAccount(v.account.id, v.account.keys);
  await c.services.store.putAccount({
    accountId: v.account.id, version: 1, state: 'active', createdAt: NOW, updatedAt: NOW, deactivatedAt: null, shredAfter: null,
    shreddedAt: null, readTokenHash: '0'.repeat(64), allowedOrigins: [], retentionDays: 400, confidential: false,
  });
});
afterAll(async () => c?.stop());

const OUTER_STATUS: Record<string, number> = { envelope_too_large: 413 };
const INNER = new Set(['inner_auth_failed', 'account_mismatch', 'batch_mismatch', 'invalid_payload', 'point_count_mismatch', 'inflated_too_large']);
/** Inner-layer outcomes whose code is also an outer-layer code. */
const INNER_FILES = new Set(['049-v2-inner-low-order-ephemeral.json']);
/**
 * The collector reads versions 1 and 2 and the deflate flag: vector 007 (version byte 2 around a v1 seal) is a v1-reader
 * case, 042 (flag 0x01 around an inner layer sealed without it) a case for a reader of no flags (docs/protocol.md §Test vectors).
 */
const READER_1_2: Record<string, string> = { '007-unknown-version.json': 'outer_auth_failed', '042-v2-reserved-flag.json': 'inner_auth_failed' };

it('runs every vector file', () => expect(vectors.length).toBeGreaterThanOrEqual(16));

for (const v of vectors) {
  const expected = READER_1_2[v.file] ?? v.expect;
  it(`${v.file} → ${expected}`, async () => {
    const s = c.services;
    // Oversize bodies are also refused before they are read: send the real bytes anyway.
    const res = await post(c.url, v.envelope);
    const body = await res.json();
    const pointLevel = v.rejects !== undefined;
    if (expected !== 'ok' && !pointLevel && !INNER.has(expected) && !INNER_FILES.has(v.file)) {
      expect(res.status).toBe(OUTER_STATUS[expected] ?? 400);
      expect(body.error.code).toBe(expected);
      return;
    }
    expect(res.status, JSON.stringify(body)).toBe(202);
    await s.processor!.drain();
    const rejects = await s.store.rejects(v.account.id);
    const processed = await connectionOf(s.store).query<{ accepted: string }>('SELECT sum(accepted) AS accepted FROM processed FINAL WHERE account_id = {a:String}', { a: v.account.id });
    if (v.expect === 'ok') {
      expect(rejects).toEqual({});
      expect(Number(processed[0]!.accepted)).toBe(v.points!.length);
    } else if (pointLevel) {
      const expected: Record<string, number> = {};
      for (const r of v.rejects!) expected[r.code] = (expected[r.code] ?? 0) + 1;
      expect(rejects).toEqual(expected);
      expect(Number(processed[0]!.accepted)).toBe(v.points!.length);
    } else {
      expect(Object.keys(rejects)).toEqual([expected]);
      expect(Number(processed[0]!.accepted)).toBe(0);
    }
    // The vectors share one batch id: purge between cases so each is processed afresh.
    await s.store.purgeAccount(v.account.id);
    s.writer.forgetAccount(v.account.id);
    s.processor!.forgetAccount(v.account.id);
    await s.store.putAccount({
      accountId: v.account.id, version: 2, state: 'active', createdAt: NOW, updatedAt: NOW, deactivatedAt: null, shredAfter: null,
      shreddedAt: null, readTokenHash: '0'.repeat(64), allowedOrigins: [], retentionDays: 400, confidential: false,
    });
  });
}

it('the text form of a vector is accepted like the binary one', async () => {
  const ok = vectors.find((v) => v.expect === 'ok')!;
  const res = await post(c.url, toBase64(ok.envelope));
  expect(res.status).toBe(202);
});
