// Envelope v1 (NaCl) and v2 (HPKE) side by side, in one run (issue 19):
// - the Library's main-thread CPU per 100-point batch in Chromium (record, seal, store, send;
//   CDP ThreadTime, which only counts while the main thread runs: load-insensitive);
// - collector CPU per point to open both layers of a 100-point batch (process.cpuUsage);
// - opening throughput relative to the plaintext work (JSON.parse of the same points);
// - where v2's main-thread time goes (a CDP profile pass: Library JS, fetch, localStorage, WebCrypto, internals);
// - what the fallback costs a browser that needs it (WebCrypto without X25519): the chunk's
//   bytes, main-thread CPU per batch, and first-batch latency against native X25519;
// - ingest throughput ratio to plaintext end to end through the real collector, v1 and v2
//   (bench/ingest.mjs --envelope v1,v2: both envelopes and the plaintext pipeline in each run).
//
//   node bench/hpke.mjs [--ingest-runs 1] [--ingest-duration 10] [--ingest-batches 8000] [--no-ingest]
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import * as P from '@cipherstat/protocol';
import { hpkeOpen, hpkeSeal, nodeX25519 } from '@cipherstat/protocol/node';
import { chromium } from 'playwright-core';
import { fmt, progress, RESULTS_DIR, ROOT, table, writeResult } from './lib.mjs';
import { measure } from '../packages/library/scripts/size.mjs';

const { values: args } = parseArgs({
  options: {
    'ingest-runs': { type: 'string', default: '1' },
    'ingest-duration': { type: 'string', default: '10' },
    'ingest-batches': { type: 'string', default: '8000' },
    'no-ingest': { type: 'boolean', default: false },
  },
});
const loadAvg = () => os.loadavg().map((l) => fmt(l, 1)).join(' / ');
const load0 = loadAvg();

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
progress('library: main-thread CPU per 100-point batch in Chromium (v2 WebCrypto, v2 with the fallback X25519, v1 without crypto.subtle)');
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
/** A browser whose WebCrypto lacks X25519 (as the Library's browser-v2 test): the fallback's X25519, still v2. */
const noX25519 = () => {
  const subtle = crypto.subtle;
  const refuse = (alg) => (typeof alg === 'string' ? alg : alg?.name) === 'X25519';
  for (const m of ['generateKey', 'importKey', 'deriveBits']) {
    const orig = subtle[m].bind(subtle);
    subtle[m] = (...a) => (refuse(m === 'importKey' ? a[2] : a[0]) ? Promise.reject(new DOMException('Unrecognized name', 'NotSupportedError')) : orig(...a));
  }
};
const noSubtle = () => Object.defineProperty(Crypto.prototype, 'subtle', { get: () => undefined });
/**
 * Where the main thread's time goes (CDP Profiler, sampled; a separate pass, since profiling
 * slows what it samples): shares of the sampled non-idle time by what ran — the Library's own
 * JavaScript, fetch, localStorage, WebCrypto, GC, and Chromium's internals the profile cannot
 * attribute ("(program)": task scheduling, IPC, promise settling of native calls).
 */
function profileSplit(profile) {
  const self = new Map();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const split = {};
  let total = 0;
  for (const n of profile.nodes) {
    const us = self.get(n.id) ?? 0;
    const { url, functionName: f } = n.callFrame;
    if (!us || f === '(idle)') continue;
    const what = url.includes('cipherstat')
      ? 'library JS'
      : url
        ? 'other JS'
        : f === 'fetch' || f === 'Response'
          ? 'fetch'
          : /^(setItem|getItem|removeItem)$/.test(f)
            ? 'localStorage'
            : /^(generateKey|exportKey|importKey|deriveBits|deriveKey|encrypt|sign|getRandomValues)$/.test(f)
              ? 'WebCrypto'
              : f === '(program)' || f === '(garbage collector)'
                ? f
                : 'other native';
    split[what] = (split[what] ?? 0) + us;
    total += us;
  }
  return Object.fromEntries(Object.entries(split).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v / total]));
}

/** mode: 'v2' (native X25519), 'fallback' (v2, X25519 from the fallback chunk), 'v1' (no crypto.subtle). */
async function library(mode, persist = true, profile = false) {
  const page = await browser.newPage();
  if (mode === 'v1') await page.addInitScript(noSubtle);
  if (mode === 'fallback') await page.addInitScript(noX25519);
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
  // The first batch of a fresh page: detection, the fallback chunk's request where needed, compiling.
  const f0 = await thread();
  const firstWall = await run(1);
  const firstCpu = (await thread()) - f0;
  await run(2); // warm-up
  const c0 = await thread();
  const wall = await run(BATCHES);
  const ms = ((await thread()) - c0) / BATCHES;
  const chunk = await page.evaluate(() => performance.getEntriesByType('resource').some((e) => e.name.endsWith('/cipherstat-fallback.min.js')));
  let split;
  if (profile) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
    await run(BATCHES);
    split = profileSplit((await cdp.send('Profiler.stop')).profile);
  }
  await page.close();
  return { cpuMsPerBatch: ms, wallMsPerBatch: wall / BATCHES, firstBatchWallMs: firstWall, firstBatchCpuMs: firstCpu, fallbackFetched: chunk, split };
}
const lib = {
  v2: await library('v2', true, true),
  fallback: await library('fallback'),
  v1: await library('v1'),
  v2NoPersist: await library('v2', false),
  v1NoPersist: await library('v1', false),
};
await browser.close();
server.close();

// ---- ingest end to end through the real collector, v1 and v2, each against the plaintext pipeline of its run
let ingest;
if (!args['no-ingest']) {
  progress('ingest: bench/ingest.mjs --envelope v1,v2 (the real collector, both envelopes, and the plaintext pipeline)');
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', `${ROOT}bench/ingest.mjs`, '--envelope', 'v1,v2', '--runs', args['ingest-runs'], '--duration', args['ingest-duration'], '--warmup', '3', '--batches', args['ingest-batches'], '--result', 'hpke-ingest'],
    { cwd: ROOT, stdio: 'inherit' },
  );
  if (r.status !== 0) throw new Error(`bench/ingest.mjs exited with ${r.status ?? r.signal}`);
  const j = JSON.parse(readFileSync(`${RESULTS_DIR}hpke-ingest.json`, 'utf8'));
  const cpuOf = (v) => j.runs.map((run) => run.envelopes[v].serverCpuMicrosPerPoint);
  ingest = { ratios: j.ratios, runs: j.runs.length, plaintextPtsPerSec: j.runs.map((run) => run.plaintext.pointsPerSecEndToEnd), serverCpuUsPerPoint: { v1: cpuOf('v1'), v2: cpuOf('v2') } };
}

const pass = (ok) => (ok ? 'PASS' : 'FAIL');
const ratio = { v1: cpu.plain / cpu.v1, v2: cpu.plain / cpu.v2 };
const sizes = { core: measure(`${ROOT}packages/library/dist/cipherstat.min.js`), fallback: measure(`${ROOT}packages/library/dist/cipherstat-fallback.min.js`) };
const fb = {
  bytes: sizes.fallback.gzip,
  cpuMsPerBatch: lib.fallback.cpuMsPerBatch - lib.v2.cpuMsPerBatch,
  firstBatchWallMs: lib.fallback.firstBatchWallMs - lib.v2.firstBatchWallMs,
  firstBatchCpuMs: lib.fallback.firstBatchCpuMs - lib.v2.firstBatchCpuMs,
};
console.log(`\nload average (1/5/15 min): ${load0} at start, ${loadAvg()} at the end; CPU figures are CPU time, wall figures are skewed by load`);
table([
  { figure: 'core script cipherstat.min.js, min+gzip (B)', v1: '', v2: fmt(sizes.core.gzip), target: '≤ 6,000 B', result: pass(sizes.core.gzip <= 6000) },
  { figure: 'Library main-thread CPU per 100-point batch, Chromium (ms)', v1: fmt(lib.v1.cpuMsPerBatch, 2), v2: fmt(lib.v2.cpuMsPerBatch, 2), target: 'v2 ≤ 1 ms', result: pass(lib.v2.cpuMsPerBatch <= 1) },
  { figure: '  the same with persist: false (no localStorage outbox, ms)', v1: fmt(lib.v1NoPersist.cpuMsPerBatch, 2), v2: fmt(lib.v2NoPersist.cpuMsPerBatch, 2), target: '', result: '' },
  { figure: '  (wall per batch incl. async WebCrypto and the POST, ms)', v1: fmt(lib.v1.wallMsPerBatch, 1), v2: fmt(lib.v2.wallMsPerBatch, 1), target: '', result: '' },
  { figure: 'collector CPU per point, open both layers (µs)', v1: fmt(cpu.v1, 2), v2: fmt(cpu.v2, 2), target: 'v2 < v1', result: pass(cpu.v2 < cpu.v1) },
  { figure: 'opening throughput ratio to plaintext JSON.parse', v1: fmt(ratio.v1, 3), v2: fmt(ratio.v2, 3), target: 'v2 ≥ v1', result: pass(ratio.v2 >= ratio.v1) },
  { figure: 'plaintext JSON.parse CPU per point (µs, baseline)', v1: fmt(cpu.plain, 2), v2: fmt(cpu.plain, 2), target: '', result: '' },
  ...(ingest
    ? [
        // Nothing processed in a window (an overloaded machine stalls processing) is no measurement: FAIL, not a tie.
        { figure: `ingest throughput ratio to plaintext, end to end (median of ${ingest.runs} run(s))`, v1: fmt(ingest.ratios.v1, 3) + '×', v2: fmt(ingest.ratios.v2, 3) + '×', target: 'v2 ≥ v1', result: pass(ingest.ratios.v1 > 0 && ingest.ratios.v2 >= ingest.ratios.v1) },
        { figure: '  (collector CPU per point end to end, µs, per run)', v1: ingest.serverCpuUsPerPoint.v1.map((x) => fmt(x, 0)).join(' '), v2: ingest.serverCpuUsPerPoint.v2.map((x) => fmt(x, 0)).join(' '), target: '', result: '' },
      ]
    : [{ figure: 'ingest throughput ratio to plaintext, end to end', v1: 'not run', v2: 'not run (--no-ingest)', target: 'v2 ≥ v1', result: '' }]),
]);
const pct = (x) => fmt(100 * x, 0) + ' %';
console.log(`\nWhere v2's main-thread time goes (CDP profile of ${BATCHES} more batches, shares of sampled non-idle time; × ${fmt(lib.v2.cpuMsPerBatch, 2)} ms ≈ ms per batch):`);
table(Object.entries(lib.v2.split).map(([what, share]) => ({ what, share: pct(share), 'ms per batch (≈)': fmt(share * lib.v2.cpuMsPerBatch, 2) })));
console.log('\nWhat the fallback costs a browser whose WebCrypto lacks X25519 (v2 with the chunk\'s X25519, against native X25519, same run):');
table([
  { figure: 'extra bytes: cipherstat-fallback.min.js, min+gzip, one same-origin request', value: `${fmt(fb.bytes)} B (${fmt(sizes.fallback.raw)} B minified)` },
  { figure: 'extra main-thread CPU per 100-point batch', value: `${fmt(fb.cpuMsPerBatch, 2)} ms (${fmt(lib.fallback.cpuMsPerBatch, 2)} vs ${fmt(lib.v2.cpuMsPerBatch, 2)})` },
  { figure: 'first batch: extra wall (detection, chunk request on 127.0.0.1, compile)', value: `${fmt(fb.firstBatchWallMs, 1)} ms (${fmt(lib.fallback.firstBatchWallMs, 1)} vs ${fmt(lib.v2.firstBatchWallMs, 1)})` },
  { figure: 'first batch: extra main-thread CPU', value: `${fmt(fb.firstBatchCpuMs, 1)} ms (${fmt(lib.fallback.firstBatchCpuMs, 1)} vs ${fmt(lib.v2.firstBatchCpuMs, 1)})` },
]);
if (!lib.fallback.fallbackFetched || lib.v2.fallbackFetched) throw new Error('the fallback chunk was not fetched where X25519 was refused, or fetched where it is native');
writeResult('hpke', { loadAverage: { start: load0, end: loadAvg() }, sizes, library: lib, fallbackCost: fb, collectorCpuUsPerPoint: cpu, ratioToPlaintext: ratio, ingest });
