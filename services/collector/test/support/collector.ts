/** Test support: a real collector on 127.0.0.1 with a temporary data directory. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { expect } from 'vitest';
import { fromBase64, sealBatch, randomBytes, toHex, type Point } from '@cipherstat/protocol';
import { loadConfig as srcLoadConfig, type Config } from '../../src/config.js';
import { startCollector as srcStartCollector, type RunningCollector } from '../../src/server.js';
import { createLogger as srcCreateLogger } from '../../src/logger.js';

export const ADMIN_TOKEN = 'csa_test_admin_token_0123456789abcdefghijklmnop';

export interface TestCollector extends RunningCollector {
  dataDir: string;
  logs: string[];
  admin: (method: string, path: string, body?: unknown) => Promise<Response>;
  stop: () => Promise<void>;
}

export async function startTestCollector(
  /** env: CIPHERSTAT_* settings read by loadConfig (as the CLI would). */
  opts: { config?: Partial<Config>; env?: Record<string, string>; now?: () => number; visitorClock?: () => number; dataDir?: string; fromDist?: boolean } = {},
): Promise<TestCollector> {
  // From the compiled files (services/collector/dist): the processor then runs ticks in its worker thread.
  const { loadConfig, startCollector, createLogger } = opts.fromDist
    ? {
        ...((await import('../../dist/config.js')) as unknown as typeof import('../../src/config.js')),
        ...((await import('../../dist/server.js')) as unknown as typeof import('../../src/server.js')),
        ...((await import('../../dist/logger.js')) as unknown as typeof import('../../src/logger.js')),
      }
    : { loadConfig: srcLoadConfig, startCollector: srcStartCollector, createLogger: srcCreateLogger };
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'cipherstat-test-'));
  const logs: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  // Generous storage deadlines unless a test sets its own: on a loaded machine a slow call is
  // slow, not a fault (the fault suite sets short ones and asserts the 503s). Likewise no
  // processing backpressure unless a test sets it (config or env): at the default 1 s of lag a
  // loaded machine answers `503 overloaded` to a test that only wants its batches stored.
  const env = opts.env ?? {};
  const lag = 'CIPHERSTAT_MAX_PROCESS_LAG_MS' in env ? {} : { maxProcessLagMs: 0 };
  const config = { ...loadConfig({ port: '0', 'data-dir': dataDir }, env), storageTimeoutMs: 60_000, queryTimeoutMs: 60_000, readyTimeoutMs: 1000, ...lag, ...opts.config };
  const running = await startCollector(config, {
    log: createLogger({ level: 'debug', destination }),
    secrets: { adminToken: ADMIN_TOKEN },
    now: opts.now,
    visitorClock: opts.visitorClock,
  });
  const admin = (method: string, path: string, body?: unknown) =>
    fetch(running.url + path, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  return {
    ...running,
    dataDir,
    logs,
    admin,
    stop: async () => {
      await running.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface TestAccount {
  accountId: string;
  writeKey: string;
  readToken: string;
  collectorKey: { keyId: string; publicKey: string };
}

export async function createAccount(c: { admin: TestCollector['admin'] }, body: unknown = {}): Promise<TestAccount> {
  const res = await c.admin('POST', '/v1/accounts', body);
  if (res.status !== 201) throw new Error(`create account: ${res.status} ${await res.text()}`);
  return (await res.json()) as TestAccount;
}

export const newBatchId = () => toHex(randomBytes(16));

export function envelope(account: TestAccount, points: Point[], o: { batchId?: string; createdAt?: number } = {}): { bytes: Uint8Array; batchId: string } {
  const batchId = o.batchId ?? newBatchId();
  const bytes = sealBatch(
    { accountId: account.accountId, batchId, createdAt: o.createdAt ?? Date.now(), sdk: 'test/0' },
    points,
    { accountPublicKey: fromBase64(account.writeKey)!, collectorKeyId: account.collectorKey.keyId, collectorPublicKey: fromBase64(account.collectorKey.publicKey)! },
  );
  return { bytes, batchId };
}

export function post(url: string, bytes: Uint8Array | string, headers: Record<string, string> = {}): Promise<Response> {
  const text = typeof bytes === 'string';
  return fetch(`${url}/v1/batches`, {
    method: 'POST',
    headers: { 'content-type': text ? 'text/plain' : 'application/octet-stream', ...headers },
    body: bytes as BodyInit,
  });
}

/**
 * Posts `points` (without ids) in batches of `size` (10) with `createdAt` as each batch's time,
 * each acknowledged (202) and processed on its own (one tick per batch) before the next; `sent`
 * gets each batch once it is processed.
 */
export async function postTicked(c: TestCollector, account: TestAccount, points: Omit<Point, 'id'>[], createdAt: () => number, sent: Omit<Point, 'id'>[], size = 10): Promise<void> {
  for (let i = 0; i < points.length; i += size) {
    const batch = points.slice(i, i + size);
    const res = await post(c.url, envelope(account, batch.map((p, j) => ({ ...p, id: j })), { createdAt: createdAt() }).bytes);
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
    sent.push(...batch);
  }
}

/** Posts `points` (without ids) in batches of `size` (500) with `createdAt()` as each batch's time, each acknowledged (202); processing is the caller's. */
export async function postAll(c: { url: string }, account: TestAccount, points: Omit<Point, 'id'>[], createdAt: () => number = Date.now, size = 500): Promise<void> {
  for (let i = 0; i < points.length; i += size) {
    const batch = points.slice(i, i + size).map((p, j) => ({ ...p, id: j }));
    expect((await post(c.url, envelope(account, batch, { createdAt: createdAt() }).bytes)).status).toBe(202);
  }
}

export function points(n: number, make: (i: number) => Partial<Point> = () => ({})): Point[] {
  const now = Date.now();
  return Array.from({ length: n }, (_, i) => ({ id: i, kind: 'counter', name: 'orders', value: 1, time: now - 1000, tags: {}, ...make(i) }));
}
