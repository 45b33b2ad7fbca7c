/**
 * Temporary directories of a test file, removed after each test or after the file: the block
 * every test file that needs a directory used to write for itself.
 *
 *   const tmp = tempDirs('cipherstat-cli-');          // removed after the file
 *   const tempDir = tempDirs('cs-keyring-', 'each');   // removed after each test
 *   tmp(); tmp('ch');                                  // → /tmp/cipherstat-cli-XXXXXX, /tmp/cipherstat-cli-ch-XXXXXX
 *
 * Register it before any other after-hook that must run first (vitest runs after-hooks last
 * registered, first: a file that kills child processes registers that hook after this one).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach } from 'vitest';

export function tempDirs(prefix: string, removed: 'each' | 'all' = 'all'): (name?: string) => string {
  const dirs: string[] = [];
  (removed === 'each' ? afterEach : afterAll)(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return (name) => {
    const d = mkdtempSync(join(tmpdir(), name === undefined ? prefix : `${prefix}${name}-`));
    dirs.push(d);
    return d;
  };
}
