/**
 * Account state refreshed in the background: one process changes accounts, another (its own
 * Accounts on the same real chDB) serves cached state without a storage read per account while
 * its refresh polls, sees every change through the poll within the TTL, and falls back to
 * reading on the request path while the poll fails. Its clock is injected (ttl and validity);
 * the poll's timer is real.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { openStore } from '../src/storage/index.js';
import type { Store } from '../src/storage/types.js';
import { Keyring, hashToken, staticMasterKeys } from '../src/keyring/index.js';
import { Accounts } from '../src/accounts/accounts.js';

const dir = mkdtempSync(join(tmpdir(), 'cipherstat-accounts-refresh-'));
let store: Store;
let keyring: Keyring;
/** The process that changes accounts (admin paths). */
let admin: Accounts;
const ids: string[] = [];
const tokens = new Map<string, string>();

/** The other process: its store counts request-path reads and can be made to fail its polls. */
function otherProcess({ warmAccounts }: { warmAccounts?: number } = {}) {
  const counts = { reads: 0, polls: 0, warmReads: 0 };
  // slowPollMs: the next poll's read waits that long (on the injected clock) before it runs, and
  // the polls after it fail (so it stays the last good one)
  const faults = { polls: false, warm: false, slowPollMs: 0 };
  const clock = { t: 1_000_000 };
  const own: Store = {
    ...store,
    getAccounts: (list) => {
      counts.reads++;
      return store.getAccounts(list);
    },
    getAccount: (id) => {
      counts.reads++;
      return store.getAccount(id);
    },
    accountChanges: async (since, onWait) => {
      counts.polls++;
      if (faults.polls) throw new Error('storage unavailable (test)');
      if (!faults.slowPollMs) return store.accountChanges(since, onWait);
      clock.t += faults.slowPollMs;
      faults.slowPollMs = 0;
      const changes = await store.accountChanges(since, onWait); // the real lane tells when the read starts
      faults.polls = true;
      return changes;
    },
    someAccounts: (limit) => {
      counts.warmReads++;
      return faults.warm ? Promise.reject(new Error('storage unavailable (test)')) : store.someAccounts(limit);
    },
  };
  const accounts = new Accounts(own, keyring, { defaultRetentionDays: 30, ttlMs: 1000, refreshMs: 20, now: () => clock.t, warmAccounts });
  running.push(accounts);
  return { accounts, counts, faults, clock };
}
const running: Accounts[] = [];

/** Waits until `n` more good polls ran (real timer). */
const polls = async (a: Accounts, n = 2) => {
  const target = a.stats.refreshes + n;
  await expect.poll(() => a.stats.refreshes, { timeout: 60_000, interval: 10 }).toBeGreaterThanOrEqual(target);
};

beforeAll(async () => {
  store = await openStore({ dataDir: join(dir, 'data') });
  await store.migrate();
  keyring = Keyring.open({ dir: join(dir, 'keyring'), master: staticMasterKeys({ 1: randomBytes(32) }) });
  admin = new Accounts(store, keyring, { defaultRetentionDays: 30 });
  for (let i = 0; i < 8; i++) {
    const a = await admin.create({ retentionDays: 10 + i });
    ids.push(a.accountId);
    tokens.set(a.accountId, a.readToken);
  }
});

afterEach(async () => {
  for (const a of running.splice(0)) await a.stop();
});

afterAll(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Accounts: background refresh of account state', () => {
  it('serves cached accounts without a storage read per request while the refresh polls, however long ago they were read', async () => {
    const p = otherProcess();
    p.accounts.start();
    await polls(p.accounts, 1); // the first good poll after the clock read: entries read from now on stay current
    await p.accounts.getMany(ids);
    const reads = p.counts.reads;
    expect(reads).toBeGreaterThan(0);
    for (let i = 0; i < 5; i++) {
      p.clock.t += 60_000; // far past the TTL: only the polls keep the entries current
      await polls(p.accounts);
      await p.accounts.getMany(ids);
    }
    expect(p.counts.reads).toBe(reads);
    expect(p.accounts.stats.hit).toBe(5 * ids.length);
  });

  it('sees deactivation, a rotated read token, a shred and settings changed by another process through the poll, with no request-path read', async () => {
    const p = otherProcess();
    p.accounts.start();
    await polls(p.accounts, 1);
    const [off, rotated, shredded, changed] = ids.slice(0, 4) as [string, string, string, string];
    for (const id of [off, rotated, shredded, changed]) expect((await p.accounts.get(id))?.state).toBe('active');
    expect((await p.accounts.byReadToken(tokens.get(rotated)!))?.accountId).toBe(rotated);
    const reads = p.counts.reads;

    await admin.update(off, { state: 'deactivated', deactivatedAt: Date.now() });
    const { readToken } = await admin.rotateReadToken(rotated);
    await admin.tombstone(shredded, Date.now() - 86_400_000); // a shred time in the past: seen all the same
    await admin.update(changed, { confidential: true, retentionDays: 99 });

    // Each change is seen through a poll (the clock stands still: no entry expires meanwhile).
    await expect.poll(async () => (await p.accounts.get(off))?.state, { timeout: 60_000, interval: 20 }).toBe('deactivated');
    await expect.poll(async () => (await p.accounts.get(shredded))?.state, { timeout: 60_000, interval: 20 }).toBe('shredded');
    await expect.poll(async () => (await p.accounts.get(changed))?.retentionDays, { timeout: 60_000, interval: 20 }).toBe(99);
    expect(p.accounts.seen(changed)).toMatchObject({ confidential: true, retentionDays: 99 });
    expect(p.accounts.seen(shredded)).toBeNull();
    await expect.poll(async () => (await p.accounts.get(rotated))?.readTokenHash, { timeout: 60_000, interval: 20 }).toBe(hashToken(readToken));
    expect(await p.accounts.byReadToken(tokens.get(rotated)!)).toBeUndefined(); // the old token: refused
    expect(p.counts.reads).toBe(reads);
    expect((await p.accounts.byReadToken(readToken))?.accountId).toBe(rotated); // the new one: its account (one id lookup, no state read)
    expect(p.counts.reads).toBe(reads);
    expect(p.accounts.stats.refreshed).toBeGreaterThanOrEqual(4);
    tokens.set(rotated, readToken);
  });

  it('an account it has cached as unknown is seen once another process creates it', async () => {
    const p = otherProcess();
    p.accounts.start();
    await polls(p.accounts, 1);
    // An id this process looks up before the account exists (cached as unknown); its row is
    // then written by another process.
    const created = await admin.create({ retentionDays: 5 });
    const later = `acct_${'ab'.repeat(12)}`;
    expect(await p.accounts.get(later)).toBeUndefined();
    const reads = p.counts.reads;
    const row = { ...(await store.getAccount(created.accountId))!, accountId: later, version: 1 };
    await store.putAccount(row);
    await expect.poll(async () => (await p.accounts.get(later))?.accountId, { timeout: 60_000, interval: 20 }).toBe(later);
    expect(p.counts.reads).toBe(reads);
  });

  it('while the refresh fails, entries expire after the TTL and are read on the request path; once it succeeds again, no more reads', async () => {
    const p = otherProcess();
    p.accounts.start();
    await polls(p.accounts, 1);
    const id = ids[4]!;
    expect((await p.accounts.get(id))?.retentionDays).toBe(14);
    p.faults.polls = true;
    const failures = p.accounts.stats.refreshFailures;
    await expect.poll(() => p.accounts.stats.refreshFailures, { timeout: 60_000, interval: 10 }).toBeGreaterThan(failures);
    await admin.update(id, { retentionDays: 44 });
    // Within the TTL of the last good poll the cached state is served (today's rule) ...
    let reads = p.counts.reads;
    expect((await p.accounts.get(id))?.retentionDays).toBe(14);
    expect(p.counts.reads).toBe(reads);
    // ... past it, a request reads storage: never stale for longer than the TTL.
    p.clock.t += 1000;
    expect((await p.accounts.get(id))?.retentionDays).toBe(44);
    expect(p.counts.reads).toBe(reads + 1);
    p.clock.t += 1000;
    await p.accounts.get(id);
    expect(p.counts.reads).toBe(reads + 2);

    p.faults.polls = false;
    await polls(p.accounts);
    reads = p.counts.reads;
    p.clock.t += 60_000;
    await polls(p.accounts);
    expect((await p.accounts.get(id))?.retentionDays).toBe(44);
    expect(p.counts.reads).toBe(reads);
  });

  it('a poll whose read waited for the engine keeps entries current from when the read started, not from when the poll was called', async () => {
    const p = otherProcess();
    p.accounts.start();
    await polls(p.accounts, 1);
    const id = ids[5]!;
    await p.accounts.get(id);
    const failures = p.accounts.stats.refreshFailures;
    const calledAt = p.clock.t;
    p.faults.slowPollMs = 900; // the next poll's read starts 900 ms after the poll was called
    await expect.poll(() => p.accounts.stats.refreshFailures, { timeout: 60_000, interval: 10 }).toBeGreaterThan(failures); // it ran; the later ones fail
    const reads = p.counts.reads;
    p.clock.t = calledAt + 900 + 999; // within the TTL of the read's start (1,899 ms after the call)
    await p.accounts.get(id);
    expect(p.counts.reads).toBe(reads);
    p.clock.t = calledAt + 900 + 1000; // past it: read on the request path
    await p.accounts.get(id);
    expect(p.counts.reads).toBe(reads + 1);
  });

  it('warm-up: the first poll reads up to warmAccounts accounts in one query; they are served and kept current by the polls with no request-path read', async () => {
    const p = otherProcess({ warmAccounts: 1000 });
    p.accounts.start();
    await polls(p.accounts, 1);
    expect(p.counts.warmReads).toBe(1);
    expect(p.accounts.stats.warmed).toBeGreaterThanOrEqual(ids.length);
    p.clock.t += 60_000; // far past the TTL: only the polls keep the warmed entries current
    await polls(p.accounts);
    const id = ids[7]!;
    await admin.update(id, { retentionDays: 77 });
    await expect.poll(async () => (await p.accounts.get(id))?.retentionDays, { timeout: 60_000, interval: 20 }).toBe(77);
    await p.accounts.getMany(ids);
    expect(p.counts.reads).toBe(0);
    expect(p.counts.warmReads).toBe(1); // once, at the first poll

    // Bounded: with a limit of 3 only 3 accounts are warmed; the others are read on their first request.
    const q = otherProcess({ warmAccounts: 3 });
    q.accounts.start();
    await polls(q.accounts, 1);
    expect(q.accounts.stats.warmed).toBe(3);
    await q.accounts.getMany(ids);
    expect(q.counts.reads).toBeGreaterThan(0); // the misses, read in bulk
    expect(q.accounts.stats.hit).toBeLessThanOrEqual(3);
    expect(q.accounts.stats.hit + q.accounts.stats.miss).toBe(ids.length);
  });

  it('warm-up that fails caches nothing: accounts are read on their first request', async () => {
    const p = otherProcess({ warmAccounts: 1000 });
    p.faults.warm = true;
    p.accounts.start();
    await polls(p.accounts, 1);
    expect(p.counts.warmReads).toBe(1);
    expect(p.accounts.stats.warmed).toBe(0);
    await p.accounts.getMany(ids);
    expect(p.accounts.stats.miss).toBe(ids.length);
  });

  it('never started (CLI, unit tests): the TTL rule alone', async () => {
    const p = otherProcess();
    const id = ids[5]!;
    await p.accounts.get(id);
    const reads = p.counts.reads;
    await p.accounts.get(id);
    expect(p.counts.reads).toBe(reads);
    p.clock.t += 1000;
    await p.accounts.get(id);
    expect(p.counts.reads).toBe(reads + 1);
    expect(p.counts.polls).toBe(0);
  });

  it('storage stamps each account row with its own clock; the poll returns every version written since', async () => {
    const { now } = await store.accountChanges();
    expect(now).toBeGreaterThan(0);
    const id = ids[6]!;
    await admin.update(id, { name: 'first' });
    await admin.update(id, { name: 'second' });
    const changes = await store.accountChanges(now! - 1);
    const mine = changes.rows.filter((r) => r.row.accountId === id);
    expect(mine.map((r) => r.row.name)).toEqual(expect.arrayContaining(['first', 'second']));
    for (const r of mine) expect(r.changedAt).toBeGreaterThanOrEqual(now! - 1);
    expect(changes.now).toBeGreaterThanOrEqual(Math.max(...mine.map((r) => r.changedAt)));
    expect((await store.accountChanges(changes.now! + 60_000)).rows).toEqual([]);
  });
});
