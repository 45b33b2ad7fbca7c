// Per-batch envelope crypto of the collector (services/collector/src/x25519.ts): CPU µs per
// operation, X25519 through node:crypto (OpenSSL KeyObjects: the private key imported once per
// secret key buffer, the peer's public key imported as a JWK per call — what the collector did
// before) beside libsodium through sodium-native (one native call on the raw keys), interleaved
// in the same process, 3 runs. CPU time of this thread (process.cpuUsage).
//   outer open     the main thread opens a storefront-sized v2 envelope (deflated, 10 points) with
//                  the collector's transport key (always warm)
//   inner, warm    the tick worker opens the inner layer of an account it has seen before
//   inner, cold    ... of an account it sees for the first time (most of a storefront's 10,000)
//   visitor seal   ingest seals a browser batch's visitor hash to the account key (fresh ephemeral key)
//   batch, cold    outer + inner (cold): a storefront batch's X25519 work end to end
// `--runs n`, `--ms n` (per measurement).
import * as P from '@cipherstat/protocol';
import { deflateRaw, hpkeOpen, hpkeSeal, inflateRaw, openssl } from '@cipherstat/protocol/node';
import { cpuPerOp as cpuPerOpFor, fmt, numberArg, progress, table, writeResult } from './lib.mjs';

const { x25519 } = await import('../services/collector/dist/x25519.js');
if (x25519.name !== 'libsodium') throw new Error(`the collector's X25519 is ${x25519.name}, not libsodium: is sodium-native installed?`);

const RUNS = numberArg('runs', 3);
const MS = numberArg('ms', 400);
const cpuPerOp = (fn) => cpuPerOpFor(fn, MS, 16);

const now = Date.now();
const collector = P.keyPair();
const account = P.keyPair();
const keyId = '00112233aabbccdd';
const accountId = 'acct_bench_x25519';
const batchId = 'ab'.repeat(16);
const points = Array.from({ length: 10 }, (_, i) => ({ id: i, kind: i % 3 ? 'counter' : 'histogram', name: i % 2 ? 'orders' : 'page.load_ms', value: i * 1.5, time: now - 1000 + i, tags: { page: `/p/${i % 7}` } }));
const env = P.sealBatchV2({ accountId, batchId, createdAt: now, sdk: 'bench' }, points, { accountPublicKey: account.publicKey, collectorKeyId: keyId, collectorPublicKey: collector.publicKey }, hpkeSeal, deflateRaw);
const aad = P.innerAad(accountId, batchId, P.FLAG_DEFLATE);

const backends = { before: openssl, now: x25519 };
const hpkeFor = (b) => (k, info, a, s) => hpkeOpen(k, info, a, s, b);
function outer(b) {
  const o = P.openEnvelope(env, { keys: () => collector, now, x25519: b.dh, hpke: hpkeFor(b), flags: P.FLAG_DEFLATE });
  if (!o.ok) throw new Error(o.code);
  return o.value;
}
const inner = outer(openssl).inner;
function openInner(b, pair) {
  const o = P.openInner(inner, { account: pair, accountId, batchId, count: points.length, now, x25519: b.dh, version: 2, hpke: hpkeFor(b), flags: P.FLAG_DEFLATE, inflate: inflateRaw });
  if (!o.ok || o.value.points.length !== points.length) throw new Error('inner did not open');
}
// A cold account: a secret key buffer this thread has not seen (node:crypto keeps imports per buffer).
const cold = () => ({ publicKey: account.publicKey, secretKey: account.secretKey.slice() });
const info = P.utf8('cipherstat visitor v1');
const hash = new Uint8Array(8);

const ops = {
  'outer open': (b) => () => outer(b),
  'inner, warm account': (b) => () => openInner(b, account),
  'inner, cold account': (b) => () => openInner(b, cold()),
  'visitor seal': (b) => () => hpkeSeal(account.publicKey, info, aad, hash, undefined, b),
  'batch (outer + cold inner)': (b) => () => (outer(b), openInner(b, cold())),
};
// Both give the same bytes (the vectors prove it); here at least both open what each seals.
for (const b of Object.values(backends)) openInner(b, cold());

progress(`x25519 bench: CPU µs per operation, node:crypto KeyObjects (before) vs libsodium (now), ${RUNS} runs, ${MS} ms each`);
const runs = [];
for (let r = 0; r < RUNS; r++) {
  const run = {};
  for (const [op, make] of Object.entries(ops)) run[op] = { before: cpuPerOp(make(backends.before)), now: cpuPerOp(make(backends.now)) };
  runs.push(run);
  progress(`run ${r + 1}: ${Object.entries(run).map(([op, v]) => `${op} ${fmt(v.before, 1)} → ${fmt(v.now, 1)}`).join(', ')}`);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = Object.keys(ops).map((op) => {
  const before = runs.map((r) => r[op].before);
  const now = runs.map((r) => r[op].now);
  const ratio = median(now) / median(before);
  return {
    op,
    'node:crypto µs (runs)': before.map((x) => fmt(x, 1)).join(' / '),
    'libsodium µs (runs)': now.map((x) => fmt(x, 1)).join(' / '),
    'median ratio': `${fmt(ratio, 2)}×`,
    target: '< 1×',
    verdict: ratio < 1 ? 'PASS' : 'FAIL',
  };
});
table(rows);
writeResult('x25519', { runs, rows });
