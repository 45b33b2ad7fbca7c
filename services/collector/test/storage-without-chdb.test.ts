/**
 * A node on a ClickHouse server does not need the embedded engine: `chdb` is an optional
 * dependency, loaded only when no `CLICKHOUSE_URL` is set. Proven with the real CLI in a
 * child process whose module resolution cannot find `chdb` (as after
 * `npm install --omit=optional`): on the test ClickHouse HTTP endpoint it starts, is ready
 * and acknowledges a batch; without a URL it refuses to start and says what to do.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClickHouseHttp, type ClickHouseHttp } from './support/clickhouse-http.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';
import { startCollectorProcess, stopProcess } from './support/faults.js';
import { tempDirs } from './support/temp-dirs.js';

const tmp = tempDirs('cipherstat-nochdb-');

let shim: ClickHouseHttp;
let blockChdb = '';

beforeAll(async () => {
  shim = await startClickHouseHttp({ dataDir: tmp() });
  // A resolve hook that finds no `chdb` (nor its library packages), as an install without optional dependencies.
  const hook = `export async function resolve(s, c, next) {
    if (s === 'chdb' || s.startsWith('chdb/') || s.startsWith('@chdb/')) {
      throw Object.assign(new Error("Cannot find package '" + s + "' (left out of this install)"), { code: 'ERR_MODULE_NOT_FOUND' });
    }
    return next(s, c);
  }`;
  blockChdb = join(tmp(), 'no-chdb.mjs');
  writeFileSync(blockChdb, `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)});\n`);
});
afterAll(async () => {
  await shim?.close();
});

const serve = (env: Record<string, string>) => startCollectorProcess(tmp(), env, { nodeArgs: ['--import', blockChdb] });

describe('an install without the embedded engine', () => {
  it('serves on a ClickHouse server and acknowledges batches', async () => {
    const node = await serve({ CLICKHOUSE_URL: shim.url });
    try {
      expect((await fetch(`${node.url}/readyz`)).status).toBe(200);
      const res = await fetch(`${node.url}/v1/accounts`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body: '{}',
      });
      expect(res.status).toBe(201);
      const account = (await res.json()) as TestAccount;
      const sent = await post(node.url, envelope(account, points(5)).bytes);
      expect(sent.status).toBe(202);
      // The batch reached the server: the endpoint received its insert.
      expect(shim.requests.some((r) => /INSERT INTO\s+\S*batches/i.test(r.query))).toBe(true);
    } finally {
      await stopProcess(node);
    }
  });

  it('without CLICKHOUSE_URL refuses to start and names the missing package and the alternative', async () => {
    const e = (await serve({}).then(
      async (p) => {
        await stopProcess(p);
        throw new Error('the collector started without its engine');
      },
      (err: unknown) => err,
    )) as { output: string; code: number };
    expect(e.code).not.toBe(0);
    expect(e.output).toContain('the embedded engine (npm package chdb) is not installed');
    expect(e.output).toContain('CLICKHOUSE_URL');
  });
});
