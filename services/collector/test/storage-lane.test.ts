/**
 * The embedded engine's call lane (storage/lane.ts): one call at a time, urgent calls (ingest's
 * group commit) before every waiting ordinary call, a call abandoned at its deadline while it
 * waits never runs, and the counts behind cipherstat_storage_call_seconds_total. Orders are
 * asserted, never durations: every call here is queued while one call is held running.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CallLane, URGENT_IN_A_ROW, callKind } from '../src/storage/lane.js';
import { connectionOf, openStore } from '../src/storage/index.js';

/** A call the test ends (`finish`), recording when it started and ended. */
function held(log: string[], name: string) {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  return {
    call: async () => {
      log.push(`start ${name}`);
      await done;
      log.push(`end ${name}`);
      return name;
    },
    finish: () => finish(),
  };
}

describe('CallLane', () => {
  it('runs one call at a time; urgent calls go before waiting ordinary calls, each queue in arrival order', async () => {
    const lane = new CallLane();
    const log: string[] = [];
    const a = held(log, 'A');
    const calls = [lane.run('x', false, a.call)];
    const quick = (name: string) => async () => {
      log.push(`start ${name}`);
      return name;
    };
    calls.push(lane.run('x', false, quick('B')), lane.run('x', false, quick('C')), lane.run('y', true, quick('U1')), lane.run('y', true, quick('U2')));
    expect(log).toEqual(['start A']); // the others wait while A runs
    a.finish();
    expect(await Promise.all(calls)).toEqual(['A', 'B', 'C', 'U1', 'U2']);
    expect(log).toEqual(['start A', 'end A', 'start U1', 'start U2', 'start B', 'start C']);
    const stats = lane.stats();
    expect(stats.x).toMatchObject({ calls: 3 });
    expect(stats['y (urgent)']).toMatchObject({ calls: 2 });
    expect(stats.y).toBeUndefined();
    for (const s of Object.values(stats)) {
      expect(s.waitSeconds).toBeGreaterThanOrEqual(0);
      expect(s.runSeconds).toBeGreaterThanOrEqual(0);
    }
  });

  it('at most URGENT_IN_A_ROW urgent calls run in a row while an ordinary call waits: requests cannot starve processing', async () => {
    const lane = new CallLane();
    const log: string[] = [];
    const a = held(log, 'A');
    const calls: Promise<unknown>[] = [lane.run('x', false, a.call)];
    const quick = (name: string) => async () => void log.push(name);
    const urgent = Array.from({ length: URGENT_IN_A_ROW + 2 }, (_, i) => `U${i + 1}`);
    calls.push(lane.run('x', false, quick('O1')));
    for (const u of urgent) calls.push(lane.run('y', true, quick(u)));
    calls.push(lane.run('x', false, quick('O2')));
    a.finish();
    await Promise.all(calls);
    expect(log).toEqual(['start A', 'end A', ...urgent.slice(0, URGENT_IN_A_ROW), 'O1', ...urgent.slice(URGENT_IN_A_ROW), 'O2']);
  });

  it('a call abandoned while it waits never runs; one already running is awaited as it is; a failed call frees the lane', async () => {
    const lane = new CallLane();
    const log: string[] = [];
    const a = held(log, 'A');
    const running = lane.run('x', false, a.call);
    const abort = new AbortController();
    let ran = false;
    const waiting = lane.run('x', true, async () => void (ran = true), abort.signal);
    const after = lane.run('x', false, async () => 'after');
    abort.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'StorageError', code: 'storage_unavailable' });
    const late = new AbortController();
    late.abort();
    await expect(lane.run('x', true, async () => void (ran = true), late.signal)).rejects.toMatchObject({ code: 'storage_unavailable' });
    a.finish();
    expect(await running).toBe('A');
    expect(await after).toBe('after');
    expect(ran).toBe(false);
    await expect(lane.run('x', false, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(
      lane.run('x', false, () => {
        throw new Error('sync boom');
      }),
    ).rejects.toThrow('sync boom');
    expect(await lane.run('x', false, async () => 'still serving')).toBe('still serving');
  });

  it('tells a call\'s onWait when it is queued (true, as the call is made) and just before it runs (false)', async () => {
    const lane = new CallLane();
    const log: string[] = [];
    const a = held(log, 'A');
    const seen = (name: string) => (waiting: boolean) => void log.push(`${name} ${waiting ? 'waits' : 'runs'}`);
    const first = lane.run('x', false, a.call, undefined, seen('A'));
    const second = lane.run('x', false, async () => void log.push('start B'), undefined, seen('B'));
    expect(log).toEqual(['A waits', 'A runs', 'start A', 'B waits']); // told synchronously
    a.finish();
    await Promise.all([first, second]);
    expect(log).toEqual(['A waits', 'A runs', 'start A', 'B waits', 'end A', 'B runs', 'start B']);
  });

  it('names calls by verb and first table', () => {
    expect(callKind('SELECT account_id FROM cipherstat.batches WHERE x UNION DISTINCT SELECT 1 FROM cipherstat.processed')).toBe('SELECT batches');
    expect(callKind('  select count() from (SELECT 1 FROM db.rollups)')).toBe('SELECT rollups');
    expect(callKind('INSERT INTO db.processed FORMAT TabSeparated')).toBe('INSERT processed');
    expect(callKind('DELETE FROM db.batches WHERE 1')).toBe('DELETE batches');
    expect(callKind('ALTER TABLE db.rollups DELETE WHERE 1')).toBe('ALTER rollups');
    expect(callKind('CREATE DATABASE IF NOT EXISTS cipherstat')).toBe('CREATE cipherstat');
    expect(callKind('CREATE TABLE IF NOT EXISTS db.derived (x UInt8)')).toBe('CREATE derived');
    expect(callKind('DROP TABLE IF EXISTS db.bench_split_rollups')).toBe('DROP bench_split_rollups');
    expect(callKind('SELECT 1 AS ok')).toBe('SELECT');
  });
});

describe('the chDB adapter goes through the lane', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("an urgent view's calls run before ordinary calls queued earlier; a call past its deadline while waiting never runs; calls are counted by kind", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'cipherstat-storage-lane-'));
    dirs.push(dataDir);
    const store = await openStore({ dataDir });
    await store.migrate();
    const conn = connectionOf(store);
    await conn.exec('CREATE TABLE lane_t (n UInt32) ENGINE = MergeTree ORDER BY n');
    const urgent = connectionOf(store.urgent());
    const order: string[] = [];
    const track = <T>(name: string, p: Promise<T>) => p.then((v) => (order.push(name), v));
    // ~2 s of engine time holds the lane (two rows, 1 s each) while the rest queues behind it.
    const slow = track('slow', conn.query('SELECT sleep(1) FROM numbers(2) SETTINGS max_block_size = 1'));
    const ordinary = track('ordinary', conn.query<{ n: string }>('SELECT count() AS n FROM lane_t'));
    // Abandoned at 50 ms while the slow statement still runs: it must never insert.
    const abandoned = connectionOf(store.withDeadline(50)).insert('cipherstat.lane_t', ['n'], Buffer.from('7\n'));
    const first = track('urgent', urgent.insert('cipherstat.lane_t', ['n'], Buffer.from('1\n')));
    await expect(abandoned).rejects.toMatchObject({ code: 'storage_unavailable' });
    await Promise.all([slow, ordinary, first]);
    expect(order).toEqual(['slow', 'urgent', 'ordinary']);
    // The ordinary count ran after the urgent insert, which it sees; the abandoned row never landed.
    expect(Number((await ordinary)[0]!.n)).toBe(1);
    expect(await conn.query<{ n: number }>('SELECT n FROM lane_t ORDER BY n')).toEqual([{ n: 1 }]);
    const stats = store.callStats();
    expect(stats['insert lane_t']).toMatchObject({ calls: 1 });
    expect(stats['insert lane_t (urgent)']).toMatchObject({ calls: 1 });
    expect(stats['SELECT lane_t']!.calls).toBeGreaterThanOrEqual(2);
    expect(stats['SELECT numbers']).toMatchObject({ calls: 1 });
    await store.close();
  });
});
