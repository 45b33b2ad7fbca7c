// Envelope v1 (NaCl) and v2 (HPKE) side by side, in one run (issue 19):
// - the Library's main-thread CPU per 100-point batch in Chromium (record, seal, store, send;
//   CDP ThreadTime, which only counts while the main thread runs: load-insensitive);
// - collector CPU per point to open both layers of a 100-point batch (process.cpuUsage);
// - opening throughput relative to the plaintext work (JSON.parse of the same points).
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import * as P from '@cipherstat/protocol';
import { hpkeOpen, hpkeSeal, nodeX25519 } from '@cipherstat/protocol/node';
import { chromium } from 'playwright-core';
import { fmt, progress, ROOT, table, writeResult } from './lib.mjs';

const now = Date.now();
const collector = P.keyPair();
const account = P.keyPair();
const keyId = '00112233aabbccdd';
const keys = { accountPublicKey: account.publicKey, collectorKeyId: keyId, collectorPublicKey: collector.publicKey };
const names = ['orders', 'revenue.eur', 'page.load_ms', 'cart.items', 'checkout.step'];
const countries = ['DE', 'FR', 'US', 'GB', 'NL', 'ES', 'IT', 'PL', 'SE', 'AT'];
const points = Array.from({ length: 100 }, (_, i) => ({ id: i, kind: i % 3 ? 'counter' : 'histogram', name: names[i % 5], value: i * 1.5, time: now - 1000 + i, tags: { country: countries[i % 10], page: `/p/${i % 13}` } }));
const header = { accountId: 'acct_bench_0001', batchId: 'ab'.repeat(16), createdAt: now, sdk: 'bench' };

// ---- collector: CPU per point to open both layers
const cpuPerPoint = (fn, seconds = 1.5) => {
  for (let i = 0; i < 50; i++) fn();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) (fn(), n++);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n / 100; // µs per point
};
const env1 = P.sealBatch(header, points, keys);
const env2 = P.sealBatchV2(header, points, keys, hpkeSeal);
const open = (env, v2) => () => {
  const o = P.openEnvelope(env, { keys: () => collector, now, x25519: nodeX25519, hpke: hpkeOpen });
  const h = o.value.header;
  const i = P.openInner(o.value.inner, { account, accountId: h.accountId, batchId: h.batchId, count: h.count, now, x25519: nodeX25519, version: o.value.version, hpke: hpkeOpen });
  if (!i.ok || i.value.points.length !== 100 || (o.value.version === 2) !== v2) throw new Error('open failed');
};
const plainJson = JSON.stringify(points);
progress('collector: CPU per point to open both layers (v1, v2, plaintext JSON.parse)');
const cpu = { v1: cpuPerPoint(open(env1, false)), v2: cpuPerPoint(open(env2, true)), plain: cpuPerPoint(() => JSON.parse(plainJson)) };

// ---- Library: main-thread CPU per 100-point batch in Chromium
progress('library: main-thread CPU per 100-point batch in Chromium (v2 WebCrypto, v1 without crypto.subtle)');
const core = readFileSync(`${ROOT}packages/library/dist/cipherstat.min.js`);
const fallback = readFileSync(`${ROOT}packages/library/dist/cipherstat-fallback.min.js`);
const server = createServer((req, res) => {
  const path = req.url.split('?')[0];
  const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'content-type' };
  if (path === '/cipherstat.min.js' || path === '/cipherstat-fallback.min.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(path === '/cipherstat.min.js' ? core : fallback);
  if (path === '/v1/batches') return req.resume().on('end', () => res.writeHead(req.method === 'POST' ? 202 : 204, { ...cors, 'content-type': 'application/json' }).end('{"batchId":"x"}'));
  res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><body>page</body>');
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
const BATCHES = 20;
async function library(v1, persist = true) {
  const page = await browser.newPage();
  if (v1) await page.addInitScript(() => Object.defineProperty(Crypto.prototype, 'subtle', { get: () => undefined }));
  await page.goto(origin + '/');
  await page.addScriptTag({ url: origin + '/cipherstat.min.js' });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const thread = async () => (await cdp.send('Performance.getMetrics')).metrics.find((m) => m.name === 'ThreadTime').value * 1000;
  const run = (n) =>
    page.evaluate(
      async ([n, o]) => {
        const lib = window.Cipherstat.createLibrary(o);
        const t0 = performance.now();
        for (let b = 0; b < n; b++) {
          for (let i = 0; i < 100; i++) lib.count('orders', 1, { country: 'DE', page: '/p/' + (i % 13) });
          await lib.flush();
        }
        return performance.now() - t0;
      },
      [n, { endpoint: origin, accountId: 'acct_bench_0001', writeKey: P.toBase64(account.publicKey), collectorKey: { keyId, publicKey: P.toBase64(collector.publicKey) }, persist }],
    );
  await run(2); // warm-up: compile, the fallback chunk, WebCrypto
  const c0 = await thread();
  const wall = await run(BATCHES);
  const ms = ((await thread()) - c0) / BATCHES;
  await page.close();
  return { cpuMsPerBatch: ms, wallMsPerBatch: wall / BATCHES };
}
const lib = { v2: await library(false), v1: await library(true), v2NoPersist: await library(false, false), v1NoPersist: await library(true, false) };
await browser.close();
server.close();

const pass = (ok) => (ok ? 'PASS' : 'FAIL');
const ratio = { v1: cpu.plain / cpu.v1, v2: cpu.plain / cpu.v2 };
table([
  { figure: 'Library main-thread CPU per 100-point batch, Chromium (ms)', v1: fmt(lib.v1.cpuMsPerBatch, 2), v2: fmt(lib.v2.cpuMsPerBatch, 2), target: 'v2 ≤ 1 ms', result: pass(lib.v2.cpuMsPerBatch <= 1) },
  { figure: '  the same with persist: false (no localStorage outbox, ms)', v1: fmt(lib.v1NoPersist.cpuMsPerBatch, 2), v2: fmt(lib.v2NoPersist.cpuMsPerBatch, 2), target: '', result: '' },
  { figure: '  (wall per batch incl. async WebCrypto and the POST, ms)', v1: fmt(lib.v1.wallMsPerBatch, 1), v2: fmt(lib.v2.wallMsPerBatch, 1), target: '', result: '' },
  { figure: 'collector CPU per point, open both layers (µs)', v1: fmt(cpu.v1, 2), v2: fmt(cpu.v2, 2), target: 'v2 < v1', result: pass(cpu.v2 < cpu.v1) },
  { figure: 'opening throughput ratio to plaintext JSON.parse', v1: fmt(ratio.v1, 3), v2: fmt(ratio.v2, 3), target: 'v2 ≥ v1', result: pass(ratio.v2 >= ratio.v1) },
  { figure: 'plaintext JSON.parse CPU per point (µs, baseline)', v1: fmt(cpu.plain, 2), v2: fmt(cpu.plain, 2), target: '', result: '' },
]);
writeResult('hpke', { library: lib, collectorCpuUsPerPoint: cpu, ratioToPlaintext: ratio });
