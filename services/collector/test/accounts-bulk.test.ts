/**
 * Account state for thousands of small shops: misses are read in bulk (one storage query for
 * every account waiting), with the same rows as one read per account, on real chDB.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { openStore } from '../src/storage/index.js';
import type { Store } from '../src/storage/types.js';
import { Keyring, staticMasterKeys } from '../src/keyring/index.js';
import { Accounts } from '../src/accounts/accounts.js';

const dir = mkdtempSync(join(tmpdir(), 'cipherstat-accounts-bulk-'));
let store: Store;
let keyring: Keyring;
const ids: string[] = [];
/** Account reads (getAccount or getAccounts calls; the real store underneath). */
let reads = 0;

beforeAll(async () => {
  store = await openStore({ dataDir: join(dir, 'data') });
  await store.migrate();
  const getAccounts = store.getAccounts.bind(store);
  const getAccount = store.getAccount.bind(store);
  store.getAccounts = (list) => {
    reads++;
    return getAccounts(list);
  };
  store.getAccount = (id) => {
    reads++;
    return getAccount(id);
  };
  keyring = Keyring.open({ dir: join(dir, 'keyring'), master: staticMasterKeys({ 1: randomBytes(32) }) });
  const creator = new Accounts(store, keyring, { defaultRetentionDays: 30 });
  for (let i = 0; i < 40; i++) ids.push((await creator.create({ retentionDays: 10 + i, confidential: i % 3 === 0 })).accountId);
});

afterAll(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Accounts: bulk reads of account state', () => {
  it('answers many concurrent misses with at most two storage reads, each row as getAccount reads it', async () => {
    const accounts = new Accounts(store, keyring, { defaultRetentionDays: 30, ttlMs: 60_000 });
    const unknown = 'acct_000000000000000000000000';
    reads = 0;
    const got = await accounts.getMany([...ids, unknown, ids[0]!]);
    // The first miss starts a read at once; every miss arriving meanwhile joins the next one.
    expect(reads).toBeLessThanOrEqual(2);
    expect(got.size).toBe(ids.length + 1);
    expect(got.get(unknown)).toBeUndefined();
    expect(accounts.stats.miss).toBe(ids.length + 1);
    for (const id of ids) expect(got.get(id)).toEqual(await store.getAccount(id));

    // Cached now: no read at all.
    reads = 0;
    await Promise.all(ids.map((id) => accounts.get(id)));
    expect(reads).toBe(0);
    expect(accounts.stats.hit).toBe(ids.length);
  });

  it('an update made while a bulk read is in flight wins over it', async () => {
    const accounts = new Accounts(store, keyring, { defaultRetentionDays: 30, ttlMs: 60_000 });
    const pending = Promise.all(ids.map((id) => accounts.get(id)));
    await accounts.update(ids[5]!, { state: 'deactivated', deactivatedAt: Date.now() });
    await pending;
    expect((await accounts.get(ids[5]!))?.state).toBe('deactivated');
    expect((await accounts.get(ids[6]!))?.state).toBe('active');
  });
});
