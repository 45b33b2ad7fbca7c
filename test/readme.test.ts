/**
 * The README's first hour, taken from README.md itself and run in order against a real
 * collector started from this (built) checkout, the way a newcomer pastes it:
 *
 *   `npm start` → `npx cipherstat accounts create …` (its printed `<script>` tag pasted into a
 *   shop page in Chromium, with the README's consent + count lines) → `npx cipherstat accounts
 *   update|token` → the admin `curl` → the npm snippet in Node → the `curl` lines of the query
 *   API until the recorded data shows up → the dashboard with the read token, showing a chart.
 *
 * Then packages/library/README.md's script tag (in Chromium) and npm snippet (in Node).
 *
 * Every fenced block of README.md carries a `<!-- readme-test: NAME -->` marker; this file
 * runs each one or names why not (KNOWN), and fails on a block it does not know, so a new
 * snippet cannot go untested. Commands run from the repository root with only what the README
 * itself documents changed: `PORT` (a free port instead of 8787: tests run in parallel) and
 * `CIPHERSTAT_DATA_DIR` (a temporary directory instead of ./data); the curl lines get the same
 * substitutions in their literal URL and path, and the shop's origin `https://shop.example`
 * becomes the test's shop on 127.0.0.1 (Chromium refuses a public https page's requests to a
 * loopback collector: Local Network Access). Clock-independent: the data is polled for.
 * `npm install` itself is what `.ci/run` (`npm ci` on a fresh clone) and test/pack.test.ts do.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { launchChromium, startShop } from './support/browser.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const exec = promisify(execFile);

const LIBRARY_README = readFileSync(join(ROOT, 'packages/library/README.md'), 'utf8');

/** The marked fenced blocks of a README, in order. */
const blocksOf = (text: string) =>
  [...text.matchAll(/<!-- readme-test: ([\w-]+) -->\n```(\w*)\n([\s\S]*?)\n```/g)].map((m) => ({ name: m[1]!, lang: m[2]!, code: m[3]! }));
const BLOCKS = blocksOf(README);
const LIBRARY_BLOCKS = blocksOf(LIBRARY_README);
const block = (name: string, blocks = BLOCKS): string => {
  const b = blocks.find((x) => x.name === name);
  if (!b) throw new Error(`no README block marked readme-test: ${name}`);
  return b.code;
};
/** Command lines of a shell block: comments and comment-only lines dropped. */
const commands = (code: string): string[] =>
  code
    .split('\n')
    .map((l) => l.replace(/\s+#.*$/, '').trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

/** Blocks this file runs, and those it does not, with the reason. */
const RUN = ['start', 'create', 'manage', 'http-create', 'script', 'npm', 'metrics', 'metrics-answer', 'query', 'query-answer', 'query-hourly', 'query-columns-answer', 'query-columns'];
/** packages/library/README.md: its blocks run here, or why not. */
const LIBRARY_RUN = ['script', 'npm'];
const LIBRARY_KNOWN: Record<string, string> = { install: '`npm i` from the registry: the packed tarball installs in test/pack.test.ts' };
const KNOWN: Record<string, string> = {
  caddy: 'a reverse-proxy example (README: "no test runs them")',
  nginx: 'a reverse-proxy example (README: "no test runs them")',
  systemd: 'a unit file example (README: "no test runs them")',
  'transport-keyring': 'run by services/collector/test/keyring-transport.test.ts (these two lines, with its directories)',
  cluster: 'these roles run as child processes on one ClickHouse endpoint in services/collector/test/cluster-failover.test.ts (support/cluster.ts: with their data directories and ports)',
  'send-hpke': 'run against a real collector by test/example-send-with-hpke.test.ts (the same line, with its URL and account)',
  storefront: 'run in Chromium against a real collector by test/storefront.test.ts (its URL and account filled in)',
  demo: 'run by test/storefront-demo.test.ts (with free ports, 4 shoppers and --exit)',
  otel: 'run against a real collector by packages/otel/test/otel.test.ts (the same code, with its URL and account)',
  'otel-install': '`npm i` from the registry: the packed tarball installs with OpenTelemetry from the registry in test/pack.test.ts',
};

let dir: string;
let server: ChildProcess;
let serverLog = '';
let url: string;
let browser: Browser | undefined;
let shop: Server | undefined;
let shopOrigin: string;
/** The page the shop serves at /checkout (set once the snippet is known). */
let shopPage = '';
/** What `accounts create` printed. */
let created: { accountId: string; writeKey: string; readToken: string; keyId: string; publicKey: string; snippet: string };
let readToken: string;

/** The environment of every command: the README's defaults, moved to this test's port and directory. */
const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = { ...process.env, CIPHERSTAT_DATA_DIR: dir, PORT: url ? new URL(url).port : '0', HOST: '127.0.0.1', npm_config_yes: 'false' };
  for (const k of ['CIPHERSTAT_URL', 'CIPHERSTAT_ADMIN_TOKEN', 'CIPHERSTAT_HOST', 'CIPHERSTAT_PORT']) delete e[k];
  return e;
};
/** The README's literal address and data path, as this test runs them. */
const local = (code: string): string =>
  code.replaceAll('http://127.0.0.1:8787', url).replaceAll('localhost:8787', url.replace('http://', '')).replaceAll('data/admin.token', join(dir, 'admin.token'));
/** Runs one shell line from the repository root; its stdout. */
async function sh(line: string, extra: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await exec('bash', ['-c', line], { cwd: ROOT, env: { ...env(), ...extra }, timeout: 120_000, maxBuffer: 16 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    throw new Error(`\`${line}\` failed (exit ${err.code}):\n${err.stdout}\n${err.stderr}`);
  }
}
const until = async <T>(what: string, f: () => Promise<T | undefined>, ms = 120_000): Promise<T> => {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 500));
  }
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cipherstat-readme-'));
  ({ server: shop, origin: shopOrigin } = await startShop((req, res) =>
    req.url === '/checkout' ? res.writeHead(200, { 'content-type': 'text/html' }).end(shopPage) : res.writeHead(req.url === '/favicon.ico' ? 204 : 404).end(),
  ));
});
afterAll(async () => {
  await browser?.close();
  shop?.close();
  if (server?.pid && server.exitCode === null) {
    process.kill(-server.pid, 'SIGTERM'); // npm and the collector it started
    await new Promise((r) => server.once('exit', r));
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('README.md, from the top, in order', () => {
  it('marks every fenced block, and each is run here or named with the reason it is not', () => {
    const fences = README.split('\n').filter((l) => l.startsWith('```')).length / 2;
    expect(BLOCKS.length, 'every ``` block of README.md is preceded by <!-- readme-test: NAME -->').toBe(fences);
    for (const b of BLOCKS) expect([...RUN, ...Object.keys(KNOWN)], `README block ${b.name}`).toContain(b.name);
    for (const name of RUN) expect(BLOCKS.map((b) => b.name)).toContain(name);
    expect(LIBRARY_BLOCKS.length, 'every ``` block of packages/library/README.md is marked').toBe(LIBRARY_README.split('\n').filter((l) => l.startsWith('```')).length / 2);
    expect(LIBRARY_BLOCKS.map((b) => b.name).sort()).toEqual([...LIBRARY_RUN, ...Object.keys(LIBRARY_KNOWN)].sort());
  });

  it('`npm start` serves the collector and generates the master key and admin token in the data directory', async () => {
    const lines = commands(block('start'));
    expect(lines[0]).toBe('npm install && npm start');
    const start = lines[0]!.split('&&').map((s) => s.trim())[1]!;
    server = spawn('bash', ['-c', start], { cwd: ROOT, env: env(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    server.stdout!.on('data', (d) => (serverLog += d));
    server.stderr!.on('data', (d) => (serverLog += d));
    url = await until('the collector to listen', async () => /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(serverLog)?.[1] ?? (server.exitCode !== null ? Promise.reject(new Error(serverLog)) : undefined));
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    for (const f of ['admin.token', 'master-keys']) expect(existsSync(join(dir, f)), f).toBe(true);
    expect(statSync(join(dir, 'admin.token')).mode & 0o777).toBe(0o600);
    expect(serverLog).toMatch(/master key/i);
    expect(serverLog).toMatch(/admin token/i);
  });

  it('`npx cipherstat accounts create` prints the account, keys, read token and the script tag to paste', async () => {
    const code = block('create');
    const [line] = commands(code);
    expect(line).toBe('npx cipherstat accounts create --origin https://shop.example');
    const out = await sh(line!.replace('https://shop.example', shopOrigin));
    // the lines the README shows, in its order
    const labels = code.split('\n').filter((l) => l.startsWith('# ')).map((l) => /^# (\S+(?: \S+)?)\s{2,}/.exec(l)![1]!);
    expect(labels).toEqual(['account', 'write key', 'read token', 'collector']);
    const value = (label: string) => new RegExp(`^${label}\\s+(\\S+)(?: (\\S+))?`, 'm').exec(out)?.slice(1);
    const at = labels.map((l) => out.search(new RegExp(`^${l}\\s`, 'm')));
    expect(at.every((x, i) => x >= 0 && (i === 0 || x > at[i - 1]!)), out).toBe(true);
    const snippet = /<script [\s\S]*?><\/script>/.exec(out)?.[0];
    expect(snippet, out).toBeDefined();
    created = {
      accountId: value('account')![0]!,
      writeKey: value('write key')![0]!,
      readToken: value('read token')![0]!,
      keyId: value('collector')![0]!,
      publicKey: value('collector')![1]!,
      snippet: snippet!,
    };
    expect(created.accountId).toMatch(/^acct_[0-9a-f]{24}$/);
    expect(created.readToken).toMatch(/^csr_/);
    expect(created.snippet).toContain(`src="${url}/cipherstat.`);
    expect(created.snippet).toContain(`data-account="${created.accountId}"`);
    expect(created.snippet).toContain(`data-collector-key="${created.publicKey}"`);
    readToken = created.readToken;
  });

  it('`accounts update` and `accounts token --rotate` work as written; the old read token is refused at once', async () => {
    const [update, rotate] = commands(block('manage')).map((l) => l.replaceAll('acct_3f9c…', created.accountId).replaceAll('https://shop.example', shopOrigin));
    expect(await sh(update!)).toContain('Shop DE');
    const shown = JSON.parse(await sh(`npx cipherstat accounts show ${created.accountId} --json`));
    expect(shown).toMatchObject({ name: 'Shop DE', allowedOrigins: [shopOrigin], retentionDays: 90 });
    const rotated = await sh(rotate!);
    readToken = /read token\s+(csr_\S+)/.exec(rotated)?.[1] ?? '';
    expect(readToken, rotated).toMatch(/^csr_/);
    const metrics = (token: string) => fetch(`${url}/v1/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect((await metrics(created.readToken)).status).toBe(401);
    expect((await metrics(readToken)).status).toBe(200);
  });

  it('the admin `curl` creates an account with the token from data/admin.token', async () => {
    const [line] = commands(block('http-create'));
    const body = JSON.parse(await sh(local(line!)));
    expect(body.accountId).toMatch(/^acct_[0-9a-f]{24}$/);
    expect(body.writeKey).toBeTruthy();
    expect(body.readToken).toMatch(/^csr_/);
  });

  it('the printed script tag, pasted into a shop page with the README\'s consent lines, records in Chromium', async () => {
    const html = block('script');
    const [readmeTag, inline] = [...html.matchAll(/<script[\s\S]*?<\/script>/g)].map((m) => m[0]);
    // The README's tag is the printed one plus `data-require-consent` (the consent example).
    const attrs = (tag: string) => [...tag.matchAll(/\s([\w-]+)(?==|\s|>)/g)].map((m) => m[1]!).sort();
    expect(attrs(readmeTag!)).toEqual([...attrs(created.snippet), 'data-require-consent'].sort());
    expect(inline).toContain("Cipherstat.instance.count('orders', 1, { country: 'DE' })");
    shopPage = `<!doctype html><meta charset="utf-8"><title>shop</title>
${created.snippet.replace('></script>', ' data-require-consent></script>')}
${inline}`;
    browser = await launchChromium();
    const tab = await browser.newPage();
    const problems: string[] = [];
    tab.on('pageerror', (e) => problems.push(e.message));
    tab.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    // (not `requestfailed`: Chromium reports the Library's batch POST as aborted once its 202 came back)
    const batches: number[] = [];
    tab.on('response', (r) => r.url().startsWith(`${url}/v1/batches`) && batches.push(r.status()));
    const requests: string[] = [];
    tab.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
    await tab.goto(`${shopOrigin}/checkout`); // the origin `--origin` allowed
    await until('the page to send its batch', async () => (batches.includes(202) ? true : undefined), 120_000).catch((e) => {
      throw new Error(`${e.message}\n${[...requests, ...problems].join('\n')}`);
    });
    expect(batches.filter((st) => st !== 202 && st !== 429 && st !== 503), problems.join('\n')).toEqual([]); // a busy collector may ask for a retry; the counts below prove nothing was lost
    expect(problems, requests.join('\n')).toEqual([]);
  });

  it('the npm snippet runs in Node as written', async () => {
    const code = block('npm')
      .replaceAll('https://metrics.shop.example', url)
      .replaceAll('acct_3f9c…', created.accountId)
      .replaceAll('m1x…=', created.writeKey);
    expect(code).not.toContain('…');
    // inside the checkout (gitignored .tmp/), so `@cipherstat/library` resolves to the built package
    const tmp = join(ROOT, '.tmp');
    mkdirSync(tmp, { recursive: true });
    const file = join(tmp, `readme-npm-${process.pid}.mjs`);
    writeFileSync(file, code); // exactly as written: it must also exit by itself (the Library's timers do not keep Node alive)
    try {
      await exec(process.execPath, [file], { cwd: ROOT, env: env(), timeout: 120_000 });
    } finally {
      rmSync(file, { force: true });
    }
  });

  it('`curl …/v1/metrics` shows what was recorded, shaped like the README\'s answer', async () => {
    const [line] = commands(block('metrics'));
    const answer = await until('both orders and the Node metrics', async () => {
      const r = JSON.parse(await sh(local(line!), { READ_TOKEN: readToken }));
      const orders = r.metrics?.find((m: { name: string }) => m.name === 'orders');
      const names = (r.metrics ?? []).map((m: { name: string }) => m.name);
      return orders?.points24h === 2 && names.includes('page.load_ms') && names.includes('cart.items') ? r : undefined;
    });
    const documented = JSON.parse(block('metrics-answer').replaceAll('…', ''));
    expect(Object.keys(answer)).toEqual(expect.arrayContaining(Object.keys(documented)));
    const orders = answer.metrics.find((m: { name: string }) => m.name === 'orders');
    expect(Object.keys(orders).sort()).toEqual(expect.arrayContaining(Object.keys(documented.metrics[0]).sort()));
    expect(orders).toMatchObject({ kind: 'counter', points24h: 2 });
    expect(orders.tags).toEqual([{ key: 'country', values: ['DE'], distinctValues: 1 }]);
  });

  it('the `curl` lines of POST /v1/query answer as documented, and the recorded page load is there', async () => {
    // The reference example: its range is fixed (March 2026), so its buckets and meta are exactly the README's.
    const res = JSON.parse(await sh(local(block('query')), { READ_TOKEN: readToken }));
    const documented = JSON.parse(block('query-answer').replace(/, …\]/g, ']'));
    for (const k of ['metric', 'aggregation', 'interval', 'timezone', 'from', 'to', 'level'] as const) expect(res.meta?.[k], JSON.stringify(res)).toBe(documented.meta[k]);
    expect(Object.keys(res.meta).sort()).toEqual(Object.keys(documented.meta).sort());
    expect(res.series).toEqual([]); // nothing was recorded then: no group has data
    // The hourly p95 of the last 24 hours: the Node snippet's page load, and only it.
    const hourly = block('query-hourly');
    const answer = await until('the page load in the hourly p95', async () => {
      const r = JSON.parse(await sh(local(hourly), { READ_TOKEN: readToken }));
      return r.series?.[0]?.points.some(([, v]: [number, number | null]) => v !== null) ? r : undefined;
    });
    expect(answer.meta).toMatchObject({ metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', timezone: 'Asia/Kolkata', failedRows: 0 });
    const values = answer.series[0].points.filter(([, v]: [number, number | null]) => v !== null);
    expect(values).toHaveLength(1);
    expect(values[0][1]).toBeGreaterThan(0);
    // the same in the columns form: every bucket once, the same value at the same bucket start
    const columns = JSON.parse(await sh(local(block('query-columns')), { READ_TOKEN: readToken }));
    expect(Object.keys(columns)).toEqual(['buckets', 'series', 'meta']);
    expect(columns.meta).toMatchObject({ metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', timezone: 'Asia/Kolkata', failedRows: 0 });
    expect(columns.series).toHaveLength(1);
    expect(columns.series[0].values).toHaveLength(columns.buckets.length);
    const at = columns.buckets.indexOf(values[0][0]);
    expect(at, JSON.stringify(columns)).toBeGreaterThanOrEqual(0);
    expect(columns.series[0].values[at]).toBe(values[0][1]);
    expect(columns.series[0].values.filter((v: number | null) => v !== null)).toHaveLength(1);
    // the documented columns answer: the first example's answer in that form
    const documentedColumns = JSON.parse(block('query-columns-answer').replace(/, …\]/g, ']'));
    expect(Object.keys(documentedColumns)).toEqual(['buckets', 'series', 'meta']);
    expect(documentedColumns.meta).toEqual(documented.meta);
    expect(documentedColumns.buckets).toEqual(documented.series[0].points.map(([t]: [number]) => t));
    documentedColumns.series.forEach((s: { tags: object; values: number[] }, i: number) => {
      expect(s.tags).toEqual(documented.series[i].tags);
      expect(s.values).toEqual(documented.series[i].points.map(([, v]: [number, number]) => v));
    });
    // and the order from the browser and the one from Node, counted per hour
    const orders = JSON.parse(
      await sh(local(`curl -s http://127.0.0.1:8787/v1/query -H "Authorization: Bearer $READ_TOKEN" -d '{"metric":"orders","aggregation":"count","interval":"day","from":${Date.now() - 86_400_000},"to":${Date.now() + 60_000}}'`), { READ_TOKEN: readToken }),
    );
    expect(orders.series[0].points.reduce((n: number, [, v]: [number, number]) => n + v, 0)).toBe(2);
  });

  it('the dashboard, opened and given the read token as the README says, shows a chart of the data', async () => {
    const open = /Open `(http:\/\/127\.0\.0\.1:8787\/)` and paste a read token/.exec(README);
    expect(open, 'README › Dashboard: "Open `http://127.0.0.1:8787/` and paste a read token"').not.toBeNull();
    const tab = await browser!.newPage();
    await tab.goto(local(open![1]!));
    await tab.fill('#token', readToken);
    await tab.click('#login button[type=submit]');
    await tab.waitForSelector('#chart canvas', { timeout: 60_000 });
    await tab.waitForFunction(() => document.querySelectorAll('#table tbody tr').length > 0, null, { timeout: 60_000 });
    await tab.close();
  });

  it('packages/library/README.md: its script tag in Chromium and its npm snippet in Node record what they show', async () => {
    const html = block('script', LIBRARY_BLOCKS)
      .replace('https://cdn.example/cipherstat.min.js', `${url}/cipherstat.min.js`)
      .replace('https://collector.example.com', url)
      .replace('acct_1234abcd', created.accountId)
      .replace('BASE64-ACCOUNT-PUBLIC-KEY', created.writeKey);
    shopPage = `<!doctype html><meta charset="utf-8"><title>shop</title>\n${html}`;
    const tab = await browser!.newPage();
    const problems: string[] = [];
    tab.on('pageerror', (e) => problems.push(e.message));
    tab.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    const batches: number[] = [];
    tab.on('response', (r) => r.url().startsWith(`${url}/v1/batches`) && batches.push(r.status()));
    await tab.goto(`${shopOrigin}/checkout`);
    await until('the page to send its batch', async () => (batches.includes(202) ? true : undefined), 120_000);
    expect(batches.filter((st) => st !== 202 && st !== 429 && st !== 503), problems.join('\n')).toEqual([]); // a busy collector may ask for a retry; the counts below prove nothing was lost
    expect(problems).toEqual([]);
    await tab.close();

    const code = block('npm', LIBRARY_BLOCKS)
      .replaceAll('https://collector.example.com', url)
      .replaceAll('acct_1234abcd', created.accountId)
      .replaceAll('BASE64-ACCOUNT-PUBLIC-KEY', created.writeKey);
    const tmp = join(ROOT, '.tmp');
    mkdirSync(tmp, { recursive: true });
    const file = join(tmp, `readme-library-${process.pid}.mjs`); // the snippet is plain JavaScript
    writeFileSync(file, code);
    try {
      await exec(process.execPath, [file], { cwd: ROOT, env: env(), timeout: 120_000 });
    } finally {
      rmSync(file, { force: true });
    }
    const [line] = commands(block('metrics'));
    const seen = await until('checkout.started and the third order', async () => {
      const r = JSON.parse(await sh(local(line!), { READ_TOKEN: readToken }));
      const byName = new Map<string, { points24h: number; tags: { key: string; values: string[] }[] }>((r.metrics ?? []).map((m: { name: string }) => [m.name, m]));
      return byName.get('checkout.started')?.points24h === 1 && byName.get('orders')?.points24h === 3 && byName.get('revenue')?.points24h === 2 ? byName : undefined;
    });
    expect(seen.get('checkout.started')!.tags).toEqual([{ key: 'country', values: ['DE'], distinctValues: 1 }]);
    expect(seen.get('revenue')!.tags.map((t) => t.key)).toContain('currency');
    expect(seen.get('page.load_ms')!.points24h).toBe(2);
  });
});
