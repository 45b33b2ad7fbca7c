// At-rest records (services/collector/src/at-rest/records.ts): CPU µs per seal and per open of
// one record at 100 B, 1 KB and 5 KB (a rollup row is ~100 B, a day pack 1–5 KB), the current
// implementation (sodium-native: one libsodium call) beside the one before it (HChaCha20 from
// @noble/ciphers + a node:crypto ChaCha20-Poly1305 cipher object per record), interleaved in
// the same process, 3 runs. CPU time of this thread (process.cpuUsage), so load on other cores
// matters less than wall time would. `--runs n`, `--ms n` (per measurement).
import * as nodeCrypto from 'node:crypto';
import { previousOpen, previousSeal } from './records-previous.mjs';
import { cpuPerOp as cpuPerOpFor, fmt, numberArg, progress, table, writeResult } from './lib.mjs';

const { sealRecord, openAny } = await import('../services/collector/dist/at-rest/records.js');

const RUNS = numberArg('runs', 3);
const MS = numberArg('ms', 400);
const cpuPerOp = (fn) => cpuPerOpFor(fn, MS);

const key = nodeCrypto.randomBytes(32);
// A format-2 rollup row's identity text is ~110 B.
const ad = 'rollup\u0000acct_0123456789abcdef\u00001\u00001790000000000\u000012345678901234\u000023456789012345\u00007,8\u00009,10\u0000v1\u0000p0123456789abcdef';
const sizes = [100, 1024, 5120];
const runs = [];
progress(`records bench: seal/open CPU µs per record, previous (node:crypto cipher object + noble HChaCha20) vs sodium-native, ${RUNS} runs`);
for (let r = 0; r < RUNS; r++) {
  const run = {};
  for (const n of sizes) {
    const plain = nodeCrypto.randomBytes(n);
    const sealedBefore = previousSeal(key, ad, plain);
    const sealedNow = sealRecord(key, ad, plain);
    // both open each other's records: the same wire format
    if (!Buffer.from(openAny(key, ad, sealedBefore)).equals(plain) || !Buffer.from(previousOpen(key, ad, sealedNow)).equals(plain)) throw new Error('implementations disagree');
    run[n] = {
      sealBefore: cpuPerOp(() => previousSeal(key, ad, plain)),
      sealNow: cpuPerOp(() => sealRecord(key, ad, plain)),
      openBefore: cpuPerOp(() => previousOpen(key, ad, sealedBefore)),
      openNow: cpuPerOp(() => openAny(key, ad, sealedNow)),
    };
  }
  runs.push(run);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const n of sizes) {
  for (const op of ['seal', 'open']) {
    const before = runs.map((r) => r[n][`${op}Before`]);
    const now = runs.map((r) => r[n][`${op}Now`]);
    const ratio = median(now) / median(before);
    rows.push({
      op,
      bytes: n,
      'before µs (runs)': before.map((x) => fmt(x, 2)).join(' / '),
      'sodium µs (runs)': now.map((x) => fmt(x, 2)).join(' / '),
      'median ratio': `${fmt(ratio, 2)}×`,
      target: '< 1×',
      verdict: ratio < 1 ? 'PASS' : 'FAIL',
    });
  }
}
table(rows);
writeResult('records', { runs, rows, ad: ad.length });
