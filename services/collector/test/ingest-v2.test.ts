/**
 * Envelope v2 (HPKE) at a real collector (127.0.0.1, chDB): v2 batches sealed with
 * node:crypto and with @hpke/core (following docs/protocol.md) are accepted and processed,
 * v1 is still accepted, and GET /v1/metrics counts each account's batches by envelope version.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { concat, encodeHeader, encodeInner, envelopePrefix, fromBase64, outerPlaintext, sealBatchV2, utf8 } from '@cipherstat/protocol';
import { hpkeSeal } from '@cipherstat/protocol/node';
import { refSeal } from '../../../packages/protocol/test/support/hpke-ref.js';
import { createAccount, envelope, newBatchId, points, post, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';

let c: TestCollector;
let a: TestAccount;
let b: TestAccount;
const keysOf = (x: TestAccount) => ({ accountPublicKey: fromBase64(x.writeKey)!, collectorKeyId: x.collectorKey.keyId, collectorPublicKey: fromBase64(x.collectorKey.publicKey)! });

beforeAll(async () => {
  c = await startTestCollector();
  a = await createAccount(c);
  b = await createAccount(c);
});
afterAll(async () => c?.stop());

const metrics = async (x: TestAccount) => (await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${x.readToken}` } })).json();

it('accepts v2 from node:crypto and from @hpke/core, still accepts v1, and counts batches per account and version', async () => {
  const v2 = sealBatchV2({ accountId: a.accountId, batchId: newBatchId(), createdAt: Date.now(), sdk: 'test/2' }, points(3), keysOf(a), hpkeSeal);
  expect((await post(c.url, v2)).status).toBe(202);

  // layers sealed by @hpke/core from the spec's words alone
  const batchId = newBatchId();
  const k = keysOf(a);
  const inner = await refSeal(k.accountPublicKey, utf8('cipherstat envelope v2 inner'), utf8(`${a.accountId}/${batchId}`), encodeInner(a.accountId, batchId, points(2)));
  const prefix = envelopePrefix(2, 0, k.collectorKeyId);
  const header = encodeHeader({ accountId: a.accountId, batchId, createdAt: Date.now(), sdk: 'hpke-core/1.9.0', count: 2 });
  const ref = concat(prefix, await refSeal(k.collectorPublicKey, utf8('cipherstat envelope v2 outer'), prefix, outerPlaintext(header, inner)));
  const res = await post(c.url, ref);
  expect(res.status, await res.clone().text()).toBe(202);
  // a retry of the same bytes is a duplicate, not a second batch
  expect(await (await post(c.url, ref)).json()).toMatchObject({ batchId, duplicate: true });

  expect((await post(c.url, envelope(a, points(4)).bytes)).status).toBe(202); // v1
  expect((await post(c.url, envelope(b, points(1)).bytes)).status).toBe(202); // v1, another account
  await c.services.processor!.drain();

  const ma = await metrics(a);
  expect(ma.envelopes).toEqual({ '1': 1, '2': 2 });
  expect(ma.rejects).toEqual({});
  expect(ma.metrics.find((m: { name: string }) => m.name === 'orders')).toBeTruthy();
  expect((await metrics(b)).envelopes).toEqual({ '1': 1 });
  const processed = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: a.accountId });
  expect(Number(processed[0]!.n)).toBe(3 + 2 + 4);
  const prom = await (await fetch(`${c.url}/metrics`)).text();
  expect(prom).toMatch(/cipherstat_batches_by_envelope_version_total\{version="2"\} 2/);
  expect(prom).toMatch(/cipherstat_batches_by_envelope_version_total\{version="1"\} 2/);
});

it('a v2 batch whose inner layer is bound to another batch id is counted inner_auth_failed for its account; outer failures are 400 with their code', async () => {
  const batchId = newBatchId();
  const k = keysOf(b);
  const inner = hpkeSeal(k.accountPublicKey, utf8('cipherstat envelope v2 inner'), utf8(`${b.accountId}/${newBatchId()}`), encodeInner(b.accountId, batchId, points(1)));
  const prefix = envelopePrefix(2, 0, k.collectorKeyId);
  const env = concat(prefix, hpkeSeal(k.collectorPublicKey, utf8('cipherstat envelope v2 outer'), prefix, outerPlaintext(encodeHeader({ accountId: b.accountId, batchId, createdAt: Date.now(), sdk: 't', count: 1 }), inner)));
  expect((await post(c.url, env)).status).toBe(202);
  await c.services.processor!.drain();
  expect((await metrics(b)).rejects).toEqual({ inner_auth_failed: 1 });

  const wrongAad = concat(prefix, hpkeSeal(k.collectorPublicKey, utf8('cipherstat envelope v2 outer'), new Uint8Array(0), outerPlaintext(encodeHeader({ accountId: b.accountId, batchId: newBatchId(), createdAt: Date.now(), sdk: 't', count: 1 }), inner)));
  const res = await post(c.url, wrongAad);
  expect(res.status).toBe(400);
  expect((await res.json()).error.code).toBe('outer_auth_failed');
  const v3 = env.slice();
  v3[2] = 3;
  const r3 = await post(c.url, v3);
  expect(r3.status).toBe(400);
  expect((await r3.json()).error).toMatchObject({ code: 'unsupported_version', message: expect.stringContaining('1, 2') });
});

it('batches stored but not processed yet are counted by version too', async () => {
  const x = await createAccount(c);
  await c.services.processor!.stop(); // ingest goes on storing; nothing is processed until start()
  try {
    expect((await post(c.url, sealBatchV2({ accountId: x.accountId, batchId: newBatchId(), createdAt: Date.now(), sdk: 'test/2' }, points(2), keysOf(x), hpkeSeal))).status).toBe(202);
    expect((await post(c.url, envelope(x, points(1)).bytes)).status).toBe(202); // v1
    const processed = await connectionOf(c.services.store).query<{ n: string }>('SELECT count() AS n FROM processed WHERE account_id = {a:String}', { a: x.accountId });
    expect(Number(processed[0]!.n)).toBe(0);
    expect((await metrics(x)).envelopes).toEqual({ '1': 1, '2': 1 });
  } finally {
    c.services.processor!.start();
  }
  await c.services.processor!.drain();
  expect((await metrics(x)).envelopes).toEqual({ '1': 1, '2': 1 }); // processed (and deleted from batches): the same counts
});
