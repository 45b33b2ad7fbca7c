/** The <script> build stays within its size budget: `npm test` fails when it does not. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../scripts/size.mjs', import.meta.url));

describe('size budget', () => {
  it('cipherstat.min.js (envelope v2 core, no tweetnacl) is ≤ 6,000 bytes min+gzip; the fallback chunk size is printed', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [script]).catch((e: { stdout: string; stderr: string }) => {
      throw new Error(e.stdout + e.stderr);
    });
    expect(stdout).toMatch(/cipherstat\.min\.js .* B left/);
    expect(stdout).toMatch(/cipherstat-fallback\.min\.js \d+ B minified, \d+ B gzipped/);
    console.log(stdout.trim());
  });
});
