/**
 * The built npm entries in real Node processes: ESM and CJS load, a script that just
 * records and ends is flushed on `beforeExit`, persistPath works through createLibrary.
 * Needs the build (`npx rollup -c`; `npm test` builds first).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startCollector, type Collector } from './helpers/collector.js';

const dist = fileURLToPath(new URL('../dist/', import.meta.url));
const run = promisify(execFile);

let col: Collector;
beforeAll(() => {
  if (!existsSync(join(dist, 'index.js'))) throw new Error('packages/library/dist is missing: run `npx rollup -c` (npm test builds first)');
});
beforeEach(async () => {
  col = await startCollector();
});
afterEach(() => col.close());

const options = (extra = '') => `{ endpoint: ${JSON.stringify(col.endpoint)}, accountId: ${JSON.stringify(col.accountId)}, writeKey: ${JSON.stringify(col.writeKey)}${extra} }`;

describe('Node', () => {
  it('ESM: a script that records and simply ends is flushed on beforeExit', async () => {
    const code = `import { createLibrary } from ${JSON.stringify(join(dist, 'index.js'))};
      const lib = createLibrary(${options()});
      lib.count('job.done', 1, { queue: 'mail' });
      lib.observe('job.ms', 125);`;
    await run(process.execPath, ['--input-type=module', '-e', code], { timeout: 120_000 });
    expect(col.points().map((p) => p.name)).toEqual(['job.done', 'job.ms']);
  });

  it('CJS: require() works and shutdown() delivers before the handler returns', async () => {
    const code = `const { createLibrary, LibraryError, isLibraryError } = require(${JSON.stringify(join(dist, 'index.cjs'))});
      const lib = createLibrary(${options(', flushInterval: 3600000')});
      lib.count('lambda.invocation');
      try { createLibrary({}) } catch (e) { if (!isLibraryError(e) || !(e instanceof LibraryError)) process.exit(3) }
      lib.shutdown().then(() => process.exit(0));`;
    await run(process.execPath, ['-e', code], { timeout: 120_000 });
    expect(col.points().map((p) => p.name)).toEqual(['lambda.invocation']);
  });

  it('persistPath: a process that cannot deliver leaves its batch to the next one', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'cipherstat-')), 'q.json');
    col.script.push({ status: 503 });
    const first = `import { createLibrary } from ${JSON.stringify(join(dist, 'index.js'))};
      const lib = createLibrary(${options(`, persistPath: ${JSON.stringify(path)}, maxRetries: 0`)});
      lib.count('first.run');
      await lib.flush();
      process.exit(0);`;
    await run(process.execPath, ['--input-type=module', '-e', first], { timeout: 120_000 });
    expect(col.batches.size).toBe(0);
    expect(JSON.parse(readFileSync(path, 'utf8')).q).toHaveLength(1);
    const second = `import { createLibrary } from ${JSON.stringify(join(dist, 'index.js'))};
      createLibrary(${options(`, persistPath: ${JSON.stringify(path)}`)});`;
    await run(process.execPath, ['--input-type=module', '-e', second], { timeout: 120_000 });
    expect(col.points().map((p) => p.name)).toEqual(['first.run']);
    expect(JSON.parse(readFileSync(path, 'utf8')).q).toEqual([]);
  });

  it('the browser builds carry no Node code', () => {
    for (const f of ['browser.js', 'cipherstat.min.js']) {
      const text = readFileSync(join(dist, f), 'utf8');
      expect(text).not.toMatch(/['"]node:|process\.on\(|readFileSync|require\(/);
    }
    expect(readFileSync(join(dist, 'index.d.ts'), 'utf8')).toContain('createLibrary');
  });
});
