#!/usr/bin/env node
/**
 * cipherstat serve | accounts create|list|show|update|delete|restore|wipe | verify | keys rotate
 * | keyring backup|restore|rotate-master
 *
 * Account commands talk to a running collector when one answers (at --url, $CIPHERSTAT_URL,
 * or http://$HOST:$PORT), authenticated with the admin token; otherwise they open the data
 * directory directly (embedded ClickHouse holds one process per data directory, so never
 * both at once).
 */
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from './config.js';
import { openServices, startCollector } from './services.js';
import { pino } from 'pino';
import { createLogger } from './logger.js';
import { Keyring, adminProof, hashToken, loadMasterKeys } from './keyring/index.js';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { isKeyringError } from './keyring/index.js';
import { isCollectorError } from './errors.js';
import { loadScript, scriptSnippet } from './script.js';
import { lastRotation, lifecycleEnv, rotateMaster, DEFAULT_MASTER_ROTATION_DAYS } from './lifecycle/index.js';

const HELP = `cipherstat — encrypted metrics collector

  cipherstat serve [--role all|ingest|process|query] [--host H] [--port P] [--data-dir D] [--partition i/n]
  cipherstat accounts create [--origin URL ...] [--retention-days N] [--confidential] [--json]
  cipherstat accounts list [--json]
  cipherstat accounts show ID [--json]                 (purge progress of a shredded account)
  cipherstat accounts update ID [--confidential | --no-confidential] [--retention-days N] [--origin URL ...]
  cipherstat accounts delete ID [--grace DAYS] [--now]  deactivate; shred after the grace period (default 7 days), or now
  cipherstat accounts restore ID                       undo a delete inside the grace period
  cipherstat accounts wipe ID                          new key pair + data keys, old ones destroyed: every copy of the data
                                                      so far unreadable; prints the NEW write key once (old one: 400 stale_write_key)
  cipherstat verify ID                                 prove a shredded account is unreadable (exit 1 if not)
  cipherstat keys rotate [--overlap-days N] [--json]
  cipherstat keyring backup [--out FILE]               sealed under the current master key (stdout without --out)
  cipherstat keyring restore FILE                      never resurrects a shredded account
  cipherstat keyring rotate-master                     new master key; every older keyring backup becomes unreadable

Common: --data-dir D (default ./data, $CIPHERSTAT_DATA_DIR), --url URL of a running collector,
--token admin token (default $CIPHERSTAT_ADMIN_TOKEN or D/admin.token). The token is sent only
to a server that first proves it is that token's collector, and over plain http only to this
host unless --insecure-http.`;

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    role: { type: 'string' },
    partition: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'data-dir': { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    'insecure-http': { type: 'boolean' },
    origin: { type: 'string', multiple: true },
    'retention-days': { type: 'string' },
    confidential: { type: 'boolean' },
    'no-confidential': { type: 'boolean' },
    now: { type: 'boolean' },
    grace: { type: 'string' },
    out: { type: 'string' },
    'overlap-days': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});

function out(value: unknown, human: (v: any) => string): void {
  console.log(flags.json ? JSON.stringify(value, null, 2) : human(value));
}

function fail(message: string, code = 1): never {
  console.error(`cipherstat: ${message}`);
  process.exit(code);
}

/** Loopback, unspecified or one of this machine's own addresses: plain http stays on this host. */
function onThisHost(hostname: string): boolean {
  const h = hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || ['::1', '0.0.0.0', '::'].includes(h)) return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address.toLowerCase() === h));
}

/**
 * Before the admin token leaves this process, the server must prove it is the collector the
 * token belongs to: it answers a random challenge with an HMAC keyed by the token's hash
 * (which only that collector holds). Anything else listening on the port learns nothing.
 */
async function proveCollector(url: string, token: string, source: string): Promise<void> {
  const challenge = randomBytes(32);
  let proof: unknown;
  try {
    const r = await fetch(`${url}/v1/admin-proof`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ challenge: toBase64(challenge) }),
      signal: AbortSignal.timeout(5000),
    });
    proof = r.ok ? ((await r.json()) as { proof?: unknown }).proof : `HTTP ${r.status}`;
  } catch (e) {
    proof = e instanceof Error ? e.message : String(e);
  }
  if (proof !== adminProof(hashToken(token), challenge)) {
    fail(
      `the server at ${url} could not prove it is the collector of the admin token from ${source}, so the token was not sent ` +
        '(another process may be listening on that port, or --url/--data-dir/--token do not belong together)',
    );
  }
}

async function remote(config: Config): Promise<{ url: string; token: string } | undefined> {
  const url = flags.url ?? process.env.CIPHERSTAT_URL ?? `http://${config.host}:${config.port}`;
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    fail(`not a URL: ${url}`);
  }
  if (target.protocol === 'http:' && !onThisHost(target.hostname) && !flags['insecure-http']) {
    fail(`refusing to send the admin token over plain http to ${target.hostname}: use https://, or pass --insecure-http if the network in between is yours`);
  }
  try {
    // an explicit --url is expected to answer: give a busy collector time
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(flags.url ? 5000 : 500) });
    if (!r.ok) throw new Error();
  } catch {
    if (flags.url) fail(`no collector answers at ${url}`);
    return undefined;
  }
  const file = join(config.dataDir, 'admin.token');
  const [token, source] = flags.token
    ? [flags.token, '--token']
    : process.env.CIPHERSTAT_ADMIN_TOKEN
      ? [process.env.CIPHERSTAT_ADMIN_TOKEN, 'CIPHERSTAT_ADMIN_TOKEN']
      : existsSync(file)
        ? [readFileSync(file, 'utf8').trim(), file]
        : [undefined, ''];
  if (!token) fail(`a collector runs at ${url}; pass its admin token with --token or CIPHERSTAT_ADMIN_TOKEN`);
  await proveCollector(url, token, source);
  return { url, token };
}

async function call(r: { url: string; token: string }, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(`${r.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${r.token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json: any = await res.json().catch(() => ({}));
  if (!res.ok) fail(`${res.status} ${json?.error?.code ?? ''}: ${json?.error?.message ?? res.statusText}`);
  return json;
}

/** Runs `fn` against the data directory with a quiet logger, then closes it. */
async function local<T>(config: Config, fn: (s: Awaited<ReturnType<typeof openServices>>) => T | Promise<T>): Promise<T> {
  const s = await openServices({ ...config, role: 'query' }, { log: createLogger({ level: 'warn', destination: pino.destination(2) }) });
  try {
    return await fn(s);
  } finally {
    await s.store.close();
  }
}

/** The keyring alone (no storage): safe next to a running collector (the keyring locks its files). */
function openKeyring(config: Config) {
  const log = createLogger({ level: 'warn', destination: process.stderr });
  const master = loadMasterKeys({ dataDir: config.dataDir, env: process.env, log });
  return { master, keyring: Keyring.open({ dir: join(config.dataDir, 'keyring'), master }) };
}

const report = (value: unknown) => console.log(JSON.stringify(value, null, 2));

const table = (rows: Record<string, unknown>[]) =>
  rows.length ? rows.map((r) => Object.values(r).join('\t')).join('\n') : '(none)';

async function main(): Promise<void> {
  const [cmd, sub, arg] = positionals;
  if (flags.help || !cmd) return console.log(HELP);
  const config = loadConfig({ role: flags.role, host: flags.host, port: flags.port, 'data-dir': flags['data-dir'], partition: flags.partition });

  if (cmd === 'serve') {
    const running = await startCollector(config);
    const stop = async (signal: string) => {
      running.services.log.info({ signal }, 'signal received');
      await running.close();
      process.exit(0);
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
    return;
  }

  if (cmd === 'accounts') {
    const r = await remote(config);
    if (sub === 'create') {
      const input = {
        allowedOrigins: flags.origin,
        retentionDays: flags['retention-days'] ? Number(flags['retention-days']) : undefined,
        confidential: flags.confidential,
      };
      const created = r ? await call(r, 'POST', '/v1/accounts', input) : await local(config, (s) => s.accounts.create(input));
      // the collector that serves the script and receives the data (use your public https URL in production)
      const url = r?.url ?? `http://${config.host}:${config.port}`;
      const script = created.script ? { immutablePath: created.script.path, integrity: created.script.integrity } : loadScript();
      const snippet = script ? scriptSnippet({ ...created, url, script }) : undefined;
      return out({ ...created, snippet }, (c) =>
        [
          `account     ${c.accountId}`,
          `write key   ${c.writeKey}`,
          `read token  ${c.readToken}   (shown once: store it now)`,
          `collector   ${c.collectorKey.keyId} ${c.collectorKey.publicKey}`,
          ...(snippet
            ? ['', `Paste into the shop's pages (script and data from ${url}; collector key pinned; integrity-checked):`, snippet]
            : ['', 'The script build is missing (run `npm run build`), so no snippet to paste.']),
        ].join('\n'),
      );
    }
    if (sub === 'list') {
      const list = r
        ? (await call(r, 'GET', '/v1/accounts')).accounts
        : await local(config, async (s) => Promise.all((await s.accounts.list()).map((a) => s.accounts.view(a))));
      return out(list, (l) => table(l.map((a: any) => ({ id: a.accountId, state: a.state, created: a.createdAt }))));
    }
    if (sub === 'show') {
      if (!arg) fail('usage: cipherstat accounts show ID');
      const shown = r
        ? await call(r, 'GET', `/v1/accounts/${encodeURIComponent(arg)}`)
        : await local(config, async (s) => {
            const row = await s.accounts.fresh(arg);
            if (!row) fail(`no account ${arg}`);
            return s.lifecycle.describe(row);
          });
      return out(shown, (a) => Object.entries(a).map(([k, v]) => `${k.padEnd(15)} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n'));
    }
    if (sub === 'delete' || sub === 'restore' || sub === 'wipe' || sub === 'update') {
      if (!arg) fail(`usage: cipherstat accounts ${sub} ID`);
      const path = `/v1/accounts/${encodeURIComponent(arg)}`;
      if (sub === 'delete') {
        const graceDays = flags.grace === undefined ? undefined : Number(flags.grace);
        if (graceDays !== undefined && !(graceDays >= 0)) fail('--grace takes a number of days >= 0');
        const query = new URLSearchParams();
        if (graceDays !== undefined) query.set('graceDays', String(graceDays));
        if (flags.now) query.set('now', 'true');
        if (r) return report(await call(r, 'DELETE', `${path}${query.size ? `?${query}` : ''}`));
        // No collector runs: shred and purge here and now (nobody else will purge).
        return report(
          await local(config, async (s) => {
            const done = await s.lifecycle.deactivate(arg, { graceDays, immediately: flags.now });
            if (done.state !== 'shredded' || done.purge === 'complete') return done;
            return { ...done, purge: await s.lifecycle.purge(arg) };
          }),
        );
      }
      if (sub === 'restore') return report(r ? await call(r, 'POST', `${path}/restore`) : await local(config, (s) => s.lifecycle.restore(arg)));
      if (sub === 'wipe') return report(r ? await call(r, 'POST', `${path}/wipe`) : await local(config, (s) => s.lifecycle.wipe(arg)));
      const change = {
        confidential: flags.confidential ? true : flags['no-confidential'] ? false : undefined,
        retentionDays: flags['retention-days'] ? Number(flags['retention-days']) : undefined,
        allowedOrigins: flags.origin,
      };
      return report(r ? await call(r, 'PATCH', path, change) : await local(config, (s) => s.lifecycle.update(arg, change)));
    }
    fail(`unknown command: accounts ${sub ?? ''}\n${HELP}`, 2);
  }

  if (cmd === 'verify') {
    const id = sub;
    if (!id) fail('usage: cipherstat verify ACCOUNT_ID');
    const r = await remote(config);
    const v = r ? await call(r, 'GET', `/v1/accounts/${encodeURIComponent(id)}/verify`) : await local(config, (s) => s.lifecycle.verify(id));
    report(v);
    if (!v.ok) process.exit(1);
    return;
  }

  if (cmd === 'keyring') {
    const rotationDays = lifecycleEnv(process.env).masterRotationDays ?? DEFAULT_MASTER_ROTATION_DAYS;
    if (sub === 'backup') {
      const { keyring, master } = openKeyring(config);
      const blob = keyring.backup();
      const since = lastRotation(keyring.dir, master, Date.now());
      const summary = {
        file: flags.out ?? null,
        bytes: blob.length,
        masterKeyVersion: master.current().version,
        accounts: keyring.listAccounts().length,
        tombstones: keyring.listTombstones().length,
        // the next rotation destroys the master key version this backup is sealed under
        readableUntil: master.source === 'local' ? new Date(since.rotatedAt + rotationDays * 86_400_000).toISOString() : null,
      };
      if (!flags.out) {
        process.stdout.write(blob);
        console.error(JSON.stringify(summary));
        return;
      }
      writeFileSync(flags.out, blob, { mode: 0o600 });
      return report(summary);
    }
    if (sub === 'restore') {
      if (!arg) fail('usage: cipherstat keyring restore FILE');
      const blob = new Uint8Array(readFileSync(arg));
      // Accounts shredded according to storage get tombstones even if this keyring lost them.
      const r = await remote(config);
      const shredded: string[] = r
        ? (await call(r, 'GET', '/v1/accounts')).accounts.filter((a: any) => a.state === 'shredded').map((a: any) => a.accountId)
        : await local(config, async (s) => (await s.accounts.list()).filter((a) => a.state === 'shredded').map((a) => a.accountId));
      const { keyring } = openKeyring(config);
      try {
        return report(keyring.restoreBackup(blob, { tombstones: shredded }));
      } catch (e) {
        if (isKeyringError(e) && e.code === 'master_key_missing') {
          fail(`${e.message}: this backup is older than the last master key rotation and can never be restored`);
        }
        throw e;
      }
    }
    if (sub === 'rotate-master') {
      const { keyring, master } = openKeyring(config);
      return report(rotateMaster(keyring, master, { now: Date.now(), rotationDays }));
    }
    fail(`unknown command: keyring ${sub ?? ''}\n${HELP}`, 2);
  }

  if (cmd === 'keys' && sub === 'rotate') {
    if (await remote(config)) fail('stop the collector (or use its host) before rotating keys on its data directory');
    const overlapMs = Number(flags['overlap-days'] ?? 7) * 86_400_000;
    const key = await local(config, (s) => s.keyring.rotateTransportKey({ overlapMs }));
    return out({ keyId: key.keyId, publicKey: Buffer.from(key.publicKey).toString('base64') }, (k) => `new collector key ${k.keyId} ${k.publicKey}`);
  }

  fail(`unknown command: ${positionals.join(' ')}\n${HELP}`, 2);
}

main().catch((e) => fail(isCollectorError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e)));
