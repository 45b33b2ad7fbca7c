/** The <script> build stays within its size budget: `npm test` fails when it does not. */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('../scripts/size.mjs', import.meta.url));

describe('size budget', () => {
  it('cipherstat.min.js (tweetnacl included) is ≤ 10,000 bytes min+gzip', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [script]).catch((e: { stdout: string; stderr: string }) => {
      throw new Error(e.stdout + e.stderr);
    });
    expect(stdout).toMatch(/B left/);
  });
});
