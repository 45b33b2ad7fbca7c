/**
 * Property tests: random and mutated envelopes only ever yield a typed error or a valid
 * result. Anything thrown, or a result outside the Result shape, fails.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, openEnvelope, openInner, sealBatch, keyPair, seal, utf8, wrapOuter, encodeHeader, type KeyPair, type Point } from '@cipherstat/protocol';

const NOW = 1767225600000;
const collector = keyPair();
const account = keyPair();
const KEY_ID = '00112233445566aa';
const keys = (id: string) => (id === KEY_ID ? collector : undefined);
const BATCH = 'ab'.repeat(16);
const codes = new Set<string>(ERROR_CODES);

function checkResult(r: { ok: boolean; code?: string }) {
  if (!r.ok) expect(codes.has(r.code!), `unknown code ${r.code}`).toBe(true);
}

/** Runs both layers as the collector would; returns the outcome. */
function decode(bytes: Uint8Array) {
  const outer = openEnvelope(bytes, { keys, now: NOW });
  checkResult(outer);
  if (!outer.ok) return;
  const h = outer.value.header;
  const inner = openInner(outer.value.inner, { account, accountId: h.accountId, batchId: h.batchId, count: h.count, now: NOW });
  checkResult(inner);
  if (inner.ok) for (const r of inner.value.rejects) expect(codes.has(r.code)).toBe(true);
}

const point = fc.record({
  id: fc.nat(1000),
  kind: fc.constantFrom('counter', 'gauge', 'histogram') as fc.Arbitrary<Point['kind']>,
  name: fc.oneof(fc.constantFrom('orders', 'page.load_ms'), fc.string({ maxLength: 140 })),
  value: fc.oneof(fc.double(), fc.integer()),
  time: fc.integer({ min: NOW - 40 * 86400000, max: NOW + 86400000 }),
  tags: fc.dictionary(fc.string({ maxLength: 70 }), fc.string({ maxLength: 300 }), { maxKeys: 20 }),
});

const valid = (points: Point[]) =>
  sealBatch({ accountId: 'acct_fuzz_0001', batchId: BATCH, createdAt: NOW, sdk: 'js/0.1.0' }, points, { accountPublicKey: account.publicKey, collectorKeyId: KEY_ID, collectorPublicKey: collector.publicKey });

describe('decoder never throws', () => {
  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), (b) => decode(b)), { numRuns: 2000 });
  });

  it('random bytes behind a valid prefix', () => {
    const prefix = valid([]).slice(0, 12);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), (b) => decode(new Uint8Array([...prefix, ...b]))), { numRuns: 1000 });
  });

  it('valid envelopes of random points, then mutated (flips, truncation, insertion)', () => {
    fc.assert(
      fc.property(fc.array(point, { maxLength: 8 }), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }), fc.nat(), fc.boolean(), (points, flips, cut, truncate) => {
        const env = valid(points);
        decode(env);
        const m = env.slice();
        for (const [at, v] of flips) m[at % m.length] = v;
        decode(m);
        if (truncate) decode(env.slice(0, cut % env.length));
        else decode(new Uint8Array([...env.slice(0, cut % env.length), 0, ...env.slice(cut % env.length)]));
      }),
      { numRuns: 300 },
    );
  });

  it('authentic layers around arbitrary JSON headers and inner payloads', () => {
    const json = fc.oneof(fc.json(), fc.string());
    fc.assert(
      fc.property(json, json, fc.boolean(), (headerText, innerText, realHeader) => {
        const header = realHeader ? encodeHeader({ accountId: 'acct_fuzz_0001', batchId: BATCH, createdAt: NOW, sdk: 'x', count: 1 }) : utf8(headerText).slice(0, 1024);
        const inner = seal(utf8(innerText), account.publicKey);
        decode(wrapOuter(header, inner, { collectorKeyId: KEY_ID, collectorPublicKey: collector.publicKey }));
      }),
      { numRuns: 1000 },
    );
  });

  it('authentic inner layers with structurally random points', () => {
    const wire = fc.array(fc.anything(), { maxLength: 7 });
    fc.assert(
      fc.property(fc.array(fc.oneof(wire, fc.anything()), { maxLength: 10 }), fc.anything(), fc.anything(), (p, m, t) => {
        const text = JSON.stringify({ a: 'acct_fuzz_0001', b: BATCH, t: typeof t === 'number' ? t : NOW, m: Array.isArray(m) ? m : ['x', 'y'], p }) ?? 'null';
        const inner = seal(utf8(text), account.publicKey);
        const count = Array.isArray(p) ? p.length : 0;
        decode(wrapOuter(encodeHeader({ accountId: 'acct_fuzz_0001', batchId: BATCH, createdAt: NOW, sdk: 'x', count }), inner, { collectorKeyId: KEY_ID, collectorPublicKey: collector.publicKey }));
      }),
      { numRuns: 1000 },
    );
  });
});

it('a point that survives decoding satisfies every limit', () => {
  fc.assert(
    fc.property(fc.array(point, { minLength: 1, maxLength: 5 }), (points) => {
      const ids = points.map((p, i) => ({ ...p, id: i }));
      const outer = openEnvelope(valid(ids), { keys, now: NOW });
      expect(outer.ok).toBe(true);
      if (!outer.ok) return;
      const inner = openInner(outer.value.inner, { account, accountId: 'acct_fuzz_0001', batchId: BATCH, count: ids.length, now: NOW });
      expect(inner.ok).toBe(true);
      if (!inner.ok) return;
      expect(inner.value.points.length + inner.value.rejects.length).toBe(ids.length);
      for (const p of inner.value.points) expect(Number.isFinite(p.value)).toBe(true);
    }),
    { numRuns: 300 },
  );
});

export type { KeyPair };
