/** The `cipherstat` CLI against a data directory and against a running collector. */
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, statSync, existsSync, writeFileSync } from 'node:fs';
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

it('talks to a running collector with the admin token', { timeout: 120_000 }, async () => {
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
    // a token this collector does not hold is never sent: the collector cannot prove it is its collector
    await expect(cli(['accounts', 'list', '--url', url, '--token', 'csa_wrong_token_wrong_token_wrong_token'])).rejects.toThrow(/could not prove it is the collector of the admin token from --token/);
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
});

/** Runs the CLI expecting it to fail; returns its exit code and stderr. */
const cliFails = async (args: string[], env: Record<string, string> = {}) => {
  try {
    await run(process.execPath, [CLI, ...args], { env: { ...process.env, CIPHERSTAT_ADMIN_TOKEN: '', ...env } });
  } catch (e) {
    const { code, stderr } = e as { code: number; stderr: string };
    return { code, stderr };
  }
  throw new Error('the CLI succeeded');
};

it('never hands the admin token to a server that is not the collector of its data directory', { timeout: 60_000 }, async () => {
  // An impostor took the port while the collector is down: it answers everything with 200.
  const seen: string[] = [];
  const impostor = createServer((req, res) => {
    seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
    res.setHeader('content-type', 'application/json');
    res.end(req.url === '/v1/admin-proof' ? JSON.stringify({ proof: '00'.repeat(32) }) : '{"status":"ok","accounts":[]}');
  });
  await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', r));
  const port = (impostor.address() as AddressInfo).port;
  try {
    const dir = tmp();
    writeFileSync(join(dir, 'admin.token'), `${ADMIN_TOKEN}\n`, { mode: 0o600 });
    const viaPort = await cliFails(['accounts', 'list', '--data-dir', dir, '--url', `http://127.0.0.1:${port}`]);
    expect(viaPort.code).toBe(1);
    expect(viaPort.stderr).toMatch(new RegExp(`could not prove it is the collector of the admin token from ${join(dir, 'admin.token')}, so the token was not sent`));
    const viaUrl = await cliFails(['accounts', 'create', '--url', `http://127.0.0.1:${port}`, '--token', ADMIN_TOKEN]);
    expect(viaUrl.stderr).toMatch(/could not prove/);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((l) => l.includes(ADMIN_TOKEN) || l.includes('Bearer'))).toEqual([]);
    expect(seen.filter((l) => !/^GET \/healthz |^POST \/v1\/admin-proof $/.test(l))).toEqual([]);
  } finally {
    impostor.close();
  }
});

it('refuses plain http to a host that is not this one without --insecure-http', { timeout: 60_000 }, async () => {
  const refused = await cliFails(['accounts', 'list', '--url', 'http://192.0.2.1:8787', '--token', ADMIN_TOKEN]);
  expect(refused.stderr).toMatch(/refusing to send the admin token over plain http to 192\.0\.2\.1: use https:\/\/, or pass --insecure-http/);
  // with the flag it goes on (and finds nothing at this documentation address)
  const insecure = await cliFails(['accounts', 'list', '--url', 'http://192.0.2.1:8787', '--token', ADMIN_TOKEN, '--insecure-http']);
  expect(insecure.stderr).toMatch(/no collector answers at http:\/\/192\.0\.2\.1:8787/);
});
