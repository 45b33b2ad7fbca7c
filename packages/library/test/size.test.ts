/** The <script> builds stay within their size budgets: `npm test` fails when one does not. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../scripts/size.mjs', import.meta.url));

describe('size budget', () => {
  it('cipherstat.min.js (envelope v2 core, no tweetnacl) is ≤ 6,200 bytes min+gzip (with CompressionStream deflate), cipherstat-storefront.min.js (core + autocapture, Web Vitals, commerce) ≤ 12,000; the fallback chunk size is printed', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [script]).catch((e: { stdout: string; stderr: string }) => {
      throw new Error(e.stdout + e.stderr);
    });
    expect(stdout).toMatch(/cipherstat\.min\.js .*budget 6200 B, \d+ B left/);
    expect(stdout).toMatch(/cipherstat-storefront\.min\.js .*budget 12000 B, \d+ B left/);
    expect(stdout).toMatch(/cipherstat-fallback\.min\.js \d+ B minified, \d+ B gzipped/);
    console.log(stdout.trim());
  });
});
