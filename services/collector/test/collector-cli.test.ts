/** The `cipherstat` CLI against a data directory and against a running collector. */
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { statSync, existsSync, writeFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { ADMIN_TOKEN } from './support/collector.js';
import { tempDirs } from './support/temp-dirs.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const run = promisify(execFile);
const tmp = tempDirs('cipherstat-cli-');

const cli = async (args: string[], env: Record<string, string> = {}, cwd?: string) => {
  const { stdout } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, cwd });
  return stdout;
};
/** A command expected to fail: its exit code and stderr. */
const failing = async (args: string[], cwd?: string) => {
  try {
    const env = { ...process.env };
    delete env.CIPHERSTAT_URL;
    delete env.CIPHERSTAT_DATA_DIR;
    await run(process.execPath, [CLI, ...args], { cwd, env });
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, stderr: err.stderr };
  }
  throw new Error(`cipherstat ${args.join(' ')} succeeded`);
};

it('creates, lists and shows accounts in a data directory, with --json', async () => {
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

it('talks to a running collector with the admin token', async () => {
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
    // the snippet to paste: the script this collector serves, its integrity, the pinned key
    expect(created.snippet).toContain(`src="${url}/cipherstat.`);
    expect(created.snippet).toMatch(/integrity="sha384-[A-Za-z0-9+/]+=*" crossorigin="anonymous"/);
    expect(created.snippet).toContain(`data-collector-key="${created.collectorKey.publicKey}"`);
    // and the storefront build's tag (autocapture on): served at its content-named path, with that integrity
    const sf = /src="([^"]+)" integrity="(sha384-[^"]+)" crossorigin="anonymous"/.exec(created.storefrontSnippet)!;
    expect(sf[1]).toMatch(new RegExp(`^${url}/cipherstat-storefront\\.[0-9a-f]{16}\\.min\\.js$`));
    expect(created.storefrontSnippet).toContain(`data-account="${created.accountId}"`);
    expect(created.storefrontSnippet).toContain(' data-auto></script>');
    const served = Buffer.from(await (await fetch(sf[1]!)).arrayBuffer());
    expect(`sha384-${createHash('sha384').update(served).digest('base64')}`).toBe(sf[2]);
    expect(served.equals(readFileSync(fileURLToPath(new URL('../dist/script/cipherstat-storefront.min.js', import.meta.url))))).toBe(true);

    // the right data directory but the wrong port: the lock error, translated
    const wrongPort = await failing(['accounts', 'list', '--data-dir', dir, '--port', '1']);
    expect(wrongPort.stderr).toContain(`a collector is running on this data directory (${dir}) but does not answer at http://127.0.0.1:1 — use --url`);

    // name, origins, retention; then a new read token: the old one is refused at once
    const env = { CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_URL: url };
    const updated = JSON.parse(await cli(['accounts', 'update', created.accountId, '--name', 'Shop DE', '--origin', 'https://a.example', '--origin', 'https://b.example', '--retention-days', '30', '--json'], env));
    expect(updated).toMatchObject({ name: 'Shop DE', allowedOrigins: ['https://a.example', 'https://b.example'], retentionDays: 30 });
    expect(await cli(['accounts', 'list'], env)).toContain('Shop DE');
    const rotated = await cli(['accounts', 'token', created.accountId, '--rotate'], env);
    const readToken = /read token\s+(csr_\S+)/.exec(rotated)![1]!;
    const metrics = (token: string) => fetch(`${url}/v1/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect((await metrics(created.readToken)).status).toBe(401);
    expect((await metrics(readToken)).status).toBe(200);
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

it('never hands the admin token to a server that is not the collector of its data directory', async () => {
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

it('refuses plain http to a host that is not this one without --insecure-http', async () => {
  const refused = await cliFails(['accounts', 'list', '--url', 'http://192.0.2.1:8787', '--token', ADMIN_TOKEN]);
  expect(refused.stderr).toMatch(/refusing to send the admin token over plain http to 192\.0\.2\.1: use https:\/\/, or pass --insecure-http/);
  // with the flag it goes on (and finds nothing at this documentation address)
  const insecure = await cliFails(['accounts', 'list', '--url', 'http://192.0.2.1:8787', '--token', ADMIN_TOKEN, '--insecure-http']);
  expect(insecure.stderr).toMatch(/no collector answers at http:\/\/192\.0\.2\.1:8787/);
});

it('help: a list, then per command with examples; `help X` and `X --help` agree', async () => {
  const all = await cli(['help']);
  for (const c of ['serve', 'accounts create', 'accounts update ID', 'accounts token ID --rotate', 'keyring backup']) expect(all).toContain(`cipherstat ${c}`);
  expect(all).toContain('CIPHERSTAT_URL');
  const update = await cli(['help', 'accounts', 'update']);
  expect(update).toContain('Examples:\n  cipherstat accounts update acct_');
  expect(await cli(['accounts', 'update', '--help'])).toBe(update);
  expect(await cli(['accounts', 'delete', '-h'])).toContain('--now shreds at once');
  expect(await cli(['help', 'accounts'])).toContain('cipherstat accounts wipe ID');
  expect((await failing(['help', 'nonsense'])).code).toBe(2);
});

it('read-only commands in the wrong directory create nothing and say where they looked', async () => {
  const cwd = tmp();
  const r = await failing(['accounts', 'list', '--port', '1'], cwd);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(`no collector answers at http://127.0.0.1:1, and ${join(cwd, 'data')} holds no collector data (looked for ${join(cwd, 'data', 'keyring')})`);
  expect(r.stderr).toContain('--url URL (or CIPHERSTAT_URL)');
  for (const args of [['accounts', 'show', 'acct_000000000000000000000000'], ['verify', 'acct_000000000000000000000000'], ['keyring', 'backup']]) {
    expect((await failing([...args, '--port', '1'], cwd)).code).toBe(1);
  }
  expect(existsSync(join(cwd, 'data'))).toBe(false); // no data directory, no master key, no admin token
});

it('delete --now asks for confirmation (refuses without a terminal), --yes skips it; output is human unless --json', async () => {
  const dir = tmp();
  const at = ['--data-dir', dir, '--port', '1'];
  const { accountId } = JSON.parse(await cli(['accounts', 'create', '--json', ...at]));
  const refused = await failing(['accounts', 'delete', accountId, '--now', ...at]);
  expect(refused.stderr).toContain('refusing without confirmation (pass --yes)');
  expect(JSON.parse(await cli(['accounts', 'show', accountId, '--json', ...at])).state).toBe('active');
  const done = await cli(['accounts', 'delete', accountId, '--now', '--yes', ...at]);
  expect(done).toMatch(/^state\s+shredded$/m);
  expect(() => JSON.parse(done)).toThrow();
  expect(JSON.parse(await cli(['verify', accountId, '--json', ...at])).ok).toBe(true);
});
