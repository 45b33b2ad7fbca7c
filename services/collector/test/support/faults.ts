/**
 * Test support for the fault suite: a sender that tracks every batch it sent and every one
 * acknowledged (202), and the final check "counted exactly once, nothing acknowledged lost"
 * against what storage holds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import type { Store } from '../../src/storage/index.js';
import type { Point } from '@cipherstat/protocol';
import { ADMIN_TOKEN, envelope, points, post, type TestAccount } from './collector.js';
import { connectionOf } from '../../src/storage/index.js';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CollectorProcess {
  child: ChildProcess;
  url: string;
  /** stdout and stderr so far (JSON log lines, and what the CLI prints when it fails). */
  output: () => string;
}

/**
 * `cipherstat serve` (the built CLI) as a child process on `dataDir` (`nodeArgs` before the
 * script, e.g. `--import` hooks; `args` after `serve`); resolves once it listens,
 * rejects with its output when it exits first (a start that fails).
 */
export function startCollectorProcess(dataDir: string, env: Record<string, string> = {}, o: { nodeArgs?: string[]; args?: string[] } = {}): Promise<CollectorProcess> {
  const child = spawn(process.execPath, [...(o.nodeArgs ?? []), CLI, 'serve', ...(o.args ?? [])], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', CIPHERSTAT_DATA_DIR: dataDir, CIPHERSTAT_ADMIN_TOKEN: ADMIN_TOKEN, CIPHERSTAT_LOG_LEVEL: 'info', CIPHERSTAT_RATE_LIMIT: '100000', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /"url":"(http:\/\/[^"]+)"/.exec(out);
      if (m) resolve({ child, url: m[1]!, output: () => out });
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(Object.assign(new Error(`collector exited (${code}): ${out.slice(-4000)}`), { output: out, code })));
  });
}

/** Ends the child (SIGTERM: graceful, SIGKILL: a crash) and waits for it. */
export async function stopProcess(p: CollectorProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill(signal);
  await exited;
}

export const POINTS_PER_BATCH = 5;

export interface Tracker {
  /** Batch id → its envelope, for every batch sent (acknowledged or not). */
  sent: Map<string, Uint8Array>;
  /** Batch id → the points it carries. */
  points: Map<string, Point[]>;
  acked: Set<string>;
  /** Status codes seen, with the `error.code` of refusals (`503 storage_unavailable`). */
  statuses: Map<string, number>;
  /** Retry-After of every 503 seen. */
  retryAfter: string[];
  /** Sends one new batch; returns its status (0: the connection failed). */
  send(): Promise<number>;
  /** Sends this batch again (same id, same bytes) until it is acknowledged. */
  retryUntilAcked(batchId: string, o?: { intervalMs?: number; timeoutMs?: number }): Promise<void>;
  /** Every batch sent and not acknowledged, again until acknowledged. */
  retryAll(): Promise<void>;
}

/**
 * Sends batches of POINTS_PER_BATCH points named `orders`; `make(i, n)` shapes point i of the
 * n-th batch (from 0; default: values 1..5, tags k = 0, 1, 2, 0, 1, time one second ago).
 */
export function tracker(url: () => string, account: TestAccount, make: (i: number, n: number) => Partial<Point> = (i) => ({ value: i + 1, tags: { k: String(i % 3) } })): Tracker {
  const sent = new Map<string, Uint8Array>();
  const sentPoints = new Map<string, Point[]>();
  const acked = new Set<string>();
  const statuses = new Map<string, number>();
  const retryAfter: string[] = [];
  const attempt = async (batchId: string): Promise<number> => {
    let status = 0;
    let label = 'connection failed';
    try {
      const res = await post(url(), sent.get(batchId)!);
      status = res.status;
      if (status === 503) retryAfter.push(res.headers.get('retry-after') ?? '');
      const body = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
      label = `${status}${body.error?.code ? ` ${body.error.code}` : ''}`;
      if (status === 202) acked.add(batchId);
    } catch {
      // the collector is gone or stopped mid-request: not acknowledged
    }
    statuses.set(label, (statuses.get(label) ?? 0) + 1);
    return status;
  };
  const t: Tracker = {
    sent,
    points: sentPoints,
    acked,
    statuses,
    retryAfter,
    async send() {
      const n = sent.size;
      const p = points(POINTS_PER_BATCH, (i) => make(i, n));
      const e = envelope(account, p);
      sent.set(e.batchId, e.bytes);
      sentPoints.set(e.batchId, p);
      return attempt(e.batchId);
    },
    async retryUntilAcked(batchId, o = {}) {
      const deadline = Date.now() + (o.timeoutMs ?? 120_000);
      while (!acked.has(batchId)) {
        if ((await attempt(batchId)) === 202) return;
        if (Date.now() > deadline) throw new Error(`batch ${batchId} never acknowledged: ${JSON.stringify([...statuses])}`);
        await new Promise((r) => setTimeout(r, o.intervalMs ?? 250));
      }
    },
    async retryAll() {
      for (const id of sent.keys()) if (!acked.has(id)) await t.retryUntilAcked(id);
    },
  };
  return t;
}

/** Waits until every acknowledged batch is processed (generous: the machine may be loaded). */
export async function waitProcessed(store: Store, accountId: string, expected: number, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await connectionOf(store).query<{ n: string }>('SELECT count() AS n FROM processed FINAL WHERE account_id = {a:String}', { a: accountId });
    if (Number(row?.n) >= expected) return;
    if (Date.now() > deadline) throw new Error(`only ${row?.n} of ${expected} acknowledged batches processed`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Counted exactly once, nothing acknowledged lost: every acknowledged batch has exactly one
 * processed marker with all its points, nothing that was never sent is counted, and the total
 * is exact. Returns the totals for the report.
 */
export async function expectExactlyOnce(store: Store, accountId: string, t: Tracker): Promise<{ acknowledged: number; counted: number; points: number }> {
  const rows = await connectionOf(store).query<{ id: string; n: string; pts: string }>(
    'SELECT batch_id AS id, count() AS n, sum(accepted) AS pts FROM processed FINAL WHERE account_id = {a:String} GROUP BY batch_id',
    { a: accountId },
  );
  const counted = new Map(rows.map((r) => [r.id, r]));
  for (const id of t.acked) {
    const r = counted.get(id);
    expect(r, `acknowledged batch ${id} is counted`).toBeDefined();
    expect(Number(r!.n), `batch ${id} counted once`).toBe(1);
    expect(Number(r!.pts), `batch ${id} has all its points`).toBe(POINTS_PER_BATCH);
  }
  for (const id of counted.keys()) expect(t.sent.has(id), `counted batch ${id} was sent`).toBe(true);
  const [sum] = await connectionOf(store).query<{ pts: string }>(
    'SELECT sum(accepted) AS pts FROM processed FINAL WHERE account_id = {a:String}',
    { a: accountId },
  );
  // Every batch sent was retried until acknowledged: the totals are exact.
  expect(counted.size).toBe(t.acked.size);
  expect(Number(sum!.pts)).toBe(t.acked.size * POINTS_PER_BATCH);
  return { acknowledged: t.acked.size, counted: counted.size, points: Number(sum!.pts) };
}
