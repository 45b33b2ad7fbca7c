/** The `cipherstat` CLI against a data directory and against a running collector. */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { ADMIN_TOKEN } from './support/collector.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const run = promisify(execFile);
const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'cipherstat-cli-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const cli = async (args: string[], env: Record<string, string> = {}) => {
  const { stdout } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } });
  return stdout;
};

it('creates, lists and shows accounts in a data directory, with --json', { timeout: 60_000 }, async () => {
  expect(existsSync(CLI), 'run `npm run build` first').toBe(true);
  const dir = tmp();
  // --port 1: nothing listens there, so the CLI opens the data directory itself.
  const created = JSON.parse(await cli(['accounts', 'create', '--json', '--data-dir', dir, '--port', '1', '--origin', 'https://shop.example', '--retention-days', '90']));
  expect(created.accountId).toMatch(/^acct_[0-9a-f]{24}$/);
  expect(created.readToken).toMatch(/^csr_/);
  expect(created.writeKey).toHaveLength(44);
  const list = JSON.parse(await cli(['accounts', 'list', '--json', '--data-dir', dir, '--port', '1']));
  expect(list.map((a: { accountId: string }) => a.accountId)).toEqual([created.accountId]);
  const shown = JSON.parse(await cli(['accounts', 'show', created.accountId, '--json', '--data-dir', dir, '--port', '1']));
  expect(shown).toMatchObject({ accountId: created.accountId, state: 'active', retentionDays: 90, allowedOrigins: ['https://shop.example'] });
  // The generated admin token and master key are private files.
  expect(statSync(join(dir, 'admin.token')).mode & 0o777).toBe(0o600);
  const human = await cli(['accounts', 'list', '--data-dir', dir, '--port', '1']);
  expect(human).toContain(created.accountId);
});

it('talks to a running collector with the admin token', { timeout: 60_000 }, async () => {
  const dir = tmp();
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, PORT: '0', CIPHERSTAT_DATA_DIR: dir, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const url = await new Promise<string>((resolve) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
        if (m) resolve(m[1]!);
      });
    });
    const created = JSON.parse(await cli(['accounts', 'create', '--json', '--url', url], { CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN }));
    const shown = JSON.parse(await cli(['accounts', 'show', created.accountId, '--json', '--url', url, '--token', ADMIN_TOKEN]));
    expect(shown.state).toBe('active');
    await expect(cli(['accounts', 'list', '--url', url, '--token', 'csa_wrong_token_wrong_token_wrong_token'])).rejects.toThrow(/401 unauthorized/);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});
