/**
 * A tick too old to commit fails and is retried (process/processor.ts, TICK_COMMIT_MAX_MS): ticks
 * write minute rows only for points of recent hours and compaction derives an hour's rows once it
 * ended DERIVE_LAG_MS ago (compaction/derive.ts), so a tick must not land its minute-only rows
 * after that. The clock jumps between a tick's computation and its commit (a stalled process).
 */
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runQuery } from '../src/query/index.js';
import { connectionOf } from '../src/storage/index.js';
import { Processor, RECOVER_MIN_AGE_MS } from '../src/process/processor.js';
import { LATE_HOUR_MS, TICK_COMMIT_MAX_MS } from '../src/rollup/levels.js';
import { createAccount, envelope, post, startTestCollector } from './support/collector.js';
import { checkAgainstReference, generatePoints } from './query-support.js';

const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Date.UTC(2026, 3, 1);
let offset = 0;
const now = () => Date.now() + offset;
const setClock = (t: number) => {
  offset = t - Date.now();
};

describe('a tick held between its rows and its markers', () => {
  it('is never taken for a crashed one by periodic recovery, however old its rows; its points count once', async () => {
    setClock(D + 2 * DAY + 5 * HOUR);
    const p0 = await startTestCollector({ now, config: { processing: false, compactionIntervalMs: 0 } }); // stores batches, processes nothing
    try {
      const x = await createAccount(p0);
      const { store, keyring, accounts, metrics, log } = p0.services;
      let found: number | undefined;
      let p: Processor;
      // The tick's rollup insert returned; its markers wait (a write held behind a long statement):
      // meanwhile the clock passes the default safety age and periodic recovery runs.
      const atCommitPoint = async (point: string) => {
        if (point !== 'rollups-written' || found !== undefined) return;
        offset += TICK_COMMIT_MAX_MS - 30_000; // still young enough to commit (the tick began before its stamp)
        found = await p.recover({ minAgeMs: 60_000 });
      };
      p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, now, atCommitPoint });
      const H = D + 2 * DAY + 5 * HOUR;
      const pts = generatePoints(300, 10, H, H + 30 * 60_000);
      setClock(H + 31 * 60_000);
      expect((await post(p0.url, envelope(x, pts.map((q, j) => ({ ...q, id: j })), { createdAt: now() }).bytes)).status).toBe(202);
      expect(await p.poll()).toBe(1);
      await p.drain();
      expect(found).toBe(0); // its own part, still writing: not an orphan
      const q = { metric: 'page.load', aggregation: 'count', interval: 'hour', timezone: 'UTC' } as const;
      checkAgainstReference(q, await runQuery({ store, keyring }, { accountId: x.accountId }, { ...q, from: H, to: H + HOUR }), pts);
      // Once written, an unmarked part of the same age is a crashed tick's: the default age passes the commit limit.
      expect(RECOVER_MIN_AGE_MS).toBeGreaterThan(TICK_COMMIT_MAX_MS);
      await p.stop();
    } finally {
      await p0.stop();
      rmSync(p0.dataDir, { recursive: true, force: true });
    }
  });
});

describe('a tick too old to commit', () => {
  it('fails and is retried: its minute-only rows never land after compaction could derive their hour', async () => {
    setClock(D + 2 * DAY);
    const p0 = await startTestCollector({ now, config: { processing: false, compactionIntervalMs: 0 } }); // stores batches, processes nothing
    try {
      const x = await createAccount(p0);
      const { store, keyring, accounts, metrics, log } = p0.services;
      let stall = true;
      // The clock jumps past TICK_COMMIT_MAX_MS between the tick's computation and its commit (a stalled process).
      const atCommitPoint = async (point: string) => {
        if (point === 'rollups-written' && stall) {
          stall = false;
          offset += TICK_COMMIT_MAX_MS + LATE_HOUR_MS;
        }
      };
      const p = new Processor({ store, keyring, accounts, metrics, log, pollMs: 60_000, pollMinAgeMs: 0, now, atCommitPoint });
      const H = D + 2 * DAY + 5 * HOUR;
      setClock(H + 58 * 60_000);
      const pts = generatePoints(400, 10, H, H + 55 * 60_000);
      expect((await post(p0.url, envelope(x, pts.map((q, j) => ({ ...q, id: j })), { createdAt: now() }).bytes)).status).toBe(202);
      const marked = async () => {
        const [r] = await connectionOf(store).query<{ n: string }>('SELECT count() AS n FROM processed FINAL WHERE account_id = {a:String}', { a: x.accountId });
        return Number(r!.n);
      };
      expect(await p.poll()).toBe(1);
      await p.drain();
      expect(p0.logs.join('')).toContain('tick too old to commit');
      expect(await marked()).toBe(0);
      // Retried: the hour ended more than LATE_HOUR_MS ago now, so the tick writes its hour rows itself.
      expect(await p.poll()).toBe(1);
      await p.drain();
      expect(await marked()).toBe(1);
      const [r] = await connectionOf(store).query<{ l: number; n: string; unmarked: string }>(
        `SELECT groupArray(DISTINCT level) AS l, count() AS n, countIf(part NOT IN (SELECT part FROM processed)) AS unmarked FROM rollups WHERE account_id = {a:String}`,
        { a: x.accountId },
      );
      expect([...(r!.l as unknown as number[])].map(Number).sort()).toEqual([0, 1, 3]);
      expect(Number(r!.unmarked)).toBe(0);
      const q = { metric: 'page.load', aggregation: 'count', interval: 'hour', timezone: 'UTC' } as const;
      checkAgainstReference(q, await runQuery({ store, keyring }, { accountId: x.accountId }, { ...q, from: H, to: H + HOUR }), pts);
      await p.stop();
    } finally {
      await p0.stop();
      rmSync(p0.dataDir, { recursive: true, force: true });
    }
  });
});
