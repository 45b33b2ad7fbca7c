// Seal/open throughput of a 100-point batch (both layers) and encoded bytes per point.
import { gzipSync } from 'node:zlib';
import * as P from '@cipherstat/protocol';
import { nodeX25519 } from '@cipherstat/protocol/node';
import { fmt, progress, rate, table, writeResult } from './lib.mjs';

const now = Date.now();
const collector = P.keyPair();
const account = P.keyPair();
const keys = { accountPublicKey: account.publicKey, collectorKeyId: '00112233aabbccdd', collectorPublicKey: collector.publicKey };
const names = ['orders', 'revenue.eur', 'page.load_ms', 'cart.items', 'checkout.step'];
const countries = ['DE', 'FR', 'US', 'GB', 'NL', 'ES', 'IT', 'PL', 'SE', 'AT'];
const points = Array.from({ length: 100 }, (_, i) => ({
  id: i,
  kind: i % 3 === 0 ? 'histogram' : 'counter',
  name: names[i % names.length],
  value: Math.round(Math.random() * 100000) / 100,
  time: now - 1000 + i * 7,
  tags: { country: countries[i % countries.length], page: `/p/${i % 13}` },
}));
const header = { accountId: 'acct_bench_0001', batchId: 'ab'.repeat(16), createdAt: now, sdk: 'js/0.1.0' };

progress('protocol bench: sealing and opening 100-point batches');
const envelope = P.sealBatch(header, points, keys);
const open = (x25519) => () => {
  const o = P.openEnvelope(envelope, { keys: () => collector, now, x25519 });
  const h = o.value.header;
  const i = P.openInner(o.value.inner, { account, accountId: h.accountId, batchId: h.batchId, count: h.count, now, x25519 });
  if (!i.ok || i.value.points.length !== 100) throw new Error('open failed');
};
const openOuterOnly = () => { if (!P.openEnvelope(envelope, { keys: () => collector, now, x25519: nodeX25519 }).ok) throw new Error(); };

const results = {
  seal: rate(() => P.sealBatch(header, points, keys)),
  openTweetnacl: rate(open(undefined)),
  openNode: rate(open(nodeX25519)),
  openOuterNode: rate(openOuterOnly),
};
const inner = P.encodeInner(header.accountId, header.batchId, points);
const naiveJson = new TextEncoder().encode(JSON.stringify(points));
const sizes = {
  envelopeBytes: envelope.length,
  envelopeBytesPerPoint: envelope.length / 100,
  innerPlaintextBytesPerPoint: inner.length / 100,
  naiveJsonBytesPerPoint: naiveJson.length / 100,
  gzippedNaiveJsonBytesPerPoint: gzipSync(naiveJson).length / 100,
  fixedOverheadBytes: envelope.length - inner.length,
};

table([
  { operation: 'seal 100-point batch (both layers, tweetnacl)', 'batches/s': fmt(results.seal.opsPerSec), 'points/s': fmt(results.seal.opsPerSec * 100), 'µs/batch': fmt(results.seal.nsPerOp / 1000, 1) },
  { operation: 'open both layers + validate (tweetnacl X25519)', 'batches/s': fmt(results.openTweetnacl.opsPerSec), 'points/s': fmt(results.openTweetnacl.opsPerSec * 100), 'µs/batch': fmt(results.openTweetnacl.nsPerOp / 1000, 1) },
  { operation: 'open both layers + validate (node:crypto X25519)', 'batches/s': fmt(results.openNode.opsPerSec), 'points/s': fmt(results.openNode.opsPerSec * 100), 'µs/batch': fmt(results.openNode.nsPerOp / 1000, 1) },
  { operation: 'open outer layer only (ingest role, node X25519)', 'batches/s': fmt(results.openOuterNode.opsPerSec), 'points/s': fmt(results.openOuterNode.opsPerSec * 100), 'µs/batch': fmt(results.openOuterNode.nsPerOp / 1000, 1) },
]);
table(Object.entries(sizes).map(([k, v]) => ({ size: k, bytes: fmt(v, 1) })));
writeResult('protocol', { results, sizes });
