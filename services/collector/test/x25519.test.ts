/**
 * The collector's X25519 (src/x25519.ts): libsodium through sodium-native, loaded here. Envelopes
 * the Library seals — its own sealing code: version 2 through node:crypto (its Node platform) and
 * through WebCrypto (browsers), deflated and not, and version 1 (its fallback, tweetnacl) — open
 * with the collector's path and with the protocol's node:crypto path to the same points, the
 * points recorded (vectors and RFC 7748/9180/Wycheproof cases with both: packages/protocol/test/).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { encodeInner, FLAG_DEFLATE, keyPair, openEnvelope, openInner, randomBytes, toBase64, toHex, type HpkeOpen, type KeyPair, type Point, type X25519 } from '@cipherstat/protocol';
import { deflateRaw, hpkeOpen as protocolHpkeOpen, hpkeSeal as protocolHpkeSeal, inflateRaw, nodeX25519 } from '@cipherstat/protocol/node';
import { envelope, form, redetect, revive, type Sealing } from '../../../packages/library/src/seal.js';
import { fallback } from '../../../packages/library/src/fallback.js';
import type { StoredBatch } from '../../../packages/library/src/persist.js';
import { hpkeOpen, hpkeSeal, rawX25519, x25519 } from '../src/x25519.js';
import { openVisitor, sealVisitor } from '../src/at-rest/visitor.js';

const ACCOUNT = 'acct_x25519_backends';
afterEach(() => redetect());

const points = (n: number): Point[] =>
  Array.from({ length: n }, (_, i) => ({ id: i, kind: i % 2 ? 'counter' : 'histogram', name: i % 2 ? 'orders' : 'page.load_ms', value: i * 7 + 0.5, time: Date.now() - 1000 * i, tags: (i % 3 ? { page: `/p/${i}`, lang: 'ü' } : {}) as Record<string, string> }));

/** The collector's path (libsodium) and the protocol's default (node:crypto). */
const paths: [string, { hpke: HpkeOpen; x25519: X25519 }][] = [
  ['collector (libsodium)', { hpke: hpkeOpen, x25519: rawX25519 }],
  ['node:crypto', { hpke: protocolHpkeOpen, x25519: nodeX25519 }],
];

function openBoth(env: Uint8Array, collector: KeyPair, account: KeyPair) {
  return paths.map(([, p]) => {
    const outer = openEnvelope(env, { keys: () => collector, now: Date.now(), x25519: p.x25519, hpke: p.hpke, flags: FLAG_DEFLATE });
    if (!outer.ok) return { code: outer.code };
    const { header, inner, version, flags } = outer.value;
    const opened = openInner(inner, { account, accountId: header.accountId, batchId: header.batchId, count: header.count, now: Date.now(), x25519: p.x25519, version, hpke: p.hpke, flags, inflate: inflateRaw });
    return opened.ok ? { version, flags, points: opened.value.points, rejects: opened.value.rejects } : { code: opened.code };
  });
}

describe("the collector's X25519", () => {
  it('is libsodium (sodium-native loads in the collector)', () => {
    expect(x25519.name).toBe('libsodium');
  });

  const sealings: [string, Sealing, number, number][] = [
    ['v2 through node:crypto (the Library in Node), deflated', { load: () => Promise.resolve(fallback), hpke: (pk, info, aad, plain) => protocolHpkeSeal(pk, info, aad, plain), deflate: deflateRaw }, 2, FLAG_DEFLATE],
    ['v2 through node:crypto, not deflated', { load: () => Promise.resolve(fallback), hpke: (pk, info, aad, plain) => protocolHpkeSeal(pk, info, aad, plain) }, 2, 0],
    ['v2 through WebCrypto (the Library in browsers), deflated', { load: () => Promise.resolve(fallback), deflate: deflateRaw }, 2, FLAG_DEFLATE],
    ['v2 through WebCrypto, not deflated', { load: () => Promise.resolve(fallback) }, 2, 0],
  ];
  for (const [name, sealing, version, flags] of sealings) {
    it(`opens what the Library seals, ${name}: both paths give the recorded points`, async () => {
      const account = keyPair();
      const collector = keyPair();
      const key = { keyId: toHex(randomBytes(8)), publicKey: collector.publicKey };
      for (const n of [1, 10, 100]) {
        redetect();
        const recorded = points(n);
        const batch = await form(ACCOUNT, account.publicKey, structuredClone(recorded), sealing);
        const env = await envelope(batch, key, ACCOUNT, sealing);
        expect([env[2], env[3]]).toEqual([version, flags]);
        const [a, b] = openBoth(env, collector, account);
        expect(a).toEqual({ version, flags, points: recorded, rejects: [] });
        expect(b).toEqual(a);
        // one flipped byte in the outer layer's tag: both refuse it the same way
        const bad = env.slice();
        bad[bad.length - 1]! ^= 1;
        expect(openBoth(bad, collector, account)).toEqual([{ code: 'outer_auth_failed' }, { code: 'outer_auth_failed' }]);
      }
    });
  }

  it('opens what the Library seals as version 1 (its fallback, tweetnacl sealed boxes): both paths give the recorded points', async () => {
    const account = keyPair();
    const collector = keyPair();
    const key = { keyId: toHex(randomBytes(8)), publicKey: collector.publicKey };
    const sealing: Sealing = { load: () => Promise.resolve(fallback) };
    const recorded = points(10);
    const batchId = toHex(randomBytes(16));
    const stored: StoredBatch = [batchId, Date.now(), recorded.length, toBase64(fallback.inner(encodeInner(ACCOUNT, batchId, recorded), account.publicKey)), toBase64(randomBytes(32))];
    const env = await envelope(revive(stored, 0)!, key, ACCOUNT, sealing);
    expect([env[2], env[3]]).toEqual([1, 0]);
    const [a, b] = openBoth(env, collector, account);
    expect(a).toEqual({ version: 1, flags: 0, points: recorded, rejects: [] });
    expect(b).toEqual(a);
  });

  it('a low-order ephemeral key is low_order_key on both paths, both versions', async () => {
    const account = keyPair();
    const collector = keyPair();
    const key = { keyId: toHex(randomBytes(8)), publicKey: collector.publicKey };
    const sealing: Sealing = { load: () => Promise.resolve(fallback), hpke: (pk, info, aad, plain) => protocolHpkeSeal(pk, info, aad, plain) };
    const env = await envelope(await form(ACCOUNT, account.publicKey, points(3), sealing), key, ACCOUNT, sealing);
    const order8 = Uint8Array.from(Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex'));
    for (const low of [new Uint8Array(32), order8]) {
      const bad = env.slice();
      bad.set(low, 12); // the outer layer's enc
      expect(openBoth(bad, collector, account)).toEqual([{ code: 'low_order_key' }, { code: 'low_order_key' }]);
    }
  });

  it('visitor fields: sealed with libsodium, opened by either; sealed with node:crypto, opened by the collector', () => {
    const account = keyPair();
    const batchId = toHex(randomBytes(16));
    const hash = randomBytes(8);
    const mine = sealVisitor(account.publicKey, ACCOUNT, batchId, hash);
    expect(openVisitor([account], ACCOUNT, batchId, mine)).toEqual(hash);
    const info = new TextEncoder().encode('cipherstat visitor v1');
    const aad = new TextEncoder().encode(`${ACCOUNT}/${batchId}`);
    const theirs = protocolHpkeOpen(account, info, aad, mine);
    expect(theirs.ok && theirs.value).toEqual(hash);
    expect(openVisitor([account], ACCOUNT, batchId, protocolHpkeSeal(account.publicKey, info, aad, hash))).toEqual(hash);
    expect(openVisitor([keyPair()], ACCOUNT, batchId, mine)).toBeNull();
    expect(hpkeSeal(account.publicKey, info, aad, hash).length).toBe(8 + 48);
  });
});
