#!/usr/bin/env node
/**
 * cipherstat serve | accounts create|list|show | keys rotate
 *
 * Account commands talk to a running collector when one answers (at --url, $CIPHERSTAT_URL,
 * or http://$HOST:$PORT), authenticated with the admin token; otherwise they open the data
 * directory directly (embedded ClickHouse holds one process per data directory, so never
 * both at once).
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from './config.js';
import { openServices, startCollector } from './services.js';
import { pino } from 'pino';
import { createLogger } from './logger.js';

const HELP = `cipherstat — encrypted metrics collector

  cipherstat serve [--role all|ingest|process|query] [--host H] [--port P] [--data-dir D]
  cipherstat accounts create [--origin URL ...] [--retention-days N] [--confidential] [--json]
  cipherstat accounts list [--json]
  cipherstat accounts show ID [--json]
  cipherstat keys rotate [--overlap-days N] [--json]

Common: --data-dir D (default ./data, $CIPHERSTAT_DATA_DIR), --url URL of a running collector,
--token admin token (default $CIPHERSTAT_ADMIN_TOKEN or D/admin.token).`;

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    role: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'data-dir': { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    origin: { type: 'string', multiple: true },
    'retention-days': { type: 'string' },
    confidential: { type: 'boolean' },
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

async function remote(config: Config): Promise<{ url: string; token: string } | undefined> {
  const url = flags.url ?? process.env.CIPHERSTAT_URL ?? `http://${config.host}:${config.port}`;
  try {
    const r = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(500) });
    if (!r.ok) throw new Error();
  } catch {
    if (flags.url) fail(`no collector answers at ${url}`);
    return undefined;
  }
  const file = join(config.dataDir, 'admin.token');
  const token = flags.token ?? process.env.CIPHERSTAT_ADMIN_TOKEN ?? (existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined);
  if (!token) fail(`a collector runs at ${url}; pass its admin token with --token or CIPHERSTAT_ADMIN_TOKEN`);
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

const table = (rows: Record<string, unknown>[]) =>
  rows.length ? rows.map((r) => Object.values(r).join('\t')).join('\n') : '(none)';

async function main(): Promise<void> {
  const [cmd, sub, arg] = positionals;
  if (flags.help || !cmd) return console.log(HELP);
  const config = loadConfig({ role: flags.role, host: flags.host, port: flags.port, 'data-dir': flags['data-dir'] });

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
      return out(created, (c) =>
        [
          `account     ${c.accountId}`,
          `write key   ${c.writeKey}`,
          `read token  ${c.readToken}   (shown once: store it now)`,
          `collector   ${c.collectorKey.keyId} ${c.collectorKey.publicKey}`,
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
            return { ...(await s.accounts.view(row)), rejects: await s.store.rejects(arg), rows: await s.store.countAccountRows(arg) };
          });
      return out(shown, (a) => Object.entries(a).map(([k, v]) => `${k.padEnd(15)} ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('\n'));
    }
    fail(`unknown command: accounts ${sub ?? ''}\n${HELP}`, 2);
  }

  if (cmd === 'keys' && sub === 'rotate') {
    if (await remote(config)) fail('stop the collector (or use its host) before rotating keys on its data directory');
    const overlapMs = Number(flags['overlap-days'] ?? 7) * 86_400_000;
    const key = await local(config, (s) => s.keyring.rotateTransportKey({ overlapMs }));
    return out({ keyId: key.keyId, publicKey: Buffer.from(key.publicKey).toString('base64') }, (k) => `new collector key ${k.keyId} ${k.publicKey}`);
  }

  fail(`unknown command: ${positionals.join(' ')}\n${HELP}`, 2);
}

main().catch((e) => fail(e instanceof Error ? e.message : String(e)));
