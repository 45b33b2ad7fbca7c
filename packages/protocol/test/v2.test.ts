/**
 * Envelope v2 against @hpke/core, the independent HPKE implementation: it opens both layers
 * of what the project seals (and of every v2 'ok' vector), and an envelope whose layers it
 * sealed by following docs/protocol.md alone is accepted.
 */
import { inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { concat, FLAG_DEFLATE, encodeHeader, encodeInner, envelopePrefix, fromUtf8, INFO_INNER, INFO_OUTER, innerAad, keyPair, openEnvelope, openInner, outerPlaintext, sealBatchV2, utf8, type Point } from '@cipherstat/protocol';
import { deflateRaw, hpkeOpen, hpkeSeal, inflateRaw } from '@cipherstat/protocol/node';
import { refOpen, refSeal } from './support/hpke-ref.js';
import { loadVectors } from './support/vectors.js';

const now = Date.UTC(2026, 0, 1);
const collector = { keyId: '0c011ec7000000b2', ...keyPair() };
const account = { id: 'acct_v2_test', ...keyPair() };
const batchId = '0123456789abcdef0123456789abcdef';
const points: Point[] = [
  { id: 0, kind: 'counter', name: 'orders', value: 2, time: now - 500, tags: { country: 'DE' } },
  { id: 1, kind: 'histogram', name: 'page.load_ms', value: 812.5, time: now - 400, tags: {} },
];
const keys = { accountPublicKey: account.publicKey, collectorKeyId: collector.keyId, collectorPublicKey: collector.publicKey };
const open = (env: Uint8Array, versions?: number[]) => openEnvelope(env, { keys: (id) => (id === collector.keyId ? collector : undefined), now, hpke: hpkeOpen, versions });

/** Splits the outer plaintext: u16be(header length) || header || inner layer. */
const split = (plain: Uint8Array) => {
  const n = (plain[0]! << 8) | plain[1]!;
  return { header: fromUtf8(plain.subarray(2, 2 + n)), inner: plain.subarray(2 + n) };
};

describe('envelope v2 and @hpke/core', () => {
  it('@hpke/core opens both layers of an envelope sealed with node:crypto', async () => {
    const env = sealBatchV2({ accountId: account.id, batchId, createdAt: now - 100, sdk: 'js/0.2.0' }, points, keys, hpkeSeal);
    expect([...env.subarray(0, 4)]).toEqual([0x43, 0x53, 2, 0]);
    const { header, inner } = split(await refOpen(collector.secretKey, INFO_OUTER, env.subarray(0, 12), env.subarray(12)));
    expect(JSON.parse(header)).toEqual({ a: account.id, b: batchId, t: now - 100, s: 'js/0.2.0', n: 2 });
    expect(JSON.parse(fromUtf8(await refOpen(account.secretKey, INFO_INNER, utf8(`${account.id}/${batchId}`), inner)))).toMatchObject({ a: account.id, b: batchId, m: ['orders', 'page.load_ms'] });
  });

  it('an envelope whose layers @hpke/core sealed, following docs/protocol.md, is accepted', async () => {
    const inner = await refSeal(account.publicKey, utf8('cipherstat envelope v2 inner'), utf8(`${account.id}/${batchId}`), encodeInner(account.id, batchId, points));
    const header = encodeHeader({ accountId: account.id, batchId, createdAt: now - 100, sdk: 'other/1.0', count: 2 });
    const prefix = envelopePrefix(2, 0, collector.keyId);
    const env = concat(prefix, await refSeal(collector.publicKey, utf8('cipherstat envelope v2 outer'), prefix, outerPlaintext(header, inner)));
    const outer = open(env);
    expect(outer.ok).toBe(true);
    if (!outer.ok) return;
    expect(outer.value.version).toBe(2);
    const opened = openInner(outer.value.inner, { account, accountId: account.id, batchId, count: 2, now, version: 2, hpke: hpkeOpen });
    expect(opened.ok && opened.value.points).toEqual(points);
    // the same bytes to a reader of version 1 only
    expect(open(env, [1])).toMatchObject({ ok: false, code: 'unsupported_version' });
    // the inner layer presented as v1 (or without an HPKE opener) does not open
    expect(openInner(outer.value.inner, { account, accountId: account.id, batchId, count: 2, now }).ok).toBe(false);
    expect(openInner(outer.value.inner, { account, accountId: account.id, batchId, count: 2, now, version: 2 })).toMatchObject({ ok: false, code: 'unsupported_version' });
    expect(INFO_INNER).toEqual(utf8('cipherstat envelope v2 inner'));
    expect(innerAad(account.id, batchId)).toEqual(utf8(`${account.id}/${batchId}`));
  });

  it('sealBatchV2 with deflate: flag 0x01, @hpke/core opens it with AAD "account/batch/z", openInner inflates it; a reader without the flag refuses it', async () => {
    const env = sealBatchV2({ accountId: account.id, batchId, createdAt: now - 100, sdk: 'js/0.2.0' }, points, keys, hpkeSeal, deflateRaw);
    expect([...env.subarray(0, 4)]).toEqual([0x43, 0x53, 2, FLAG_DEFLATE]);
    const { inner } = split(await refOpen(collector.secretKey, INFO_OUTER, env.subarray(0, 12), env.subarray(12)));
    const plain = await refOpen(account.secretKey, INFO_INNER, utf8(`${account.id}/${batchId}/z`), inner);
    expect(JSON.parse(inflateRawSync(plain).toString('utf8'))).toMatchObject({ a: account.id, b: batchId, m: ['orders', 'page.load_ms'] });
    expect(open(env)).toMatchObject({ ok: false, code: 'unsupported_flags' });
    const outer = openEnvelope(env, { keys: () => collector, now, hpke: hpkeOpen, flags: FLAG_DEFLATE });
    expect(outer.ok && outer.value.flags).toBe(FLAG_DEFLATE);
    if (!outer.ok) return;
    const base = { account, accountId: account.id, batchId, count: 2, now, version: 2, hpke: hpkeOpen, flags: outer.value.flags };
    expect(openInner(outer.value.inner, { ...base, inflate: inflateRaw })).toMatchObject({ ok: true, value: { points } });
    // a process role that cannot inflate refuses the flag rather than misreading the layer
    expect(openInner(outer.value.inner, base)).toMatchObject({ ok: false, code: 'unsupported_flags' });
  });

  it('@hpke/core opens both layers of every v2 ok vector (and node:zlib inflates the deflated ones: flag 0x01, inner AAD "/z")', async () => {
    const oks = loadVectors().filter((v) => v.file >= '036' && v.expect === 'ok');
    expect(oks.length).toBeGreaterThanOrEqual(5);
    expect(oks.filter((v) => v.envelope[3] === 1).length).toBeGreaterThanOrEqual(2);
    for (const v of oks) {
      const keyId = Buffer.from(v.envelope.subarray(4, 12)).toString('hex');
      const { header, inner } = split(await refOpen(v.collectorKeys.get(keyId)!.secretKey, INFO_OUTER, v.envelope.subarray(0, 12), v.envelope.subarray(12)));
      const h = JSON.parse(header);
      const flags = v.envelope[3]!;
      if (flags) expect(fromUtf8(innerAad(h.a, h.b, flags))).toBe(`${h.a}/${h.b}/z`);
      const plain = await refOpen(v.account.keys.secretKey, INFO_INNER, innerAad(h.a, h.b, flags), inner);
      const body = JSON.parse(fromUtf8(flags ? inflateRawSync(plain) : plain));
      expect(body.p.length, v.file).toBe(h.n);
    }
  });

  it('the v2 vectors cover the required negatives', () => {
    const v2 = loadVectors().filter((v) => v.file >= '036');
    expect(v2.length).toBeGreaterThanOrEqual(16);
    const names = v2.map((v) => v.file).join(' ');
    for (const n of ['wrong-aad', 'layers-swapped', 'outer-sealed-to-account-key', 'low-order-ephemeral', 'truncated', 'flipped-outer-tag', 'unknown-version', 'v2-header-v1-body']) expect(names).toContain(n);
  });
});
