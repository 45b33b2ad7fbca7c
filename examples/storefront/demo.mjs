#!/usr/bin/env node
/**
 * `npm run demo`: a collector with a demo account, the demo shop with the storefront script
 * tag, optionally simulated shoppers in headless Chromium, then the dashboard's address.
 *
 *   npm run demo                     collector on 127.0.0.1:8787, shop on :8080, 20 shoppers
 *   npm run demo -- --shoppers 0     no simulated shoppers (browse the shop yourself)
 *   npm run demo -- --port 0 --shop-port 0 --exit     free ports; stop once the shoppers are done
 *
 * The collector runs from this checkout's build (services/collector/dist, `npm run build`) on
 * a temporary data directory that is removed on exit. Chromium: $CHROMIUM or /usr/bin/chromium.
 */
import { spawn, execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { startShopServer } from './server.mjs';
import { plans, visit } from './shoppers.mjs';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8787' },
    'shop-port': { type: 'string', default: '8080' },
    shoppers: { type: 'string', default: '20' },
    exit: { type: 'boolean', default: false },
  },
});
const CLI = fileURLToPath(new URL('../../services/collector/dist/cli.js', import.meta.url));
const SCRIPT = fileURLToPath(new URL('../../services/collector/dist/script/cipherstat-storefront.min.js', import.meta.url));
const log = (...a) => console.log('demo:', ...a);
if (!existsSync(CLI) || !existsSync(SCRIPT)) {
  console.error('demo: the build is missing: run `npm run build` first (`npm ci` does it)');
  process.exit(1);
}

const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-demo-'));
const env = { ...process.env, CIPHERSTAT_DATA_DIR: dataDir, HOST: '127.0.0.1', PORT: args.port, CIPHERSTAT_LOG_LEVEL: 'warn' };
for (const k of ['CIPHERSTAT_URL', 'CIPHERSTAT_HOST', 'CIPHERSTAT_PORT', 'CIPHERSTAT_ADMIN_TOKEN']) delete env[k];

let collector;
let shop;
let stopping = false;
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  shop?.close();
  if (collector && collector.exitCode === null) {
    collector.kill('SIGTERM');
    await new Promise((r) => collector.once('exit', r));
  }
  rmSync(dataDir, { recursive: true, force: true });
  process.exit(code);
}
/** Says what went wrong, stops what was started, exits 1. */
const fail = (m) => (console.error('demo:', m), stop(1));
process.once('SIGINT', () => void stop());
process.once('SIGTERM', () => void stop());
process.once('uncaughtException', (e) => void fail(e.stack));
process.once('unhandledRejection', (e) => void fail(e?.stack ?? String(e)));

log(`starting the collector (data in ${dataDir}) …`);
collector = spawn(process.execPath, [CLI, 'serve'], { env: { ...env, CIPHERSTAT_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
let output = '';
const url = await new Promise((resolve, reject) => {
  const seen = (d) => {
    output += d;
    const m = /"url":"(http:\/\/[^"]+)"/.exec(output);
    if (m) resolve(m[1]);
  };
  collector.stdout.on('data', seen);
  collector.stderr.on('data', seen);
  collector.once('exit', (c) => reject(new Error(`the collector exited (${c}):\n${output}`)));
}).catch((e) => fail(e.message));
collector.stdout.removeAllListeners('data');
collector.stderr.removeAllListeners('data');
collector.stdout.resume();
collector.stderr.on('data', (d) => process.stderr.write(d));
log(`collector at ${url}`);

// the shop's address must be known before the account allows it as an origin
shop = (await startShopServer({ tag: {}, port: Number(args['shop-port']) }).catch((e) => fail(`shop: ${e.message}`))).server;
const shopPort = shop.address().port;
const shopOrigin = `http://127.0.0.1:${shopPort}`;
shop.close();
const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'accounts', 'create', '--name', 'Demo shop', '--origin', shopOrigin, '--json'], {
  env: { ...env, CIPHERSTAT_URL: url },
}).catch((e) => fail(`accounts create: ${e.stderr || e.message}`));
const account = JSON.parse(stdout);
log(`demo account ${account.accountId} (allowed origin ${shopOrigin})`);

({ server: shop } = await startShopServer({
  tag: { collector: url, account: account.accountId, writeKey: account.writeKey, keyId: account.collectorKey.keyId, publicKey: account.collectorKey.publicKey },
  port: shopPort,
}));
log(`shop at ${shopOrigin}/ (storefront script from ${url}/cipherstat-storefront.min.js)`);

const n = Number(args.shoppers);
if (n > 0) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  let i = 0;
  for (const plan of plans(n)) {
    await visit(browser, shopOrigin, plan);
    log(`shopper ${++i}/${n}: ${plan.referrer ? new URL(plan.referrer).hostname : plan.utm ? plan.utm.utm_source : 'direct'} → ${['viewed', 'added to cart', 'began checkout', 'paid in ' + plan.currency][plan.depth]}`);
  }
  await browser.close();
  // what the shoppers did, as the collector must count it once it has processed their batches
  const all = plans(n);
  const views = all.reduce((v, p) => v + 2 + (p.category ? 1 : 0) + p.depth, 0); // landing, product, a category tab, cart/checkout/thank-you
  const purchases = all.filter((p) => p.depth == 3).length;
  const total = async (metric) => {
    const res = await fetch(`${url}/v1/query`, {
      method: 'POST',
      headers: { authorization: `Bearer ${account.readToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ metric, aggregation: 'count', interval: 'day', from: Date.now() - 86_400_000, to: Date.now() + 86_400_000 }),
    });
    return res.ok ? (await res.json()).series[0].points.reduce((n, [, v]) => n + (v ?? 0), 0) : 0;
  };
  const deadline = Date.now() + 120_000;
  let seen = [0, 0];
  while (Date.now() < deadline && (seen = [await total('page.views'), purchases ? await total('commerce.purchase') : 0]).some((v, i) => v < [views, purchases][i])) {
    await new Promise((r) => setTimeout(r, 500));
  }
  if (seen[0] != views || seen[1] != purchases) await fail(`the collector shows ${seen[0]} page views and ${seen[1]} purchases, expected ${views} and ${purchases}`);
  log(`the collector has processed all ${views} page views and ${purchases} purchase${purchases == 1 ? '' : 's'} of the shoppers`);
}

console.log(`
Dashboard: ${url}/   (paste the read token)
Read token: ${account.readToken}
Shop:      ${shopOrigin}/
Query:     curl -s ${url}/v1/query -H "Authorization: Bearer ${account.readToken}" -d '{"metric":"page.views","aggregation":"sum","interval":"day","from":${Date.now() - 86_400_000},"to":${Date.now() + 86_400_000},"groupBy":["path"]}'
${args.exit ? '' : 'Ctrl-C stops the demo and removes its data.'}`);
if (args.exit) await stop();
