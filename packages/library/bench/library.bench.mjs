#!/usr/bin/env node
/**
 * Library benchmark, against the built dist (run `npx rollup -c` first):
 *   - <script> build size, minified and min+gzip (tweetnacl included)
 *   - ns per count() call in Node (warm loop of 1M), without and with tags
 *   - time to seal a 100-point batch: flush() with a transport that answers 202 at once,
 *     so the time is cutting, both sealing layers and base64 (Node: npm build with
 *     tweetnacl's nacl-fast; Chromium: the <script> build with nacl.js)
 * Prints a table and writes bench/results/library.json at the repository root.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { measure, LIMIT } from '../scripts/size.mjs';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const out = `${root}bench/results/library.json`;
const CHROMIUM = '/usr/bin/chromium';
const log = (...a) => console.log('[library bench]', ...a);

if (!existsSync(`${dist}index.js`) || !existsSync(`${dist}cipherstat.min.js`)) {
  console.error('library bench: dist is missing; run `npx rollup -c` first');
  process.exit(1);
}

const { createLibrary } = await import(pathToFileURL(`${dist}index.js`).href);
const { keyPair, toBase64 } = await import('@cipherstat/protocol');
const base = {
  endpoint: 'http://127.0.0.1:9',
  accountId: 'acct_bench_0001',
  writeKey: toBase64(keyPair().publicKey),
  collectorKey: { keyId: '0123456789abcdef', publicKey: toBase64(keyPair().publicKey) },
  persist: false,
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const results = { node: process.version, date: new Date().toISOString() };

// ---- size
log('size of dist/cipherstat.min.js');
const size = measure();
results.size = { minified: size.raw, gzip: size.gzip, budget: LIMIT };

// ---- count()
function countLoop(tags) {
  const N = 1_000_000;
  // room for 1M points in the queue, nothing sealed or sent while measuring
  const lib = createLibrary({ ...base, flushInterval: 3_600_000, maxBatchSize: 2000, maxPersistedBatches: 1000 });
  for (let i = 0; i < 200_000; i++) lib.count('warm.up', i, tags); // warm the JIT
  lib.setConsent(false); // drops the warm-up points
  lib.setConsent(true);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) lib.count('orders.placed', i, tags);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  lib.setConsent(false); // drop, do not seal 1M points
  return ns;
}
// median of 3 loops: a 2-core machine and the GC make single loops noisy
log('count(): 3 × 1M calls without tags');
results.countNs = median([0, 1, 2].map(() => countLoop(undefined)));
log('count(): 3 × 1M calls with 2 tags');
results.countWithTagsNs = median([0, 1, 2].map(() => countLoop({ country: 'DE', page: '/checkout' })));

// ---- seal a 100-point batch in Node
async function sealNode(runs) {
  const realFetch = globalThis.fetch;
  globalThis.fetch = async () => new Response(null, { status: 202 });
  try {
    const lib = createLibrary({ ...base, flushInterval: 3_600_000 });
    const times = [];
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < 100; i++) lib.observe('page.load_ms', 100 + i, { page: `/p${i % 5}` });
      const t0 = performance.now();
      await lib.flush();
      times.push(performance.now() - t0);
    }
    await lib.shutdown();
    return median(times.slice(5));
  } finally {
    globalThis.fetch = realFetch;
  }
}
log('seal 100 points in Node (median of 50)');
results.sealNodeMs = await sealNode(55);

// ---- seal a 100-point batch in Chromium (the <script> build)
async function sealChromium(runs) {
  if (!existsSync(CHROMIUM)) return undefined;
  const { chromium } = await import('playwright-core');
  const { readFileSync } = await import('node:fs');
  const bundle = readFileSync(`${dist}cipherstat.min.js`);
  const server = createServer((req, res) => {
    if (req.url === '/cipherstat.min.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><script src="/cipherstat.min.js"></script>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    return await page.evaluate(
      async ({ options, runs }) => {
        window.fetch = async () => new Response(null, { status: 202 });
        const lib = window.Cipherstat.createLibrary({ ...options, flushInterval: 3_600_000 });
        const times = [];
        for (let r = 0; r < runs; r++) {
          for (let i = 0; i < 100; i++) lib.observe('page.load_ms', 100 + i, { page: `/p${i % 5}` });
          const t0 = performance.now();
          await lib.flush();
          times.push(performance.now() - t0);
        }
        const t = times.slice(3).sort((a, b) => a - b);
        return { median: t[t.length >> 1], userAgent: navigator.userAgent };
      },
      { options: base, runs: runs },
    );
  } finally {
    await browser.close();
    server.close();
  }
}
log('seal 100 points in Chromium (median of 20)');
const chromiumResult = await sealChromium(23);
results.sealChromiumMs = chromiumResult?.median;
results.chromium = chromiumResult?.userAgent;

// ---- report
const rows = [
  ['<script> build, minified', `${results.size.minified} B`],
  ['<script> build, min+gzip', `${results.size.gzip} B (budget ${LIMIT} B)`],
  ['count(), no tags', `${results.countNs.toFixed(0)} ns/call`],
  ['count(), 2 tags', `${results.countWithTagsNs.toFixed(0)} ns/call`],
  ['seal 100 points, Node (nacl-fast)', `${results.sealNodeMs.toFixed(2)} ms`],
  ['seal 100 points, Chromium (nacl.js)', results.sealChromiumMs === undefined ? 'skipped (no chromium)' : `${results.sealChromiumMs.toFixed(2)} ms`],
];
const w = Math.max(...rows.map((r) => r[0].length));
console.log('\n' + rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n');
mkdirSync(fileURLToPath(new URL('.', pathToFileURL(out))), { recursive: true });
writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
log(`wrote ${out}`);
