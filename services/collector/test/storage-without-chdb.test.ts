/**
 * A node on a ClickHouse server does not need the embedded engine: `chdb` is an optional
 * dependency, loaded only when no `CLICKHOUSE_URL` is set. Proven with the real CLI in a
 * child process whose module resolution cannot find `chdb` (as after
 * `npm install --omit=optional`): on the test ClickHouse HTTP endpoint it starts, is ready
 * and acknowledges a batch; without a URL it refuses to start and says what to do.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startClickHouseHttp, type ClickHouseHttp } from './support/clickhouse-http.js';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './support/collector.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const dirs: string[] = [];
const children: ChildProcess[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'cipherstat-nochdb-'));
  dirs.push(d);
  return d;
};

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
  for (const ch of children) if (ch.exitCode === null && ch.signalCode === null) ch.kill('SIGKILL');
  await shim?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function serve(env: Record<string, string>): Promise<{ url: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', blockChdb, CLI, 'serve'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_DATA_DIR: tmp(), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ url: m[1]!, stop: async () => (child.kill('SIGTERM'), await exited) });
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(Object.assign(new Error(`collector exited (${code}): ${out.slice(-3000)}`), { out, code })));
  });
}

describe('an install without the embedded engine', () => {
  it('serves on a ClickHouse server and acknowledges batches', { timeout: 300_000 }, async () => {
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
      await node.stop();
    }
  });

  it('without CLICKHOUSE_URL refuses to start and names the missing package and the alternative', { timeout: 300_000 }, async () => {
    const e = (await serve({}).then(
      () => {
        throw new Error('the collector started without its engine');
      },
      (err: unknown) => err,
    )) as { out: string; code: number };
    expect(e.code).not.toBe(0);
    expect(e.out).toContain('the embedded engine (npm package chdb) is not installed');
    expect(e.out).toContain('CLICKHOUSE_URL');
  });
});
