/**
 * `npm run demo` as the README shows it, from this checkout's build: a collector, a demo
 * account, the demo shop and simulated shoppers in headless Chromium; the demo itself waits
 * until the collector has processed exactly the page views and purchases its shoppers made,
 * prints the dashboard's address and a read token, and (with --exit) stops and removes its
 * data directory.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

it('`npm run demo -- --port 0 --shop-port 0 --shoppers 4 --exit` serves the shop, drives 4 shoppers, sees their 16 page views and 1 purchase processed, and cleans up', async () => {
  const { stdout } = await promisify(execFile)('npm', ['run', 'demo', '--', '--port', '0', '--shop-port', '0', '--shoppers', '4', '--exit'], {
    cwd: ROOT,
    timeout: 300_000,
    maxBuffer: 16 << 20,
  }).catch((e: { stdout: string; stderr: string; message: string }) => {
    throw new Error(`${e.message}\n${e.stdout}\n${e.stderr}`);
  });
  expect(stdout).toMatch(/demo: collector at http:\/\/127\.0\.0\.1:\d+/);
  expect(stdout).toMatch(/demo: shop at http:\/\/127\.0\.0\.1:\d+\/ \(storefront script from http:\/\/127\.0\.0\.1:\d+\/cipherstat-storefront\.min\.js\)/);
  for (let i = 1; i <= 4; i++) expect(stdout).toContain(`demo: shopper ${i}/4:`);
  // plans(4): landing + product each (8), category tabs of shoppers 2 and 3 (2), cart ×3, checkout ×2, thank-you ×1
  expect(stdout).toContain('demo: the collector has processed all 16 page views and 1 purchase of the shoppers');
  expect(stdout).toMatch(/Dashboard: http:\/\/127\.0\.0\.1:\d+\//);
  expect(stdout).toMatch(/Read token: csr_\S+/);
  const dataDir = /\(data in (\S+)\)/.exec(stdout)?.[1];
  expect(dataDir, stdout).toMatch(/cipherstat-demo-/);
  expect(existsSync(dataDir!), 'its data directory is removed').toBe(false);
}, 360_000);
