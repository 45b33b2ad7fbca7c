import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../src/storage/index.js';
import { storeConformance } from './support/storage-conformance.js';
import { connectionOf } from '../src/storage/index.js';
import { removeTornMutationEntries } from '../src/storage/chdb.js';

// chDB binds one data directory per process: this file owns its fork and its directory.
const dataDir = await mkdtemp(join(tmpdir(), 'cipherstat-storage-chdb-'));
afterAll(() => rm(dataDir, { recursive: true, force: true }));

storeConformance('chdb', { open: () => openStore({ dataDir }) });

describe('chdb adapter', () => {
  it('keeps its files under <dataDir>/clickhouse and honours the database name', async () => {
    const store = await openStore({ dataDir, database: 'other_db' });
    expect(store.kind).toBe('chdb');
    await store.migrate();
    expect(await store.tables()).toContain('other_db.batches');
    const [row] = await connectionOf(store).query<{ path: string }>("SELECT data_paths[1] AS path FROM system.tables WHERE database = 'other_db' AND name = 'batches'");
    expect(row?.path.startsWith(join(dataDir, 'clickhouse'))).toBe(true);
    await store.close();
  });

  // README "Running on a ClickHouse cluster" names the one ClickHouse release the tests run against
  // (every storage test, the remote ones included: their HTTP endpoint serves this same engine).
  // A chdb upgrade fails this test until the README says which release it brings.
  it('runs on the ClickHouse release the README names (26.7)', async () => {
    const store = await openStore({ dataDir });
    const [row] = await connectionOf(store).query<{ v: string }>('SELECT version() AS v');
    expect(row?.v).toMatch(/^26\.7\./);
    await store.close();
  });

  it('refuses a second data directory in the same process while one is open', async () => {
    const store = await openStore({ dataDir });
    const other = await mkdtemp(join(tmpdir(), 'cipherstat-storage-other-'));
    await expect(openStore({ dataDir: other })).rejects.toMatchObject({ code: 'storage_unavailable' });
    await store.ping();
    await store.close();
    await rm(other, { recursive: true, force: true });
  });

  it('a torn mutation entry (what a mutation on a full disk leaves) is removed at open, so its table attaches again', async () => {
    let store = await openStore({ dataDir });
    await store.migrate();
    const [row] = await connectionOf(store).query<{ path: string }>("SELECT data_paths[1] AS path FROM system.tables WHERE database = 'cipherstat' AND name = 'rollups'");
    await connectionOf(store).exec('ALTER TABLE rollups DELETE WHERE 0 SETTINGS mutations_sync = 2');
    const count = async () => Number((await connectionOf(store).query<{ n: string }>('SELECT count() AS n FROM rollups'))[0]!.n);
    const before = await count();
    await store.close();
    const entries = (await readdir(row!.path)).filter((f) => /^mutation_\d+\.txt$/.test(f));
    expect(entries.length).toBeGreaterThan(0);
    // A whole entry begins with the format line the repair looks for: left alone.
    expect(await removeTornMutationEntries(join(dataDir, 'clickhouse'))).toEqual([]);
    const torn = join(row!.path, entries.at(-1)!);
    await writeFile(torn, ''); // as ENOSPC leaves it
    store = await openStore({ dataDir });
    expect(await count()).toBe(before); // the table attached, its rows all there
    await expect(stat(torn)).rejects.toMatchObject({ code: 'ENOENT' });
    await store.close();
  });

  it('refuses a cluster and a missing dataDir', async () => {
    await expect(openStore({ dataDir, cluster: 'c1' })).rejects.toMatchObject({ code: 'storage_invalid_input' });
    await expect(openStore({})).rejects.toMatchObject({ code: 'storage_invalid_input' });
    await expect(openStore({ dataDir, database: 'bad-name; DROP' })).rejects.toMatchObject({ code: 'storage_invalid_input' });
  });
});
