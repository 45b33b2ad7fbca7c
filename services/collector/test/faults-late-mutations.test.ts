/**
 * Compaction when the engine applies its mutations late and piecemeal, as ClickHouse does: a
 * queued DELETE (or the UPDATE emptying a `supersedes` list) applies part by part in the
 * background, so a reader meets every mix of applied and not yet applied rows, for as long as
 * the engine takes, or never if it is stuck. chDB applies them quickly, so this file stands a
 * store in front of it that holds every queued (not waited-for) mutation back and applies it a
 * seeded random part at a time, one part per read the compactor makes to learn whether it has
 * applied. Before every such part, every query answer must equal a plaintext reference of what
 * was sent (nothing counted twice, nothing lost), and compaction must still end with one row per
 * group and no list left.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Compactor } from '../src/compaction/compactor.js';
import { runQuery, type QueryResult } from '../src/query/index.js';
import { createLogger } from '../src/logger.js';
import type { RollupRef, Store } from '../src/storage/types.js';
import { connectionOf } from '../src/storage/index.js';
import { createAccount, postTicked, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { checkAgainstReference, generatePoints, mulberry32, type GenPoint, type RefQuery } from './query-support.js';

const NOW = Date.UTC(2026, 3, 1, 12);
const FROM = NOW - 2 * 86_400_000; // two closed UTC days (packed) and today's hours (merged)
const offset = NOW - Date.now();
const now = () => Date.now() + offset;
const silent = createLogger({ level: 'silent' });

let c: TestCollector;
const sent = new Map<string, GenPoint[]>();

/** Posts in batches of 5, each its own tick: every bucket and series collects many partial rows. */
async function ingest(account: TestAccount, pts: GenPoint[]): Promise<void> {
  const mine = sent.get(account.accountId) ?? [];
  sent.set(account.accountId, mine);
  await postTicked(c, account, pts, now, mine, 5);
}

// Every level a pass touches: hour rows and day packs (UTC hours), quarter-hour rows and quarter
// packs (the zones), minute rows.
const QUERIES: RefQuery[] = [];
for (const aggregation of ['count', 'sum', 'p95', 'last']) {
  QUERIES.push({ metric: 'orders', groupBy: ['country', 'channel'], aggregation, interval: 'hour', timezone: 'UTC' });
  QUERIES.push({ metric: 'page.load', groupBy: ['page'], aggregation, interval: 'day', timezone: 'Asia/Kolkata' });
  QUERIES.push({ metric: 'revenue', groupBy: ['country'], filter: { channel: 'web' }, aggregation, interval: 'hour', timezone: 'Asia/Kathmandu' });
}
const MINUTES: RefQuery = { metric: 'orders', aggregation: 'sum', interval: 'minute', timezone: 'UTC', groupBy: ['country'] };

/** Every answer equals the reference of what was sent, no row failed; returns how many rows they opened. */
async function checkAll(account: TestAccount): Promise<number> {
  let opened = 0;
  const check = async (q: RefQuery, from: number, to: number): Promise<QueryResult> => {
    const r = await runQuery({ store: c.services.store, keyring: c.services.keyring }, { accountId: account.accountId }, { ...q, from, to });
    expect(r.meta.failedRows).toBe(0);
    expect(r.meta.tamperedRows).toBe(0);
    checkAgainstReference(q, r, sent.get(account.accountId)!);
    opened += r.meta.rows;
    return r;
  };
  for (const q of QUERIES) await check(q, FROM, NOW);
  await check(MINUTES, NOW - 6 * 3_600_000, NOW); // a window the minute level answers
  return opened;
}

interface Late {
  /** The store the compactor uses: queued mutations held back, applied piecemeal on its reads. */
  store: Store;
  /** Rows of queued mutations not applied yet. */
  held(): number;
  /** Whether reads apply parts (false: the engine is stuck, nothing applies). */
  applying: boolean;
  /** How many reads met a mix of applied and held rows of one mutation, and how many checks ran. */
  mixed: number;
  checks: number;
  /** Applies everything held (the engine catching up). */
  drain(): Promise<void>;
}

/**
 * `store` with its queued mutations held back: `deleteRollups`/`clearSupersedes` without `wait`
 * are held here; each `findRollups` (how the compactor learns a mutation applied)
 * first runs `check` on the state as it is (when it changed since the last check), then applies
 * the next part of a random held mutation, waiting for it (a random part of its rows, the rest
 * at a later such read), then reads.
 */
function lateMutations(store: Store, seed: number, check: () => Promise<void>): Late {
  const rand = mulberry32(seed);
  const queue: { op: 'deleteRollups' | 'clearSupersedes'; rows: RollupRef[]; applied: number }[] = [];
  let changed = true; // whether anything applied since the last check
  const applyPart = async (): Promise<void> => {
    // any held mutation, not only the oldest: ClickHouse keeps their order within a data part,
    // but one part may have applied a later mutation while another has not applied an earlier one
    const i = Math.floor(rand() * queue.length);
    const m = queue[i];
    if (!m) return;
    // a random part first (ClickHouse applies a mutation part by part), the rest at a later read
    const n = m.applied === 0 && m.rows.length > 1 ? 1 + Math.floor(rand() * (m.rows.length - 1)) : m.rows.length;
    const part = m.rows.splice(0, n);
    await store[m.op](part, { wait: true });
    m.applied += part.length;
    changed = true;
    if (m.rows.length === 0) queue.splice(i, 1);
    else late.mixed++;
  };
  const late: Late = {
    applying: true,
    mixed: 0,
    checks: 0,
    held: () => queue.reduce((n, m) => n + m.rows.length, 0),
    async drain() {
      while (queue.length) {
        const m = queue.shift()!;
        await store[m.op](m.rows, { wait: true });
      }
    },
    store: new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === 'deleteRollups' || prop === 'clearSupersedes') {
          return async (rows: RollupRef[], opts?: { wait?: boolean }) => {
            if (opts?.wait) return target[prop](rows, opts);
            // shuffled: the engine's parts do not follow the order the rows were named in
            const copy = [...rows];
            for (let i = copy.length - 1; i > 0; i--) {
              const j = Math.floor(rand() * (i + 1));
              [copy[i], copy[j]] = [copy[j]!, copy[i]!];
            }
            queue.push({ op: prop, rows: copy, applied: 0 });
            changed = true;
          };
        }
        if (prop === 'findRollups') {
          return async (rows: RollupRef[]) => {
            if (queue.length) {
              // the state as it is (mutations queued, not started or part-applied), checked once
              if (changed) {
                late.checks++;
                await check();
                changed = false;
              }
              if (late.applying) await applyPart();
            }
            return target.findRollups(rows);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }),
  };
  return late;
}

async function shape(accountId: string): Promise<{ rows: number; groups: number; pending: number }> {
  const [r] = await connectionOf(c.services.store).query<{ rows: string; groups: string; pending: string }>(
    `SELECT count() AS rows, uniqExact(level, metric, bucket, series, key_version) AS groups, countIf(notEmpty(supersedes)) AS pending
     FROM rollups WHERE account_id = {a:String}`,
    { a: accountId },
  );
  return { rows: Number(r!.rows), groups: Number(r!.groups), pending: Number(r!.pending) };
}

const compactor = (store: Store, settleMs: number) => new Compactor({ store, keyring: c.services.keyring, log: silent, now, settleMs });

beforeAll(async () => {
  c = await startTestCollector({ now, env: { CIPHERSTAT_COMPACTION_INTERVAL_MS: '0' } }); // passes only by hand
});
afterAll(async () => {
  await c?.stop();
  if (c) rmSync(c.dataDir, { recursive: true, force: true });
});

describe('compaction with mutations applied late and part by part', () => {
  it('every answer is exact at every mix of applied and held rows, and compaction still ends with one row per group', async () => {
    const a = await createAccount(c);
    await ingest(a, generatePoints(31, 300, FROM, NOW - 60_000));
    const opened0 = await checkAll(a);
    const s0 = await shape(a.accountId);
    expect(s0.rows).toBeGreaterThan(s0.groups);

    const late = lateMutations(c.services.store, 7, () => checkAll(a).then(() => {}));
    const report = await compactor(late.store, 600_000).runUntilDone();
    expect(report).toMatchObject({ failedRows: 0, tamperedRows: 0, unfinished: 0, more: false });
    expect(report.packedDays).toBeGreaterThan(0);
    // the held mutations were really met part-applied, and every such state was checked
    expect(late.checks).toBeGreaterThan(3);
    expect(late.mixed).toBeGreaterThan(0);
    expect(late.held()).toBe(0);

    const s1 = await shape(a.accountId);
    expect(s1).toEqual({ rows: s1.groups, groups: s1.groups, pending: 0 });
    expect(await checkAll(a)).toBeLessThan(opened0);
  });

  it('a stuck engine leaves the pass unfinished with exact answers; passes after it finish once the mutations apply', async () => {
    const b = await createAccount(c);
    await ingest(b, generatePoints(32, 200, FROM, NOW - 60_000));
    await checkAll(b);
    const late = lateMutations(c.services.store, 8, () => checkAll(b).then(() => {}));
    late.applying = false; // nothing applies: the pass gives up waiting after its settle time
    const stuck = await compactor(late.store, 1).runPass();
    expect(stuck.unfinished).toBeGreaterThan(0);
    expect(late.held()).toBeGreaterThan(0);
    expect((await shape(b.accountId)).pending).toBeGreaterThan(0);
    await checkAll(b);

    // Half of what was queued applies, then the engine stalls again; a second pass meanwhile
    // (sources of merged rows still stored, lists still set) writes nothing twice.
    late.applying = true;
    const held = late.held();
    while (late.held() > held / 2) await late.store.findRollups([]);
    late.applying = false;
    await compactor(late.store, 1).runPass();
    await checkAll(b);

    // The engine catches up; the next passes finish the merged rows left.
    await late.drain();
    await checkAll(b);
    const done = await compactor(c.services.store, 600_000).runUntilDone();
    expect(done).toMatchObject({ failedRows: 0, tamperedRows: 0, unfinished: 0, more: false });
    const s = await shape(b.accountId);
    expect(s).toEqual({ rows: s.groups, groups: s.groups, pending: 0 });
    await checkAll(b);
  });
});
