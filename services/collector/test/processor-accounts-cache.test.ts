/** The account cache of the ingest and process hot paths: single flight, and never a stale overwrite. */
import { describe, expect, it } from 'vitest';
import { Accounts } from '../src/accounts/accounts.js';
import type { AccountRow, AccountStore } from '../src/storage/types.js';
import type { Keyring } from '../src/keyring/index.js';

const row = (version: number, state: AccountRow['state'] = 'active'): AccountRow => ({
  accountId: 'acct_x', version, state, createdAt: 0, updatedAt: 0, deactivatedAt: null, shredAfter: null, shreddedAt: null,
  readTokenHash: 'h', allowedOrigins: [], retentionDays: 30, confidential: false,
});

/** An in-memory account store holding one account, whose reads resolve only when told to, in any order. */
function fakeStore() {
  let stored = row(1);
  const pending: { resolve: () => void; value: AccountRow }[] = [];
  const rejects = new Map<string, number>();
  const read = async (): Promise<AccountRow> => {
    store.reads++;
    const value = stored;
    await new Promise<void>((resolve) => pending.push({ resolve, value }));
    return value;
  };
  const store: AccountStore & { reads: number } = {
    reads: 0,
    getAccount: async (id) => (id === stored.accountId ? read() : undefined),
    getAccounts: async (ids) => (ids.includes(stored.accountId) ? [await read()] : []),
    listAccounts: async () => [await read()],
    someAccounts: async () => [await read()],
    putAccount: async (r) => void (stored = r),
    accountIdByReadTokenHash: async (hash) => (hash === stored.readTokenHash ? stored.accountId : undefined),
    addRejects: async (rows) => {
      for (const r of rows) rejects.set(r.code, (rejects.get(r.code) ?? 0) + r.count);
    },
    rejects: async () => Object.fromEntries(rejects),
    accountChanges: async () => ({ now: undefined, rows: [] }), // no background refresh here (never started)
  };
  const release = async (i = 0) => {
    pending.splice(i, 1)[0]!.resolve();
    await new Promise((r) => setImmediate(r));
  };
  return { store, pending, release };
}

describe('Accounts.get', () => {
  it('shares one storage read between concurrent misses', async () => {
    const { store, release } = fakeStore();
    const accounts = new Accounts(store, {} as Keyring, { defaultRetentionDays: 30, ttlMs: 60_000 });
    const gets = Array.from({ length: 50 }, () => accounts.get('acct_x'));
    expect(store.reads).toBe(1);
    await release();
    expect((await Promise.all(gets)).every((r) => r?.version === 1)).toBe(true);
    expect((await accounts.get('acct_x'))?.version).toBe(1);
    expect(store.reads).toBe(1);
  });

  it('never lets a read started before update() overwrite it', async () => {
    const { store, pending, release } = fakeStore();
    const accounts = new Accounts(store, {} as Keyring, { defaultRetentionDays: 30, ttlMs: 60_000 });
    const old = accounts.get('acct_x'); // reads version 1, held
    const updating = accounts.update('acct_x', { state: 'deactivated' }); // fresh() read, held
    await new Promise((r) => setImmediate(r));
    await release(1); // the update's read first
    const next = await updating;
    expect(next.version).toBe(2);
    expect(pending.length).toBe(1);
    await release(0); // then the old read finishes
    expect((await old)?.version).toBe(1);
    expect((await accounts.get('acct_x'))?.state).toBe('deactivated');
    expect(store.reads).toBe(2);
  });
});
