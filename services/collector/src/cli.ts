#!/usr/bin/env node
/**
 * cipherstat serve | accounts create|list|show|update|delete|restore|wipe | verify | keys rotate
 * | keyring backup|restore|rotate-master|check|export-transport|new-transport-key
 *
 * Account commands talk to a running collector when one answers (at --url, $CIPHERSTAT_URL,
 * or http://$HOST:$PORT), authenticated with the admin token; otherwise they open the data
 * directory directly (embedded ClickHouse holds one process per data directory, so never
 * both at once).
 */
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline/promises';
import { loadConfig, loadSecrets, type Config } from './config.js';
import { openServices, storeOptions } from './services.js';
import { startCollector } from './server.js';
import { pino } from 'pino';
import { createLogger } from './logger.js';
import { Keyring, adminProof, hashToken, loadMasterKeys, readRotationRecord, type KeyringCheck } from './keyring/index.js';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { openStore } from './storage/index.js';
import { isKeyringError } from './keyring/index.js';
import { isCollectorError } from './errors.js';
import { loadScript, scriptSnippet } from './script.js';
import { lastRotation, rotateMaster, DEFAULT_MASTER_ROTATION_DAYS } from './lifecycle/index.js';

/** Every command: usage, what it does, examples (`cipherstat help COMMAND`, `COMMAND --help`). */
const COMMANDS: Record<string, { usage: string; about: string; examples: string[] }> = {
  serve: {
    usage: 'serve [--role all|ingest|process|query] [--host H] [--port P] [--data-dir D] [--partition i/n]',
    about: 'Runs the collector (ingest, processing, queries, dashboard) until SIGTERM/SIGINT.',
    examples: ['cipherstat serve', 'cipherstat serve --port 9000 --data-dir /var/lib/cipherstat', 'cipherstat serve --role ingest'],
  },
  'accounts create': {
    usage: 'accounts create [--name NAME] [--origin URL ...] [--retention-days N] [--confidential]',
    about: 'Creates an account; prints its keys, its read token (once) and the script tag to paste into the shop.',
    examples: ['cipherstat accounts create --name "My shop" --origin https://shop.example', 'cipherstat accounts create --json'],
  },
  'accounts list': { usage: 'accounts list', about: 'Lists every account with its state.', examples: ['cipherstat accounts list', 'cipherstat accounts list --url http://127.0.0.1:8787'] },
  'accounts show': {
    usage: 'accounts show ID',
    about: 'State, settings, reject counts, rows per table (and purge progress of a shredded account).',
    examples: ['cipherstat accounts show acct_3f9c…'],
  },
  'accounts update': {
    usage: 'accounts update ID [--name NAME] [--origin URL ...] [--retention-days N] [--confidential | --no-confidential]',
    about: 'Changes settings. --origin replaces the allowed origins (repeat it for several; give every origin to keep).',
    examples: ['cipherstat accounts update acct_3f9c… --origin https://shop.example --origin https://www.shop.example', 'cipherstat accounts update acct_3f9c… --name "Shop DE" --retention-days 90'],
  },
  'accounts token': {
    usage: 'accounts token ID --rotate',
    about: 'Issues a new read token (printed once); the old one is refused at once.',
    examples: ['cipherstat accounts token acct_3f9c… --rotate'],
  },
  'accounts delete': {
    usage: 'accounts delete ID [--grace DAYS] [--now [--yes]]',
    about: 'Deactivates the account and shreds it after the grace period (default 7 days); --now shreds at once (irreversible: asks to confirm unless --yes).',
    examples: ['cipherstat accounts delete acct_3f9c…', 'cipherstat accounts delete acct_3f9c… --now --yes'],
  },
  'accounts restore': { usage: 'accounts restore ID', about: 'Undoes a delete inside the grace period.', examples: ['cipherstat accounts restore acct_3f9c…'] },
  'accounts wipe': {
    usage: 'accounts wipe ID',
    about: 'New key pair and data keys, the old ones destroyed: every copy of the data so far is unreadable. Prints the NEW write key once (batches sealed to the old one: 400 stale_write_key).',
    examples: ['cipherstat accounts wipe acct_3f9c…'],
  },
  verify: { usage: 'verify ID', about: 'Proves a shredded account is unreadable (exit 1 if not).', examples: ['cipherstat verify acct_3f9c…'] },
  'keys rotate': {
    usage: 'keys rotate [--overlap-days N]',
    about: 'New collector transport key (stop the collector first); the old one is accepted for N more days (default 7).',
    examples: ['cipherstat keys rotate --overlap-days 14'],
  },
  'keyring backup': {
    usage: 'keyring backup [--out FILE]',
    about: 'One blob sealed under the current master key (stdout without --out); says until when it is readable.',
    examples: ['cipherstat keyring backup --out /backup/keyring.bin'],
  },
  'keyring restore': { usage: 'keyring restore FILE', about: 'Restores missing keyring entries; never resurrects a shredded account.', examples: ['cipherstat keyring restore /backup/keyring.bin'] },
  'keyring rotate-master': {
    usage: 'keyring rotate-master',
    about: 'New master key version, everything re-wrapped; every older keyring backup becomes unreadable. Resumes a rotation that was interrupted.',
    examples: ['cipherstat keyring rotate-master'],
  },
  'keyring check': {
    usage: 'keyring check [--json]',
    about: 'Unwraps every keyring entry; lists each one that cannot be read with its file and reason (exit 1 if any, or while a rotation is unfinished).',
    examples: ['cipherstat keyring check', 'cipherstat keyring check --json'],
  },
  'keyring export-transport': {
    usage: 'keyring export-transport --out DIR [--master-key-file FILE]',
    about:
      "Writes an ingest node's data directory DIR: a keyring holding the collector transport keys only (no account entry), wrapped under a new master key generated in DIR/master-keys " +
      '(or under the key in FILE, which the ingest nodes then get as CIPHERSTAT_MASTER_KEY_FILE). Run it again after `keys rotate`.',
    examples: ['cipherstat keyring export-transport --out /srv/ingest-data', 'cipherstat keyring export-transport --out /srv/ingest-data --master-key-file /run/cipherstat/ingest-master.key'],
  },
  'keyring new-transport-key': {
    usage: 'keyring new-transport-key',
    about: 'Only when transport.json is lost and no keyring backup has it: issues a new collector key (clients pinned to the old one must update).',
    examples: ['cipherstat keyring new-transport-key'],
  },
};

const COMMON = `Common options:
  --url URL        a running collector (default $CIPHERSTAT_URL, else http://$HOST:$PORT = http://127.0.0.1:8787)
  --token T        its admin token (default $CIPHERSTAT_ADMIN_TOKEN, else DATA_DIR/admin.token)
  --data-dir D     used when no collector answers (default $CIPHERSTAT_DATA_DIR, else ./data)
  --json           machine-readable output (every command)`;

const HELP = `cipherstat — encrypted metrics collector

${Object.entries(COMMANDS).map(([, c]) => `  cipherstat ${c.usage}`).join('\n')}

${COMMON}

Account commands talk to the running collector; when none answers they open the data directory
themselves (reading commands never create one). The admin token is sent only to a server that
first proves it is that token's collector, and over plain http only to this host unless
--insecure-http. \`cipherstat help COMMAND\` shows examples.`;

function commandHelp(name: string): string | undefined {
  const c = COMMANDS[name];
  if (c) return `cipherstat ${c.usage}\n\n${c.about}\n\nExamples:\n${c.examples.map((e) => `  ${e}`).join('\n')}\n\n${COMMON}`;
  const group = Object.entries(COMMANDS).filter(([k]) => k.startsWith(`${name} `));
  return group.length ? `${group.map(([, c]) => `cipherstat ${c.usage}\n    ${c.about}`).join('\n')}\n\ncipherstat help ${name} SUBCOMMAND for examples.` : undefined;
}

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
    'master-key-file': { type: 'string' },
    json: { type: 'boolean' },
    name: { type: 'string' },
    rotate: { type: 'boolean' },
    yes: { type: 'boolean', short: 'y' },
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

const collectorUrl = (config: Config) => config.collectorUrl ?? `http://${config.host}:${config.port}`;

async function remote(config: Config): Promise<{ url: string; token: string } | undefined> {
  const url = collectorUrl(config);
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
    // Where nothing listens the connection is refused at once; a collector that listens but is
    // busy gets time to answer (a short timeout here made `npx cipherstat accounts create`, the
    // README's first command, fall back to the locked data directory on a loaded machine).
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error();
  } catch {
    if (flags.url) fail(`no collector answers at ${url}`);
    return undefined;
  }
  const file = join(config.dataDir, 'admin.token');
  const { adminToken } = loadSecrets();
  const [token, source] = flags.token
    ? [flags.token, '--token']
    : adminToken
      ? [adminToken, 'CIPHERSTAT_ADMIN_TOKEN']
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

/** Accounts shredded according to storage (the data directory's, without opening the keyring). */
async function shreddedInStorage(config: Config): Promise<string[]> {
  const store = await openStore(storeOptions(config));
  try {
    await store.migrate();
    return (await store.listAccounts()).filter((a) => a.state === 'shredded').map((a) => a.accountId);
  } finally {
    await store.close();
  }
}

/**
 * Runs `fn` against the data directory with a quiet logger, then closes it. Reading commands
 * (`write: false`) never create a data directory, a master key or an admin token.
 */
async function local<T>(config: Config, fn: (s: Awaited<ReturnType<typeof openServices>>) => T | Promise<T>, o: { write?: boolean } = {}): Promise<T> {
  const url = collectorUrl(config);
  if (!o.write && !existsSync(join(config.dataDir, 'keyring'))) {
    fail(
      `no collector answers at ${url}, and ${config.dataDir} holds no collector data (looked for ${join(config.dataDir, 'keyring')}).\n` +
        `Point at the running collector with --url URL (or CIPHERSTAT_URL), or at its data directory with --data-dir D (or CIPHERSTAT_DATA_DIR).`,
    );
  }
  let s: Awaited<ReturnType<typeof openServices>>;
  try {
    s = await openServices({ ...config, role: 'query' }, { log: createLogger({ level: 'warn', destination: pino.destination(2) }) });
  } catch (e) {
    // embedded ClickHouse holds one process per data directory
    if (/lock file|another server instance|already running|cannot open chDB/i.test(String((e as Error)?.message))) {
      fail(`a collector is running on this data directory (${config.dataDir}) but does not answer at ${url} — use --url http://HOST:PORT (or CIPHERSTAT_URL) to reach it`);
    }
    throw e;
  }
  try {
    return await fn(s);
  } finally {
    await s.store.close();
  }
}

/**
 * The keyring alone (no storage): safe next to a running collector (the keyring locks its files).
 * `restoring`: the keyring directory itself may be lost (a restore recreates it), the data
 * directory may not.
 */
function openKeyring(config: Config, transport?: 'create' | 'optional', restoring = false) {
  if (restoring && !existsSync(config.dataDir)) fail(`no data directory ${config.dataDir}; pass the collector's --data-dir D (or CIPHERSTAT_DATA_DIR)`);
  if (!restoring && !existsSync(join(config.dataDir, 'keyring'))) fail(`no keyring in ${config.dataDir} (looked for ${join(config.dataDir, 'keyring')}); pass the collector's --data-dir D (or CIPHERSTAT_DATA_DIR)`);
  const log = createLogger({ level: 'warn', destination: process.stderr });
  const { masterKey, masterKeyFile } = loadSecrets();
  const master = loadMasterKeys({ dataDir: config.dataDir, masterKey, masterKeyFile, log });
  return { master, keyring: Keyring.open({ dir: join(config.dataDir, 'keyring'), master, transport }) };
}

/** Human output: one `key  value` line per field (nested values as JSON); --json: the JSON. */
const human = (v: unknown): string =>
  v && typeof v === 'object' && !Array.isArray(v)
    ? Object.entries(v).map(([k, x]) => `${k.padEnd(16)} ${x !== null && typeof x === 'object' ? JSON.stringify(x) : x}`).join('\n')
    : JSON.stringify(v, null, 2);
const report = (value: unknown) => out(value, human);

/** Asks on a terminal; without one, refuses (pass --yes). */
async function confirm(question: string, expected: string): Promise<void> {
  if (flags.yes) return;
  if (!process.stdin.isTTY) fail(`${question}: refusing without confirmation (pass --yes)`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`${question}\nType ${expected} to confirm: `);
  rl.close();
  if (answer.trim() !== expected) fail('not confirmed; nothing changed');
}

const table = (rows: Record<string, unknown>[]) =>
  rows.length ? rows.map((r) => Object.values(r).join('\t')).join('\n') : '(none)';

async function main(): Promise<void> {
  const [cmd, sub, arg] = positionals;
  if (cmd === 'help' || flags.help) {
    const name = (cmd === 'help' ? positionals.slice(1, 3) : positionals.slice(0, 2)).join(' ');
    const text = name ? commandHelp(name) ?? commandHelp(name.split(' ')[0]!) : HELP;
    if (!text) fail(`unknown command: ${name}\n\n${HELP}`, 2);
    return console.log(text);
  }
  if (!cmd) return console.log(HELP);
  const config = loadConfig({ role: flags.role, host: flags.host, port: flags.port, 'data-dir': flags['data-dir'], partition: flags.partition, url: flags.url });

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
        name: flags.name,
        allowedOrigins: flags.origin,
        retentionDays: flags['retention-days'] ? Number(flags['retention-days']) : undefined,
        confidential: flags.confidential,
      };
      const created = r ? await call(r, 'POST', '/v1/accounts', input) : await local(config, (s) => s.accounts.create(input), { write: true });
      // the collector that serves the script and receives the data (use your public https URL in production)
      const url = r?.url ?? `http://${config.host}:${config.port}`;
      const built = created.script ? undefined : loadScript();
      const script = created.script ? { immutablePath: created.script.path, integrity: created.script.integrity } : built;
      const sf = created.script ? created.script.storefront && { immutablePath: created.script.storefront.path, integrity: created.script.storefront.integrity } : built?.storefrontTag;
      const snippet = script ? scriptSnippet({ ...created, url, script }) : undefined;
      const storefrontSnippet = sf ? scriptSnippet({ ...created, url, script: sf, autocapture: true }) : undefined;
      return out({ ...created, snippet, storefrontSnippet }, (c) =>
        [
          `account     ${c.accountId}`,
          `write key   ${c.writeKey}`,
          `read token  ${c.readToken}   (shown once: store it now)`,
          `collector   ${c.collectorKey.keyId} ${c.collectorKey.publicKey}`,
          ...(snippet
            ? ['', `Paste into the shop's pages (script and data from ${url}; collector key pinned; integrity-checked):`, snippet]
            : ['', 'The script build is missing (run `npm run build`), so no snippet to paste.']),
          ...(storefrontSnippet
            ? ['', 'Or, for page views, sources, Web Vitals and the commerce helpers (the storefront build, autocapture on):', storefrontSnippet]
            : []),
        ].join('\n'),
      );
    }
    if (sub === 'list') {
      const list = r
        ? (await call(r, 'GET', '/v1/accounts')).accounts
        : await local(config, async (s) => Promise.all((await s.accounts.list()).map((a) => s.accounts.view(a))));
      return out(list, (l) => table(l.map((a: any) => ({ id: a.accountId, state: a.state, created: a.createdAt, name: a.name ?? '' }))));
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
    if (sub === 'token') {
      if (!arg || !flags.rotate) fail('usage: cipherstat accounts token ID --rotate');
      const rotated = r ? await call(r, 'POST', `/v1/accounts/${encodeURIComponent(arg)}/read-token`) : await local(config, (s) => s.lifecycle.rotateReadToken(arg));
      return out(rotated, (t) => `read token  ${t.readToken}   (shown once: store it now; the old token no longer works)`);
    }
    if (sub === 'delete' || sub === 'restore' || sub === 'wipe' || sub === 'update') {
      if (!arg) fail(`usage: cipherstat accounts ${sub} ID`);
      const path = `/v1/accounts/${encodeURIComponent(arg)}`;
      if (sub === 'delete') {
        const graceDays = flags.grace === undefined ? undefined : Number(flags.grace);
        if (graceDays !== undefined && !(graceDays >= 0)) fail('--grace takes a number of days >= 0');
        const query = new URLSearchParams();
        if (graceDays !== undefined) query.set('graceDays', String(graceDays));
        if (flags.now) {
          await confirm(`This shreds ${arg} now: its keys are destroyed and its data can never be read again.`, arg);
          query.set('now', 'true');
        }
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
        name: flags.name,
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
    const rotationDays = config.masterRotationDays ?? DEFAULT_MASTER_ROTATION_DAYS;
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
        : await shreddedInStorage(config);
      const { keyring } = openKeyring(config, 'optional', true); // restores a lost keyring or transport.json too
      try {
        return report(keyring.restoreBackup(blob, { tombstones: shredded }));
      } catch (e) {
        if (isKeyringError(e) && e.code === 'master_key_missing') {
          fail(`${e.message}: this backup is older than the last master key rotation and can never be restored`);
        }
        throw e;
      }
    }
    if (sub === 'check') {
      let check: KeyringCheck;
      let ignored: number[] = [];
      try {
        const { keyring, master } = openKeyring(config, 'optional');
        check = keyring.check();
        ignored = master.ignoredVersions();
      } catch (e) {
        // No master key, or one that opens nothing: nothing can be checked beyond this.
        if (!isKeyringError(e)) throw e;
        check = { dir: join(config.dataDir, 'keyring'), entries: 0, problems: [{ file: e.file ?? '(master key)', code: e.code, reason: e.message }] };
      }
      const rotation = readRotationRecord(check.dir)?.pending ?? null;
      const result = { ...check, ok: check.problems.length === 0 && rotation === null, ignoredMasterKeyVersions: ignored, rotationInProgress: rotation };
      out(result, (v: typeof result) =>
        [
          `keyring ${v.dir}: ${v.entries} entries, ${v.problems.length} cannot be read`,
          ...v.problems.map((p) => `  ${p.file}\t${p.code}\t${p.reason}`),
          ...v.ignoredMasterKeyVersions.map((n) => `  master key file v${n}.key is not part of any recorded rotation: ignored`),
          ...(v.rotationInProgress ? [`  master key rotation to v${v.rotationInProgress.version} has not finished: run \`cipherstat keyring rotate-master\` to resume it`] : []),
        ].join('\n'),
      );
      if (!result.ok) process.exit(1);
      return;
    }
    if (sub === 'export-transport') {
      if (!flags.out) fail('usage: cipherstat keyring export-transport --out DIR [--master-key-file FILE]');
      const { keyring } = openKeyring(config);
      const log = createLogger({ level: 'warn', destination: process.stderr });
      // The ingest nodes' master key: its own (generated in DIR, or FILE), never this keyring's.
      const target = loadMasterKeys({ dataDir: resolve(flags.out), masterKeyFile: flags['master-key-file'], log });
      const exported = keyring.exportTransport(join(resolve(flags.out), 'keyring'), target);
      return report({ ...exported, dataDir: resolve(flags.out), masterKey: target.location, accounts: 0 });
    }
    if (sub === 'new-transport-key') {
      const { keyring } = openKeyring(config, 'create');
      const k = keyring.currentTransportKey();
      return out({ keyId: k.keyId, publicKey: Buffer.from(k.publicKey).toString('base64') }, (v) => `collector key ${v.keyId} ${v.publicKey}`);
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
