/**
 * Exactly once when a tick fails in process (not a crash): the tick removes its own rollup
 * rows before its batches are retried; when it cannot, the next tick does it first; the
 * periodic recovery only touches parts older than its safety age. The same cases run with
 * ticks computed inline (processor-exactly-once.test.ts, from the sources) and in the tick
 * worker thread (processor-exactly-once-worker.test.ts, the built collector), whose output
 * reaches the main thread without its rollup row objects (their keys as one text, read only
 * when a tick fails): both failure paths must hold in each.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, envelope, points, post, startTestCollector, type TestAccount, type TestCollector } from './collector.js';
import type { Store } from '../../src/storage/types.js';
import { connectionOf } from '../../src/storage/index.js';

export function exactlyOnceSuites(mode: { fromDist: boolean }): void {
  let c: TestCollector;
  let account: TestAccount;
  let offset = 0;

  beforeAll(async () => {
    c = await startTestCollector({ now: () => Date.now() + offset, fromDist: mode.fromDist });
    account = await createAccount(c);
    // the mode this file asked for: ticks in the worker thread exactly when run from the built files
    expect((c.services.processor as unknown as { runner: { threaded: boolean } }).runner.threaded).toBe(mode.fromDist);
  });
  afterAll(async () => c?.stop());

  /** Makes the next call of `method` throw once. */
  function failOnce<K extends 'markProcessed' | 'deleteRollups' | 'insertDictionary' | 'markedBatches'>(store: Pick<Store, K>, method: K): void {
    const original = store[method];
    const failing: () => Promise<void> = async () => {
      store[method] = original;
      throw new Error(`injected ${method} failure`);
    };
    store[method] = failing as unknown as Store[K];
  }

  async function rollupParts(accountId: string): Promise<{ parts: number; rows: number; unmarked: number }> {
    const [r] = await connectionOf(c.services.store).query<{ parts: string; rows: string; unmarked: string }>(
      `SELECT uniqExact(part) AS parts, count() AS rows,
              countIf(part NOT IN (SELECT part FROM processed WHERE account_id = {a:String})) AS unmarked
       FROM rollups WHERE account_id = {a:String}`,
      { a: accountId },
    );
    return { parts: Number(r!.parts), rows: Number(r!.rows), unmarked: Number(r!.unmarked) };
  }

  async function acceptedPoints(accountId: string): Promise<number> {
    const [r] = await connectionOf(c.services.store).query<{ n: string }>('SELECT sum(accepted) AS n FROM processed FINAL WHERE account_id = {a:String}', { a: accountId });
    return Number(r!.n);
  }

  /** Posts batches, lets the first tick fail as told, then retries through the poll. */
  async function failedThenRetried(fail: () => void, to = account): Promise<void> {
    const batches = [envelope(to, points(10)), envelope(to, points(5))];
    fail();
    for (const b of batches) expect((await post(c.url, b.bytes)).status).toBe(202);
    const processor = c.services.processor!;
    await processor.drain();
    offset += 60_000; // old enough for the poll of role `all`
    expect(await processor.poll()).toBeGreaterThan(0); // the batches of the failed tick
    await processor.drain();
  }

  describe('processor: a failed tick never counts twice', () => {
    it('removes its own rollup rows when markProcessed fails, so the retry counts exactly once', async () => {
      const store = c.services.store;
      const before = await acceptedPoints(account.accountId);
      await failedThenRetried(() => failOnce(store, 'markProcessed'));
      expect(await acceptedPoints(account.accountId)).toBe(before + 15);
      const r = await rollupParts(account.accountId);
      expect(r.unmarked).toBe(0);
      // one series and minute bucket per tick: points of the running hour get minute rows only (compaction derives the hour rows)
      expect(r.rows).toBe(r.parts);
    });

    /** A fresh account (new names: its first tick makes dictionary entries) whose first tick fails at `call` once: the retry counts once, leaves no unmarked rows and writes the entries. */
    async function failOnceWithNewNames(call: Parameters<typeof failOnce>[1]): Promise<void> {
      const fresh = await createAccount(c);
      await failedThenRetried(() => failOnce(c.services.store, call), fresh);
      expect(await acceptedPoints(fresh.accountId)).toBe(15);
      const r = await rollupParts(fresh.accountId);
      expect(r.unmarked).toBe(0);
      expect(r.rows).toBe(r.parts);
      expect((await c.services.store.dictionary(fresh.accountId)).length).toBeGreaterThan(0);
    }

    it('when the dictionary insert fails beside the rollup insert, the rollup rows go and the retry counts once', async () => {
      await failOnceWithNewNames('insertDictionary');
    });

    it('when the twin check (markedBatches) fails, the computed tick is dropped unwritten, its dictionary entries kept: the retry counts once and writes them', async () => {
      await failOnceWithNewNames('markedBatches');
    });

    it('when the cleanup fails too, the next tick removes the rows first', async () => {
      const store = c.services.store;
      const before = await acceptedPoints(account.accountId);
      await failedThenRetried(() => {
        failOnce(store, 'markProcessed');
        failOnce(store, 'deleteRollups');
      });
      expect(await acceptedPoints(account.accountId)).toBe(before + 15);
      expect((await rollupParts(account.accountId)).unmarked).toBe(0);
    });

    it('periodic recovery deletes only orphan parts older than its safety age, never compaction parts', async () => {
      const store = c.services.store;
      const now = Date.now() + offset;
      const row = (part: string, writtenAt: number) => ({
        accountId: account.accountId, level: 0 as const, bucket: now - (now % 60_000), metric: '1', series: '2', tagKeys: [], tagValues: [],
        keyVersion: 1, part, agg: new Uint8Array([1, 2, 3]), writtenAt, expiresAt: now + 86_400_000,
      });
      await store.insertRollups([row('orphan-old', now - 10 * 60_000), row('orphan-young', now - 1000), row('c:compacted', now - 10 * 60_000)]);
      const processor = c.services.processor!;
      expect(await processor.recover({ minAgeMs: 120_000 })).toBe(1);
      const parts = await connectionOf(store).query<{ part: string }>('SELECT DISTINCT part FROM rollups WHERE account_id = {a:String} AND metric = 1 ORDER BY part', { a: account.accountId });
      expect(parts.map((p) => p.part)).toEqual(['c:compacted', 'orphan-young']);
      expect(await processor.recover()).toBe(1); // at start-up: every orphan
      await connectionOf(store).exec("DELETE FROM rollups WHERE part = 'c:compacted'");
    });
  });

  describe('processor: an account that cannot be read', () => {
    it('holds up only its own batches; they are processed once it can be read again', async () => {
      const broken = await createAccount(c);
      const fine = await createAccount(c);
      // A real failure: the account's key file becomes unreadable garbage (the keyring refuses it).
      const file = join(c.dataDir, 'keyring', 'accounts', `${broken.accountId}.json`);
      const original = readFileSync(file);
      // Acknowledged while the file was fine, processed after it broke.
      const processor = c.services.processor!;
      await processor.stop();
      for (const a of [broken, fine]) expect((await post(c.url, envelope(a, points(7)).bytes)).status).toBe(202);
      writeFileSync(file, '{ not a key file');
      offset += 1_000; // past the keyring's cross-process cache window
      try {
        processor.start();
        await processor.drain();
        expect(await acceptedPoints(fine.accountId)).toBe(7);
        expect(await acceptedPoints(broken.accountId)).toBe(0);
        expect(c.logs.join('')).toContain('account key unavailable');
        // and nothing more is acknowledged for it meanwhile
        const refused = await post(c.url, envelope(broken, points(7)).bytes);
        expect(refused.status).toBe(503);
        expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('account_key_unavailable');
      } finally {
        writeFileSync(file, original);
      }
      offset += 60_000;
      await new Promise((r) => setTimeout(r, 300)); // the keyring reads the file again
      expect(await c.services.processor!.poll()).toBe(1);
      await c.services.processor!.drain();
      expect(await acceptedPoints(broken.accountId)).toBe(7);
      expect(await acceptedPoints(fine.accountId)).toBe(7);
    });
  });
}
