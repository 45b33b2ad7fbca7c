/**
 * examples/send-with-hpke/send.mjs (README "Send from any language"), run as its own Node
 * process against a real collector (127.0.0.1, chDB): the batch it sealed with @hpke/core
 * alone is accepted (202), processed as envelope v2, and its points are stored.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createAccount, startTestCollector, type TestCollector } from '../services/collector/test/support/collector.js';

let c: TestCollector;
beforeAll(async () => {
  c = await startTestCollector();
});
afterAll(async () => c?.stop());

it('the example seals and sends one v2 batch with only @hpke/core and fetch', async () => {
  const a = await createAccount(c);
  // the README's line, with this collector's URL and the account's id and write key
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const line = /<!-- readme-test: send-hpke -->\n```sh\n(.*)\n```/.exec(readme)![1]!;
  expect(line).toBe('node examples/send-with-hpke/send.mjs http://127.0.0.1:8787 "$ACCOUNT_ID" "$WRITE_KEY"');
  const { stdout } = await promisify(execFile)('sh', ['-c', line.replace('http://127.0.0.1:8787', c.url)], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, ACCOUNT_ID: a.accountId, WRITE_KEY: a.writeKey },
  });
  expect(stdout).toMatch(/^202 \{"batchId":"[0-9a-f]{32}","duplicate":false\}/);
  await c.services.processor!.drain();
  const m = await (await fetch(`${c.url}/v1/metrics`, { headers: { authorization: `Bearer ${a.readToken}` } })).json();
  expect(m.envelopes).toEqual({ '2': 1 });
  expect(m.rejects).toEqual({});
  expect(m.metrics.map((x: { name: string }) => x.name).sort()).toEqual(['orders', 'page.load_ms']);
});
