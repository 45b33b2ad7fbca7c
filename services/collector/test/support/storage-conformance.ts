/**
 * The one conformance suite of the Store interface, run against every adapter
 * (storage-chdb.test.ts, storage-remote.test.ts). Each test uses its own account ids and its
 * own receivedAt window, so tests do not see each other's rows.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RowBinaryReader, connectionOf, readStoredRows, type AccountRow, type BatchRow, type DictRow, type RollupGroupKey, type RollupRow, type Store } from '../../src/storage/index.js';
import { SCHEMA_VERSION, bootstrapSql, migrations, renderMigrations } from '../../src/storage/schema.js';
import { createStore } from '../../src/storage/repository.js';
import { slotEntry, supersededRefs } from '../../src/rollup/days.js';
import { LEVEL } from '../../src/rollup/levels.js';

export interface StoreFactory {
  /** Opens a store over the same data every time (the suite closes and reopens it). */
  open(): Promise<Store>;
  /** Runs once after the suite (e.g. drop the test database on a real server). */
  dispose?(store: Store): Promise<void>;
}

const HOUR = 3_600_000;
const FAR = Date.UTC(2099, 0, 1);
const U64_MAX = '18446744073709551615';
export const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
/** Every byte TSV or JSON could trip on, many times over. */
const NASTY = Uint8Array.from({ length: 1024 }, (_, i) => [0x5c, 0x09, 0x0a, 0x0d, 0x00, 0x27, 0x22, 0xff][i % 8]!);

export function batch(accountId: string, batchId: string, receivedAt: number, sealed: Uint8Array = randomBytes(64)): BatchRow {
  return { accountId, batchId, receivedAt, createdAt: receivedAt - 500, pointCount: 100, sdk: 'js/0.1.0', version: receivedAt % 2 ? 2 : 1, sealed, expiresAt: FAR };
}

export function account(accountId: string, version: number, over: Partial<AccountRow> = {}): AccountRow {
  return {
    accountId,
    version,
    state: 'active',
    createdAt: Date.UTC(2026, 0, 1),
    updatedAt: Date.UTC(2026, 0, 1) + version,
    deactivatedAt: null,
    shredAfter: null,
    shreddedAt: null,
    readTokenHash: 'ab'.repeat(32),
    allowedOrigins: ['https://a.example'],
    retentionDays: 30,
    confidential: false,
    name: '',
    ...over,
  };
}

function rollup(accountId: string, part: string, over: Partial<RollupRow> = {}): RollupRow {
  return {
    accountId,
    level: 0,
    bucket: Date.UTC(2026, 0, 1, 12, 0),
    metric: '1',
    series: '2',
    tagKeys: ['3'],
    tagValues: ['4'],
    keyVersion: 1,
    part,
    agg: randomBytes(48),
    writtenAt: Date.UTC(2026, 0, 1, 12, 1),
    expiresAt: FAR,
    ...over,
  };
}

function dict(accountId: string, kind: 0 | 1 | 2, pseudonym: string, keyVersion: number, ciphertext: Uint8Array): DictRow {
  return { accountId, kind, pseudonym, keyVersion, ciphertext, firstSeen: Date.UTC(2026, 0, 1) };
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** pendingBatches spans every account: keep one test's account. */
const ids = (rows: BatchRow[], accountId: string): string[] => rows.filter((b) => b.accountId === accountId).map((b) => b.batchId);

export function storeConformance(name: string, factory: StoreFactory): void {
  describe(`Store conformance: ${name}`, () => {
    let store: Store;
    let table: (name: string) => string;

    beforeAll(async () => {
      store = await factory.open();
    });
    /** A database `<store's>_v<version>` created by the migrations up to `version` (the test drops it). */
    const databaseAt = async (version: number): Promise<string> => {
      const conn = connectionOf(store);
      const old = `${table('processed').split('.')[0]}_v${version}`;
      const boot = bootstrapSql({ database: old });
      await conn.execOutsideDatabase(boot.createDatabase);
      await conn.exec(boot.createMigrationsTable);
      for (const m of renderMigrations({ database: old }).filter((m) => m.version <= version)) {
        for (const sql of m.statements) await conn.exec(sql);
        await conn.exec(`INSERT INTO ${old}.schema_migrations (version, applied_at) VALUES (${m.version}, now64(3))`);
      }
      return old;
    };
    afterAll(async () => {
      if (store) {
        await factory.dispose?.(store);
        await store.close();
      }
    });

    it('migrates from nothing to the latest version, and again is a no-op', async () => {
      expect(await store.migrate()).toEqual({ from: 0, to: SCHEMA_VERSION });
      expect(await store.migrate()).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
      const tables = await store.tables();
      table = (n) => tables.find((t) => t.endsWith(`.${n}`)) ?? `missing.${n}`;
      const rows = await connectionOf(store).query<{ version: number }>(`SELECT version FROM ${table('schema_migrations')} ORDER BY version`);
      expect(rows.map((r) => r.version)).toEqual(migrations.map((m) => m.version));
    });

    it('withDeadline: a call that does not answer in time is storage_unavailable, and the store keeps serving', async () => {
      const bounded = store.withDeadline(200);
      // ~6 s of engine time (two rows, 3 s each) against a 200 ms deadline.
      await expect(connectionOf(bounded).query('SELECT sleep(3) FROM numbers(2) SETTINGS max_block_size = 1')).rejects.toMatchObject({
        name: 'StorageError',
        code: 'storage_unavailable',
        message: 'storage did not answer within 200 ms',
      });
      await bounded.close(); // a view: closing it leaves the store open
      // Once the abandoned statement is done (chDB runs one at a time), the store answers as before.
      expect(await connectionOf(store).query<{ one: number }>('SELECT 1 AS one')).toEqual([{ one: 1 }]);
    });

    it('lists every table it created', async () => {
      const names = (await store.tables()).map((t) => t.split('.')[1]);
      expect(names.sort()).toEqual(['accounts', 'batches', 'derived', 'dictionary', 'fences', 'processed', 'rejects', 'rollup_levels', 'rollups', 'schema_migrations']);
    });

    it('keeps the greatest derivation watermark written (migration 11)', async () => {
      const start = await store.derivedUntil();
      const t = Math.max(start, Date.UTC(2026, 3, 1)) + 3_600_000;
      await store.setDerivedUntil(t);
      await store.setDerivedUntil(t - 3_600_000); // an older one written later does not move it back
      expect(await store.derivedUntil()).toBe(t);
    });

    it('adds the supersedes column to rollups (migration 2)', async () => {
      const cols = await connectionOf(store).query<{ name: string; type: string }>(
        `SELECT name, type FROM system.columns WHERE database = {db:String} AND table = 'rollups' AND name = 'supersedes'`,
        { db: table('rollups').split('.')[0]! },
      );
      expect(cols).toEqual([{ name: 'supersedes', type: 'Array(String)' }]);
    });

    it('declares TTL, raw codecs and fsync in the DDL', async () => {
      const ddl = async (n: string) => (await connectionOf(store).query<{ statement: string }>(`SHOW CREATE TABLE ${table(n)}`))[0]?.statement ?? '';
      const batches = await ddl('batches');
      expect(batches).toMatch(/TTL expires_at/);
      expect(batches).toMatch(/`sealed` String CODEC\(NONE\)/);
      expect(batches).toMatch(/fsync_after_insert = 1/);
      expect(batches).toMatch(/ReplacingMergeTree/);
      const rollups = await ddl('rollups');
      expect(rollups).toMatch(/TTL expires_at/);
      expect(rollups).toMatch(/`agg` String CODEC\(NONE\)/);
      expect(rollups).toMatch(/ORDER BY \(account_id, level, metric, bucket, series\)/);
      expect(await ddl('rejects')).toMatch(/SummingMergeTree/);
    });

    it('keeps the highest account version, whatever the insert order', async () => {
      const v1 = account('acct-v', 1);
      const v3 = account('acct-v', 3, {
        state: 'deactivated',
        deactivatedAt: Date.UTC(2026, 1, 1, 10, 0, 0, 123),
        shredAfter: Date.UTC(2026, 2, 1),
        allowedOrigins: ['https://b.example', "it's \\ odd\t\n", 'ünïcødé'],
        retentionDays: 400,
        confidential: true,
        name: 'Shop «DE»',
      });
      await store.putAccount(v1);
      await store.putAccount(v3);
      await store.putAccount(account('acct-v', 2));
      await store.putAccount(account('acct-w', 1, { allowedOrigins: [] }));
      expect(await store.getAccount('acct-v')).toEqual(v3);
      expect(await store.getAccount('acct-nobody')).toBeUndefined();
      const listed = (await store.listAccounts()).filter((a) => a.accountId.startsWith('acct-'));
      expect(listed).toEqual([v3, account('acct-w', 1, { allowedOrigins: [] })]);
    });

    it('stores batches once, finds existing ones, and lists pending ones oldest first', async () => {
      const t = Date.UTC(2030, 0, 1);
      const [b1, b2, b3] = [batch('acct-b', 'b1', t + 1), batch('acct-b', 'b2', t + 2), batch('acct-b', 'b3', t + 3)] as const;
      await store.insertBatches([b2, b1]);
      await store.insertBatches([b3, b2]); // b2 retried
      expect(ids(await store.pendingBatches(t, 10), 'acct-b')).toEqual(['b1', 'b2', 'b3']);
      expect((await store.countAccountRows('acct-b')).batches).toBe(3);

      const keys = [
        { accountId: 'acct-b', batchId: 'b1' },
        { accountId: 'acct-b', batchId: 'b2' },
        { accountId: 'acct-b', batchId: 'nope' },
        { accountId: 'acct-other', batchId: 'b1' },
      ];
      expect([...(await store.existingBatches(keys))].sort()).toEqual(['acct-b/b1', 'acct-b/b2']);
      expect(await store.existingBatches([])).toEqual(new Set());

      await store.markProcessed([{ accountId: 'acct-b', batchId: 'b1', processedAt: t + 10, accepted: 99, rejected: 1, part: 'tick-1' }]);
      await store.markProcessed([{ accountId: 'acct-b', batchId: 'b1', processedAt: t + 11, accepted: 99, rejected: 1, part: 'tick-1' }]);
      expect(ids(await store.pendingBatches(t, 10), 'acct-b')).toEqual(['b2', 'b3']);
      // What processing skips: the batches with a marker (the tuple, not either column alone).
      expect([...(await store.markedBatches(keys))]).toEqual(['acct-b/b1']);
      expect(await store.markedBatches([])).toEqual(new Set());
      expect((await store.pendingBatches(t, 1)).map((b) => b.batchId)).toEqual(['b2']);
      expect(ids(await store.pendingBatches(t + 3, 10), 'acct-b')).toEqual(['b3']);
      expect((await store.countAccountRows('acct-b')).processed).toBe(1);

      // Deleting a processed batch keeps it "existing" (its processed row stays), so a retry
      // is not stored again; deleting an unprocessed one forgets it.
      await store.deleteBatches([{ accountId: 'acct-b', batchId: 'b1' }, { accountId: 'acct-b', batchId: 'b3' }]);
      expect([...(await store.existingBatches(keys.slice(0, 1).concat({ accountId: 'acct-b', batchId: 'b3' })))]).toEqual(['acct-b/b1']);
      expect(ids(await store.pendingBatches(t, 10), 'acct-b')).toEqual(['b2']);
      expect((await store.countAccountRows('acct-b')).batches).toBe(1);
      await store.deleteBatches([]);
    });

    it('lists pending batches of one account partition (cityHash64(account_id) % n = i)', async () => {
      const t = Date.UTC(2030, 1, 1);
      const accounts = Array.from({ length: 12 }, (_, i) => `acct-part-${i}`);
      await store.insertBatches(accounts.map((a, i) => batch(a, 'p1', t + i)));
      const mine = (rows: BatchRow[]) => rows.filter((b) => b.accountId.startsWith('acct-part-')).map((b) => b.accountId);
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        const got = mine(await store.pendingBatches(t, 1000, { index: i, count: 3 }));
        const want = await connectionOf(store).query<{ a: string }>(
          'SELECT arrayJoin({accts:Array(String)}) AS a WHERE cityHash64(a) % 3 = {i:UInt64} ORDER BY a',
          { accts: accounts, i },
        );
        expect([...got].sort()).toEqual(want.map((r) => r.a));
        seen.push(...got);
      }
      expect(seen.sort()).toEqual([...accounts].sort());
      expect(mine(await store.pendingBatches(t, 1000, { index: 0, count: 1 })).sort()).toEqual([...accounts].sort());
    });

    it('round-trips every byte value of sealed batches exactly', async () => {
      const t = Date.UTC(2031, 0, 1);
      const sealed = [ALL_BYTES, NASTY, new Uint8Array(0), randomBytes(4096), Uint8Array.from(ALL_BYTES).reverse()];
      const rows = sealed.map((s, i) => batch('acct-bin', `bin-${i}`, t + i, s));
      await store.insertBatches(rows);
      const back = (await store.pendingBatches(t, 100)).filter((b) => b.accountId === 'acct-bin');
      expect(back).toEqual(rows.map((r) => ({ ...r, sealed: new Uint8Array(r.sealed) })));
      for (const [i, b] of back.entries()) {
        expect(b.sealed).toBeInstanceOf(Uint8Array);
        expect(hex(b.sealed)).toBe(hex(sealed[i]!));
      }
    });

    it('inserts 100 batches of 4 KB in one call', async () => {
      const t = Date.UTC(2032, 0, 1);
      const rows = Array.from({ length: 100 }, (_, i) => batch('acct-many', `m-${String(i).padStart(3, '0')}`, t + i, randomBytes(4096)));
      await store.insertBatches(rows);
      const back = (await store.pendingBatches(t, 1000)).filter((b) => b.accountId === 'acct-many');
      expect(back.length).toBe(100);
      expect(back.map((b) => hex(b.sealed))).toEqual(rows.map((r) => hex(r.sealed)));
    });

    it('stores rollups and answers pseudonym filters through query() with bound params', async () => {
      const a = 'acct-r';
      const rows = [
        rollup(a, 'p1', { tagKeys: ['10', '11'], tagValues: [U64_MAX, '7'], agg: ALL_BYTES }),
        rollup(a, 'p2', { tagKeys: ['10'], tagValues: ['8'], series: '3' }),
        rollup(a, 'p3', { level: 1, bucket: Date.UTC(2026, 0, 1, 12), metric: U64_MAX, tagValues: [U64_MAX] }),
        rollup('acct-r2', 'p4', { tagValues: [U64_MAX] }),
      ];
      await store.insertRollups(rows);
      const hit = await connectionOf(store).query<{ part: string; metric: string; tag_values: string[]; agg: string; bucket: string }>(
        `SELECT part, metric, tag_values, base64Encode(agg) AS agg, toUnixTimestamp64Milli(bucket) AS bucket
         FROM ${table('rollups')} WHERE account_id = {a:String} AND has(tag_values, {p:UInt64}) ORDER BY part`,
        { a, p: U64_MAX },
      );
      expect(hit.map((r) => r.part)).toEqual(['p1', 'p3']);
      expect(hit[0]?.tag_values).toEqual([U64_MAX, '7']);
      expect(hit[1]?.metric).toBe(U64_MAX);
      expect(Number(hit[0]?.bucket)).toBe(Date.UTC(2026, 0, 1, 12, 0));
      expect(hex(Buffer.from(hit[0]?.agg ?? '', 'base64'))).toBe(hex(ALL_BYTES));
      // A list of UInt64 pseudonyms binds as Array(String): the engine won't read ['7','8'] as Array(UInt64).
      const any = await connectionOf(store).query<{ n: string }>(
        `SELECT count() AS n FROM ${table('rollups')}
         WHERE account_id = {a:String} AND hasAny(tag_values, arrayMap(x -> toUInt64(x), {ps:Array(String)}))`,
        { a, ps: ['7', '8'] },
      );
      expect(any).toEqual([{ n: '2' }]);
      await expect(store.insertRollups([rollup(a, 'bad', { metric: 'not-a-number' })])).rejects.toMatchObject({ code: 'storage_invalid_input' });
      await expect(store.insertRollups([rollup(a, 'bad', { tagValues: ['18446744073709551616'] })])).rejects.toMatchObject({
        code: 'storage_invalid_input',
      });
    });

    it('stores day packs (level 2); supersededRefs reads their lists of hour rows (rollup/days.ts)', async () => {
      const a = 'acct-dp';
      const day = Date.UTC(2033, 1, 3);
      const hours = [rollup(a, 't1', { level: 1, bucket: day + HOUR }), rollup(a, 'c:m', { level: 1, bucket: day + 13 * HOUR }), rollup(a, 't2', { level: 1, bucket: day + 13 * HOUR })];
      const late = rollup(a, 'late', { level: 1, bucket: day + 13 * HOUR });
      const other = rollup(a, 't1', { level: 1, bucket: day + HOUR, series: '9' }); // same part, other series
      await store.insertRollups([...hours, late, other]);
      const pack = rollup(a, 'c:d:p', { level: 2, bucket: day, supersedes: [...hours.map((r) => slotEntry(LEVEL.dayPack, r.bucket, r.part)), 'c:d:old'] });
      await store.insertRollups([pack]);
      const refs = supersededRefs({ ...pack, supersedes: pack.supersedes! });
      expect(refs.slice(0, 3)).toEqual(hours.map((r) => ({ accountId: a, level: 1, bucket: r.bucket, metric: r.metric, series: r.series, part: r.part })));
      expect(refs[3]).toEqual({ accountId: a, level: 2, bucket: day, metric: pack.metric, series: pack.series, part: 'c:d:old' });
      expect((await store.findRollups(refs)).map((r) => r.part).sort()).toEqual(['c:m', 't1', 't2']);
      await store.clearSupersedes([{ accountId: a, level: 2, bucket: day, metric: pack.metric, series: pack.series, part: pack.part }], { wait: true });
      const [day2] = await connectionOf(store).query<{ l: number; d: string }>(`SELECT level AS l, toString(intDiv(toUnixTimestamp64Milli(bucket), 86400000)) AS d FROM rollups WHERE account_id = {a:String} AND level = 2`, { a });
      expect(day2).toEqual({ l: 2, d: String(day / 86_400_000) });
      await expect(store.insertRollups([rollup(a, 'bad', { level: 6 as never })])).rejects.toMatchObject({ code: 'storage_invalid_input' });
    });

    it('stores minute packs (level 5): packing finds and reads the minute rows of closed UTC hours; supersededRefs reads their lists', async () => {
      const a = 'acct-mp';
      const hour = Date.UTC(2033, 1, 4, 5);
      const MIN = 60_000;
      // compaction's parts count as finished (no processed marker needed)
      const minutes = [rollup(a, 'c:m1', { level: 0, bucket: hour + 7 * MIN }), rollup(a, 'c:m2', { level: 0, bucket: hour + 59 * MIN })];
      const next = rollup(a, 'c:m3', { level: 0, bucket: hour + HOUR });
      await store.insertRollups([...minutes, next, rollup(a, 'c:h', { level: 1, bucket: hour })]);
      // closed before the next hour: this hour only, as one (account, metric, hour, series, key version)
      expect(await store.daysToPack({ closed: hour + HOUR, limit: 10, level: 0 })).toEqual([{ accountId: a, metric: '1', day: hour, series: '2', keyVersion: 1 }]);
      const todo = await store.daysToPack({ closed: hour + 2 * HOUR, limit: 10, level: 0 });
      expect(todo.map((d) => d.day)).toEqual([hour, hour + HOUR]);
      const pack = rollup(a, 'c:d:mp', { level: 5, bucket: hour, supersedes: minutes.map((r) => slotEntry(LEVEL.minutePack, r.bucket, r.part)) });
      expect(pack.supersedes).toEqual(['7/c:m1', '59/c:m2']);
      await store.insertRollups([pack]);
      // one hour's minute rows and its pack, not the hour row, not the next hour
      expect((await store.rollupsOfDays(todo.slice(0, 1), 0)).map((r) => `${r.level}/${r.part}`).sort()).toEqual(['0/c:m1', '0/c:m2', '5/c:d:mp']);
      // days of several accounts in one read, each row with its own account; another account's row of the same key is not read for this one
      const b = 'acct-mp2';
      await store.insertRollups([rollup(b, 'c:b1', { level: 0, bucket: hour + 7 * MIN })]);
      expect((await store.rollupsOfDays(todo.slice(0, 1), 0)).map((r) => `${r.accountId}/${r.part}`).sort()).toEqual([`${a}/c:d:mp`, `${a}/c:m1`, `${a}/c:m2`]);
      const both = await store.rollupsOfDays([todo[0]!, { ...todo[0]!, accountId: b }], 0);
      expect(both.map((r) => `${r.accountId}/${r.part}`).sort()).toEqual([`${a}/c:d:mp`, `${a}/c:m1`, `${a}/c:m2`, `${b}/c:b1`]);
      const refs = supersededRefs({ ...pack, supersedes: pack.supersedes! });
      expect(refs).toEqual(minutes.map((r) => ({ accountId: a, level: 0, bucket: r.bucket, metric: r.metric, series: r.series, part: r.part })));
      expect((await store.findRollups(refs)).map((r) => r.part).sort()).toEqual(['c:m1', 'c:m2']);
      await store.clearSupersedes([{ accountId: a, level: 5, bucket: hour, metric: pack.metric, series: pack.series, part: pack.part }], { wait: true });
    });

    it("derivation reads an hour's minute, hour and quarter-hour rows of several accounts at once, each row with its own account, never another account's row of the same key", async () => {
      const a = 'acct-dh1';
      const b = 'acct-dh2';
      const hour = Date.UTC(2033, 2, 4, 7);
      const MIN = 60_000;
      // compaction's parts count as finished (no processed marker needed)
      const ofA = [
        rollup(a, 'c:a0', { level: 0, bucket: hour + 3 * MIN }),
        rollup(a, 'c:a1', { level: 0, bucket: hour + 59 * MIN }),
        rollup(a, 'c:ah', { level: 1, bucket: hour }),
        rollup(a, 'c:aq', { level: 3, bucket: hour + 45 * MIN }),
      ];
      const ofB = [rollup(b, 'c:b0', { level: 0, bucket: hour + 3 * MIN }), rollup(b, 'c:bq', { level: 3, bucket: hour })];
      // not of these hours: the next hour, another series, another metric
      const others = [
        rollup(a, 'c:next', { level: 0, bucket: hour + HOUR }),
        rollup(a, 'c:s9', { level: 0, bucket: hour + MIN, series: '9' }),
        rollup(b, 'c:m7', { level: 0, bucket: hour + MIN, metric: '7' }),
      ];
      await store.insertRollups([...ofA, ...ofB, ...others]);
      const todo = await store.hoursToDerive({ from: hour, to: hour + HOUR, limit: 10 });
      expect(todo.map((h) => `${h.accountId}/${h.metric}/${h.hour}/${h.series}`)).toEqual([`${a}/1/${hour}/2`, `${a}/1/${hour}/9`, `${b}/1/${hour}/2`, `${b}/7/${hour}/2`]);
      const key = (r: { accountId: string; level: number; part: string }) => `${r.accountId}/${r.level}/${r.part}`;
      const onlyA = todo.filter((h) => h.accountId === a && h.series === '2');
      expect((await store.rollupsOfHours(onlyA)).map(key).sort()).toEqual(ofA.map(key).sort());
      const bothOfKey = todo.filter((h) => h.series === '2' && h.metric === '1');
      expect(bothOfKey.map((h) => h.accountId)).toEqual([a, b]);
      const read = await store.rollupsOfHours(bothOfKey);
      expect(read.map(key).sort()).toEqual([...ofA, ...ofB].map(key).sort());
      for (const r of read) expect(r.accountId === a ? ofA : ofB).toContainEqual(expect.objectContaining({ part: r.part, level: r.level, bucket: r.bucket }));
    });

    it('answers unqualified table names (the store database is current): orphan rollup parts', async () => {
      const a = 'acct-o';
      const w = Date.UTC(2033, 0, 1);
      await store.insertRollups([rollup(a, 'done', { writtenAt: w }), rollup(a, 'orphan', { writtenAt: w }), rollup(a, 'old', { writtenAt: w - HOUR })]);
      await store.markProcessed([{ accountId: a, batchId: 'o1', processedAt: w, accepted: 1, rejected: 0, part: 'done' }]);
      const orphans = await connectionOf(store).query<{ part: string }>(
        `SELECT DISTINCT part FROM rollups WHERE written_at >= fromUnixTimestamp64Milli({since:Int64})
         AND part NOT IN (SELECT part FROM processed WHERE processed_at >= fromUnixTimestamp64Milli({since:Int64}))`,
        { since: w },
      );
      expect(orphans).toEqual([{ part: 'orphan' }]);
      await connectionOf(store).exec('DELETE FROM rollups WHERE part IN {parts:Array(String)}', { parts: ['orphan'] });
      expect((await store.countAccountRows(a)).rollups).toBe(2);
    });

    it('compaction: finds groups, reads them with markers, deletes and clears exact rows', async () => {
      const a = 'acct-c';
      const w = Date.UTC(2034, 0, 1);
      const h = (n: number) => Date.UTC(2026, 0, 1, n);
      const g1: RollupGroupKey = { accountId: a, level: 1, bucket: h(1), metric: '5', series: U64_MAX };
      const g2 = { ...g1, bucket: h(2) };
      const g3: RollupGroupKey = { ...g1, level: 0, series: '9' };
      const r = (part: string, g: typeof g1, over: Partial<RollupRow> = {}) => rollup(a, part, { ...g, writtenAt: w, ...over });
      // t1 and t2 are finished ticks (markers), t3 is in flight; g3 has one row only.
      await store.insertRollups([
        r('t1', g1, { writtenAt: w - HOUR, expiresAt: FAR - 1 }), r('t2', g1), r('t3', g1),
        r('t1', g2, { writtenAt: w - HOUR }), r('t2', g2),
        r('t1', g3),
        rollup('acct-c2', 't1', { ...g1, accountId: 'acct-c2', writtenAt: w }), rollup('acct-c2', 't2', { ...g1, accountId: 'acct-c2', writtenAt: w }),
      ]);
      await store.markProcessed(['t1', 't2'].map((part, i) => ({ accountId: a, batchId: `c${i}`, processedAt: w, accepted: 1, rejected: 0, part })));

      const all = (await store.rollupGroupsToCompact({ limit: 100 })).filter((g) => g.accountId.startsWith('acct-c'));
      expect(all).toEqual([
        { ...g1, rows: 3 },
        { ...g2, rows: 2 },
        { ...g1, accountId: 'acct-c2', rows: 2 },
      ]);
      // keyset pagination and the written_at window
      expect((await store.rollupGroupsToCompact({ after: all[0], limit: 1 })).map((g) => [g.accountId, g.bucket])).toEqual([[a, h(2)]]);
      const recent = (await store.rollupGroupsToCompact({ since: w, limit: 100 })).filter((g) => g.accountId.startsWith('acct-c'));
      expect(recent.map((g) => [g.accountId, g.bucket])).toEqual([[a, h(1)], [a, h(2)], ['acct-c2', h(1)]]);

      // acct-c2 has no markers: its rows are not marked by acct-c's markers of the same parts.
      const rows = await store.rollupsOfGroups([g1, g2, { ...g1, accountId: 'acct-c2' }], 100);
      expect(rows.map((x) => [x.accountId, x.bucket, x.part, x.marked])).toEqual([
        [a, h(1), 't1', true], [a, h(1), 't2', true], [a, h(1), 't3', false],
        [a, h(2), 't1', true], [a, h(2), 't2', true],
        ['acct-c2', h(1), 't1', false], ['acct-c2', h(1), 't2', false],
      ]);
      expect(rows[0]).toMatchObject({ ...g1, tagKeys: ['3'], tagValues: ['4'], keyVersion: 1, supersedes: [], writtenAt: w - HOUR, expiresAt: FAR - 1 });
      expect((await store.rollupsOfGroups([g1], 2)).map((x) => x.part)).toEqual(['t1', 't2']);

      // A merged row of g1 (sources t1, t2): its group is no candidate while its list is set.
      await store.insertRollups([r('c:x', g1, { supersedes: ['t1', 't2'], agg: ALL_BYTES })]);
      const unfinished = await store.supersedingRollups(10);
      expect(unfinished).toMatchObject([{ ...g1, part: 'c:x', supersedes: ['t1', 't2'], tagKeys: ['3'], tagValues: ['4'], keyVersion: 1 }]);
      expect(hex(unfinished[0]!.agg)).toBe(hex(ALL_BYTES)); // what compaction opens to check the list against the sealed one
      expect((await store.rollupGroupsToCompact({ limit: 100 })).filter((g) => g.accountId === a).map((g) => g.bucket)).toEqual([h(2)]);
      const back = (await store.rollupsOfGroups([g1], 100)).find((x) => x.part === 'c:x');
      expect(back && hex(back.agg)).toBe(hex(ALL_BYTES));

      // Exactly the named rows go: t1 of g1, not t1 of g2 or g3 or of another account.
      const sources = [{ ...g1, part: 't1' }, { ...g1, part: 't2' }];
      expect(await store.findRollups([...sources, { ...g1, part: 'nope' }])).toEqual(sources.map((x) => ({ ...x, supersedes: [] })));
      await store.deleteRollups(sources, { wait: true });
      expect(await store.findRollups(sources)).toEqual([]);
      await store.clearSupersedes([{ ...g1, part: 'c:x' }], { wait: true });
      await store.deleteRollups([]);
      await store.clearSupersedes([]);
      expect(await store.findRollups([])).toEqual([]);
      expect(await store.supersedingRollups(10)).toEqual([]);
      const left = await connectionOf(store).query<{ part: string; b: string; sup: string[] }>(
        `SELECT part, toUnixTimestamp64Milli(bucket) AS b, supersedes AS sup FROM ${table('rollups')} WHERE account_id = {a:String} ORDER BY level, bucket, part`,
        { a },
      );
      expect(left.map((x) => [Number(x.b), x.part, x.sup])).toEqual([[h(1), 't1', []], [h(1), 'c:x', []], [h(1), 't3', []], [h(2), 't1', []], [h(2), 't2', []]]);
      expect((await store.countAccountRows('acct-c2')).rollups).toBe(2);

      // Queued (not waited for): applied in the background.
      await store.insertRollups([r('c:y', g2, { supersedes: ['t1'] })]);
      await store.deleteRollups([{ ...g2, part: 't1' }]);
      await store.clearSupersedes([{ ...g2, part: 'c:y' }]);
      for (let i = 0; (await store.supersedingRollups(10)).length > 0 || (await store.findRollups([{ ...g2, part: 't1' }])).length > 0; i++) {
        expect(i, 'queued mutations applied within 30 s').toBeLessThan(300);
        await new Promise((res) => setTimeout(res, 100));
      }
      await store.deleteRollups([{ ...g2, part: 'c:y' }], { wait: true });
      expect((await store.findRollups([{ ...g2, part: 't2' }])).length).toBe(1);
    });

    it("selects a query's rollup rows by level, range, metric per key version and tag filters (QueryStore)", async () => {
      const a = 'acct-sel';
      const day = Date.UTC(2026, 0, 2);
      const at = (h: number, m = 0) => day + h * HOUR + m * 60_000;
      await store.insertRollups([
        rollup(a, 'm1', { bucket: at(1, 5), tagKeys: ['10'], tagValues: ['7'] }),
        rollup(a, 'm2', { bucket: at(1, 6), tagKeys: ['10'], tagValues: ['8'] }),
        rollup(a, 'm3', { bucket: at(1, 7), tagKeys: ['11'], tagValues: ['9'] }),
        rollup(a, 'm4', { bucket: at(3, 0), metric: '5', keyVersion: 2, tagKeys: ['10'], tagValues: ['7'] }),
        rollup(a, 'm5', { bucket: at(2, 30), tagKeys: ['10'], tagValues: ['7'] }),
        rollup(a, 'h1', { level: 1, bucket: at(2), tagKeys: ['10'], tagValues: ['7'], supersedes: ['x'] }),
        rollup(a, 'h0', { level: 1, bucket: at(0), tagKeys: ['10'], tagValues: ['7'] }),
        rollup(a, 'c:d:1', { level: 2, bucket: day, tagKeys: ['10'], tagValues: ['7'], agg: ALL_BYTES }),
        rollup(a, 'c:d:0', { level: 2, bucket: day - 24 * HOUR, tagKeys: ['10'], tagValues: ['7'] }),
        rollup('acct-sel2', 'o1', { bucket: at(1, 5), tagKeys: ['10'], tagValues: ['7'] }),
      ]);
      const parts = async (sel: Parameters<Store['selectRollups']>[0]) => readStoredRows(await store.selectRollups(sel)).map((r) => r.p).sort();
      const v1 = (filters: { accepted: string[]; missingKey?: string }[] = []) => ({ version: 1, metric: '1', filters });
      const minute = { accountId: a, level: 0 as const, from: at(1), to: at(3), limit: 100 };
      expect(await parts({ ...minute, versions: [v1()] })).toEqual(['m1', 'm2', 'm3', 'm5']);
      expect(await parts({ ...minute, versions: [v1([{ accepted: ['7'] }])] })).toEqual(['m1', 'm5']);
      expect(await parts({ ...minute, versions: [v1([{ accepted: ['7', '8'] }])] })).toEqual(['m1', 'm2', 'm5']);
      expect(await parts({ ...minute, versions: [v1([{ accepted: [] }])] })).toEqual([]);
      expect(await parts({ ...minute, versions: [v1([{ accepted: ['7'], missingKey: '10' }])] })).toEqual(['m1', 'm3', 'm5']);
      expect(await parts({ ...minute, to: at(4), versions: [v1([{ accepted: ['7'] }]), { version: 2, metric: '5', filters: [{ accepted: ['7'] }] }] })).toEqual(['m1', 'm4', 'm5']);
      expect(await parts({ ...minute, limit: 2, versions: [v1()] })).toHaveLength(2);
      // hour level: hour rows of the range, the packs of the days it overlaps, minute rows of the hours asked for
      const hour = { accountId: a, level: 1 as const, from: at(1), to: at(3), limit: 100, versions: [v1()] };
      expect(await parts(hour)).toEqual(['c:d:1', 'h1']);
      expect(await parts({ ...hour, minuteHours: [at(2)] })).toEqual(['c:d:1', 'h1', 'm5']);
      expect(await parts({ ...hour, from: at(0) })).toEqual(['c:d:1', 'h0', 'h1']);
      expect(await parts({ accountId: a, level: 1, from: at(0) - 24 * HOUR, to: at(24), limit: 100 })).toEqual(['c:d:0', 'c:d:1', 'h0', 'h1']);
      const [pack] = readStoredRows(await store.selectRollups({ ...hour, versions: [v1([{ accepted: ['7'] }])] })).filter((r) => r.l === 2);
      // a selection naming its metrics gets no stored metric (its reader opens rows under the selection's); one of every metric does
      expect(pack).toMatchObject({ l: 2, b: day, v: 1, s: '2', k: '10', t: '7', m: '', p: 'c:d:1', u: [] });
      expect(hex(pack!.a)).toBe(hex(ALL_BYTES));
      const everyMetric = readStoredRows(await store.selectRollups({ accountId: a, level: 1, from: at(1), to: at(3), limit: 100 }));
      expect(everyMetric.find((r) => r.p === 'c:d:1')).toMatchObject({ l: 2, s: '2', k: '10', t: '7', m: '1' });
      expect(readStoredRows(await store.selectRollups(hour)).find((r) => r.p === 'h1')?.u).toEqual(['x']);

      // the tag pseudonyms metrics occur with (hour rows and packs since `since`)
      const counts = await store.tagValueCounts({ accountId: a, since: day - 24 * HOUR, listed: 1 });
      expect(counts).toEqual([{ metric: '1', key: '10', distinct: 1, values: ['7'] }]);
      await store.insertRollups([rollup(a, 'h2', { level: 1, bucket: at(5), tagKeys: ['10', '12'], tagValues: ['8', '13'] }), rollup(a, 'h3', { level: 1, bucket: at(5), tagKeys: ['10'], tagValues: ['6'] })]);
      const more = await store.tagValueCounts({ accountId: a, since: day, listed: 1 });
      expect(more.map((c) => [c.metric, c.key, c.distinct, c.values.length]).sort()).toEqual([['1', '10', 3, 2], ['1', '12', 1, 1]]);

      // dictionary entries by pseudonym, of one kind (the newest key version of each, like dictionary())
      await store.insertDictionary([dict(a, 2, '7', 1, Uint8Array.of(1)), dict(a, 2, U64_MAX, 1, NASTY), dict(a, 1, '7', 1, Uint8Array.of(3)), dict('acct-sel2', 2, '7', 1, Uint8Array.of(4))]);
      await store.insertDictionary([dict(a, 2, '7', 2, Uint8Array.of(2))]);
      const entries = await store.dictionaryEntries(a, 2, ['7', U64_MAX, '99']);
      expect(entries.map((e) => [e.pseudonym, e.keyVersion, hex(e.ciphertext)]).sort()).toEqual([['7', 2, '02'], [U64_MAX, 1, hex(NASTY)]].sort());
      expect(entries[0]).toMatchObject({ accountId: a, kind: 2, firstSeen: Date.UTC(2026, 0, 1) });
      expect(await store.dictionaryEntries(a, 2, [])).toEqual([]);
    });

    it('keeps the newest key version of a dictionary entry and filters by kind', async () => {
      const a = 'acct-d';
      await store.insertDictionary([dict(a, 0, U64_MAX, 1, Uint8Array.of(1, 2, 3)), dict(a, 1, '5', 1, NASTY), dict(a, 2, '6', 1, ALL_BYTES)]);
      await store.insertDictionary([dict(a, 0, U64_MAX, 2, Uint8Array.of(9, 9)), dict('acct-d2', 0, '1', 1, Uint8Array.of(1))]);
      const all = await store.dictionary(a);
      expect(all.map((d) => [d.kind, d.pseudonym, d.keyVersion, hex(d.ciphertext)])).toEqual([
        [0, U64_MAX, 2, '0909'],
        [1, '5', 1, hex(NASTY)],
        [2, '6', 1, hex(ALL_BYTES)],
      ]);
      expect(all[0]).toEqual(dict(a, 0, U64_MAX, 2, Uint8Array.of(9, 9)));
      expect((await store.dictionary(a, 2)).map((d) => d.pseudonym)).toEqual(['6']);
      expect(await store.dictionary('acct-nobody')).toEqual([]);
    });

    it('sums rejects per code', async () => {
      const at = Date.UTC(2026, 0, 1, 10, 5);
      await store.addRejects([
        { accountId: 'acct-x', code: 'invalid_point', count: 2, at },
        { accountId: 'acct-x', code: 'invalid_tags', count: 1, at },
        { accountId: 'acct-y', code: 'invalid_point', count: 7, at },
      ]);
      await store.addRejects([
        { accountId: 'acct-x', code: 'invalid_point', count: 3, at: at + 60_000 },
        { accountId: 'acct-x', code: 'invalid_point', count: 4, at: at + 2 * HOUR },
      ]);
      expect(await store.rejects('acct-x')).toEqual({ invalid_point: 9, invalid_tags: 1 });
      expect(await store.rejects('acct-y')).toEqual({ invalid_point: 7 });
      expect(await store.rejects('acct-nobody')).toEqual({});
      await store.addRejects([]);
    });

    it('purges one account from every table and leaves the others', async () => {
      const t = Date.UTC(2020, 0, 1);
      const fill = async (a: string) => {
        await store.putAccount(account(a, 1));
        await store.insertBatches([batch(a, 'x1', t), batch(a, 'x2', t)]);
        await store.markProcessed([{ accountId: a, batchId: 'x1', processedAt: t, accepted: 1, rejected: 0, part: `${a}-1` }]);
        await store.insertRollups([rollup(a, `${a}-1`), rollup(a, `${a}-2`)]);
        await store.insertDictionary([dict(a, 0, '1', 1, Uint8Array.of(1))]);
        await store.addRejects([{ accountId: a, code: 'invalid_value', count: 1, at: t }]);
      };
      await fill('acct-p');
      await fill('acct-q');
      const full = { accounts: 1, batches: 2, processed: 1, rollups: 2, dictionary: 1, rejects: 1 };
      expect(await store.countAccountRows('acct-p')).toEqual(full);
      await store.purgeAccount('acct-p');
      expect(await store.countAccountRows('acct-p')).toEqual({ accounts: 0, batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0 });
      expect(await store.countAccountRows('acct-q')).toEqual(full);
      expect(await store.getAccount('acct-p')).toBeUndefined();
      expect(await store.existingBatches([{ accountId: 'acct-p', batchId: 'x1' }])).toEqual(new Set());
    });

    it('keeps the tombstone through the one purge, counting what it will delete', async () => {
      const t = Date.UTC(2020, 0, 2);
      await store.putAccount(account('acct-s', 1, { readTokenHash: 'cd'.repeat(32) }));
      await store.insertBatches([batch('acct-s', 's1', t)]);
      await store.insertRollups([rollup('acct-s', 's-1')]);
      expect(await store.accountIdByReadTokenHash('cd'.repeat(32))).toBe('acct-s');
      await store.putAccount(account('acct-s', 2, { state: 'shredded', readTokenHash: '', allowedOrigins: [], shreddedAt: t }));
      expect(await store.accountIdByReadTokenHash('cd'.repeat(32))).toBeUndefined(); // the current row has no hash
      const before = (await store.purgeRowCounts(['acct-s', 'acct-none']));
      expect(before.get('acct-s')).toEqual({ accounts: 1, batches: 1, processed: 0, rollups: 1, dictionary: 0, rejects: 0 }); // version 1 only: the tombstone stays
      expect(before.get('acct-none')).toEqual({ accounts: 0, batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0 });
      await store.purgeAccount('acct-s');
      expect((await store.purgeRowCounts(['acct-s'])).get('acct-s')).toEqual({ accounts: 0, batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0 });
      expect(await store.getAccount('acct-s')).toMatchObject({ state: 'shredded', version: 2, readTokenHash: '' });
    });

    it('tells recovery which tick parts never committed, and deletes them by part', async () => {
      const w = Date.UTC(2027, 2, 3, 4, 5);
      await store.insertRollups([
        rollup('acct-rec', 'o-orphan', { writtenAt: w }),
        rollup('acct-rec', 'o-done', { writtenAt: w, series: '7' }),
        rollup('acct-rec', 'c:o-merged', { writtenAt: w, series: '8' }),
      ]);
      await store.markProcessed([{ accountId: 'acct-rec', batchId: 'ob', processedAt: w, accepted: 1, rejected: 0, part: 'o-done' }]);
      expect(await store.partMarkedSince('o-done', w)).toBe(true);
      expect(await store.partMarkedSince('o-done', w + 1)).toBe(false);
      expect(await store.partMarkedSince('o-orphan', 0)).toBe(false);
      const mine = (parts: string[]) => parts.filter((p) => p.startsWith('o-')).sort();
      expect(mine(await store.orphanParts({ since: w - 60_000, writtenBefore: w + 1 }))).toEqual(['o-orphan']);
      expect(mine(await store.orphanParts({ since: w - 60_000, writtenBefore: w }))).toEqual([]); // not old enough yet
      await store.deleteRollupParts(['o-orphan']);
      expect((await store.countAccountRows('acct-rec')).rollups).toBe(2);
    });

    it("fences a stale lease holder: its markers committed after a newer epoch's fence of its partition never count, and recovery finds them (migration 9)", async () => {
      const w = Date.UTC(2031, 3, 4, 5, 6);
      // Accounts by cityHash64 % 7 (a count no other test fences): a and b in one partition, c in another.
      const cands = Array.from({ length: 40 }, (_, i) => `acct-fence-${i}`);
      const parts = await connectionOf(store).query<{ a: string; p: number | string }>('SELECT arrayJoin({x:Array(String)}) AS a, cityHash64(a) % 7 AS p', { x: cands });
      const of = new Map(parts.map((r) => [r.a, Number(r.p)]));
      const a = cands[0]!;
      const p = of.get(a)!;
      const b = cands.find((x) => x !== a && of.get(x) === p)!;
      const c = cands.find((x) => of.get(x) !== p)!;
      const mark = (accountId: string, batchId: string, part: string, epoch?: number) => ({ accountId, batchId, processedAt: w, accepted: 1, rejected: 0, part, ...(epoch === undefined ? {} : { epoch }) });
      await store.insertBatches([a, b, c].flatMap((x) => ['f1', 'f2', 'f3', 'f4', 'f5'].map((id) => batch(x, id, w))));
      await store.insertRollups([
        rollup(a, 'f-old', { writtenAt: w, epoch: 3 }),
        rollup(a, 'f-late', { writtenAt: w, epoch: 3, series: '5' }),
        rollup(a, 'f-new', { writtenAt: w, epoch: 4, series: '6' }),
      ]);
      // Epoch 3 holds the partition: its marker counts.
      await store.markProcessed([mark(a, 'f1', 'f-old', 3)]);
      // Epoch 4 takes over and fences; from now on epoch 3's markers of this partition do not count.
      await store.fencePartition({ partition: { index: p, count: 7 }, epoch: 4, holder: 'host/1/x' });
      await store.markProcessed([
        mark(a, 'f2', 'f-late', 3), // the stale holder, late: a batch still pending
        mark(a, 'f3', 'f-new', 4), // the new holder …
        mark(a, 'f3', 'f-late', 3), // … and the stale one's late marker of the same batch
        mark(b, 'f1', 'f-late-b', 3), // stale too (same partition)
        mark(c, 'f1', 'f-c', 3), // another partition's holder of epoch 3: not fenced
        mark(a, 'f4', 'f-zero'), // epoch 0 (no lease, rows before migration 9): never fenced
      ]);
      const pending = async (x: string) => ids(await store.pendingBatches(w, 10_000), x).sort();
      expect(await pending(a)).toEqual(['f2', 'f5']);
      expect(await pending(b)).toEqual(['f1', 'f2', 'f3', 'f4', 'f5']); // its only marker is stale
      expect(await pending(c)).toEqual(['f2', 'f3', 'f4', 'f5']);
      // Processing's twin check counts the same markers as the poll: a stale one does not.
      const marked = async (x: string) => [...(await store.markedBatches(['f1', 'f2', 'f3', 'f4', 'f5'].map((batchId) => ({ accountId: x, batchId }))))].map((k) => k.slice(x.length + 1)).sort();
      expect(await marked(a)).toEqual(['f1', 'f3', 'f4']);
      expect(await marked(b)).toEqual([]);
      expect(await marked(c)).toEqual(['f1']);
      // Turning confidential mode on deletes the account's processed batches: not one whose only
      // marker is stale (it is still pending, for the new holder to process).
      await store.deleteProcessedBatches(b);
      expect(await pending(b)).toEqual(['f1', 'f2', 'f3', 'f4', 'f5']);
      expect(await store.partMarkedSince('f-old', w)).toBe(true);
      expect(await store.partMarkedSince('f-new', w)).toBe(true);
      expect(await store.partMarkedSince('f-late', w)).toBe(false);
      expect(await store.partMarkedSince('f-c', w)).toBe(true);
      // Recovery: the stale part is an orphan at once (an older epoch than the holder's), the others are not.
      const orphans = async (epochBelow?: number) => (await store.orphanParts({ since: w - 60_000, writtenBefore: w - 1, epochBelow, partition: { index: p, count: 7 } })).filter((x) => x.startsWith('f-')).sort();
      expect(await orphans()).toEqual([]); // not old enough by age
      expect(await orphans(4)).toEqual(['f-late']);
      // A merge never lets the stale marker replace the valid one (epoch is in the sorting key).
      await connectionOf(store).exec(`OPTIMIZE TABLE ${table('processed')} FINAL`);
      const raw = async () =>
        (await connectionOf(store).query<{ k: string }>(`SELECT concat(account_id, '/', batch_id, '/', toString(epoch)) AS k FROM ${table('processed')} FINAL WHERE account_id IN {x:Array(String)} ORDER BY k`, { x: [a, b, c] })).map((r) => r.k);
      expect(await raw()).toEqual([`${a}/f1/3`, `${a}/f2/3`, `${a}/f3/3`, `${a}/f3/4`, `${a}/f4/0`, `${b}/f1/3`, `${c}/f1/3`].sort());
      const stale = await store.fencedMarkers({ since: w - 60_000, partition: { index: p, count: 7 }, limit: 100 });
      const key = (m: { accountId: string; batchId: string; epoch: number }) => `${m.accountId}/${m.batchId}/${m.epoch}`;
      expect(stale.map(key).sort()).toEqual([`${a}/f2/3`, `${a}/f3/3`, `${b}/f1/3`].sort());
      expect(stale.find((m) => m.batchId === 'f2')?.part).toBe('f-late');
      await store.deleteMarkers(stale);
      expect(await raw()).toEqual([`${a}/f1/3`, `${a}/f3/4`, `${a}/f4/0`, `${c}/f1/3`].sort());
      // A fence of another partition count (epochs are one sequence over all leases) fences the old count's holders too.
      const p5 = Number((await connectionOf(store).query<{ p: number | string }>('SELECT cityHash64({a:String}) % 5 AS p', { a }))[0]!.p);
      await store.fencePartition({ partition: { index: p5, count: 5 }, epoch: 6, holder: 'host/2/y' });
      await store.markProcessed([mark(a, 'f5', 'f-new', 4)]);
      expect(await pending(a)).toEqual(['f2', 'f5']);
    });

    it('migration 9 keeps the markers and rows of a database at version 8: they count as before (epoch 0, never fenced)', async () => {
      const conn = connectionOf(store);
      const old = await databaseAt(8);
      try {
        const w = '2031-05-06 07:08:09.000';
        await conn.exec(`INSERT INTO ${old}.batches (account_id, batch_id, received_at, created_at, point_count, sdk, sealed, expires_at) VALUES ('acct-v8', 'b1', '${w}', '${w}', 1, 'js', 'x', '2099-01-01 00:00:00.000'), ('acct-v8', 'b2', '${w}', '${w}', 1, 'js', 'x', '2099-01-01 00:00:00.000')`);
        await conn.exec(`INSERT INTO ${old}.processed (account_id, batch_id, processed_at, accepted, rejected, part) VALUES ('acct-v8', 'b1', '${w}', 1, 0, 'v8-part')`);
        await conn.exec(`INSERT INTO ${old}.rollups (account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, agg, written_at, expires_at) VALUES ('acct-v8', 0, '${w}', 1, 2, [], [], 1, 'v8-part', 'a', '${w}', '2099-01-01 00:00:00.000')`);
        const upgraded = createStore(conn, { database: old });
        expect(await upgraded.migrate()).toEqual({ from: 8, to: SCHEMA_VERSION });
        // A holder takes every account over (epoch 9): the old marker still counts, its part is no orphan.
        await upgraded.fencePartition({ partition: { index: 0, count: 1 }, epoch: 9, holder: 'host/1/z' });
        const t = Date.UTC(2031, 4, 6, 7, 8, 9);
        expect(ids(await upgraded.pendingBatches(t, 100), 'acct-v8')).toEqual(['b2']);
        expect(await upgraded.partMarkedSince('v8-part', t)).toBe(true);
        expect(await upgraded.orphanParts({ since: t - 1, writtenBefore: t + 1, epochBelow: 9 })).toEqual([]);
        expect(await upgraded.fencedMarkers({ since: t - 1, limit: 10 })).toEqual([]);
        const [row] = await conn.query<{ e: number | string; n: number | string }>(`SELECT max(epoch) AS e, count() AS n FROM ${old}.processed`);
        expect([Number(row!.e), Number(row!.n)]).toEqual([0, 1]);
      } finally {
        await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old}`);
      }
    });

    it('migration 10 (column codecs) keeps the rows of a database at version 9, which read as before; new parts are written with ZSTD', async () => {
      const conn = connectionOf(store);
      const old = await databaseAt(9);
      try {
        const w = '2031-05-06 07:08:09.000';
        const before = createStore(conn, { database: old });
        const t = Date.UTC(2031, 4, 6, 7, 8, 9);
        await before.insertBatches([batch('acct-v9', 'b1', t), batch('acct-v9', 'b2', t)]);
        await conn.exec(`INSERT INTO ${old}.processed (account_id, batch_id, processed_at, accepted, rejected, part) VALUES ('acct-v9', 'b1', '${w}', 1, 0, 'v9-part')`);
        await conn.exec(`INSERT INTO ${old}.rollups (account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, agg, written_at, expires_at) VALUES ('acct-v9', 0, '${w}', 1, 2, [3], [4], 1, 'v9-part', 'a', '${w}', '2099-01-01 00:00:00.000')`);
        // (migration 12, run by the same upgrade, materializes a new accounts column: a mutation of
        // its own; migration 15 rewrites rollups, dropping the old table with its mutations)
        const mutations = async () => Number((await conn.query<{ n: number | string }>("SELECT count() AS n FROM system.mutations WHERE database = {db:String} AND table NOT IN ('accounts', 'rollups')", { db: old }))[0]!.n);
        const mutationsBefore = await mutations();
        const upgraded = createStore(conn, { database: old });
        expect(await upgraded.migrate()).toEqual({ from: 9, to: SCHEMA_VERSION });
        expect(await upgraded.migrate()).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION }); // again: nothing to do
        expect(await mutations()).toBe(mutationsBefore); // a codec change rewrites no part (metadata only)
        const codecs = await conn.query<{ t: string; name: string; c: string }>(
          `SELECT table AS t, name, compression_codec AS c FROM system.columns WHERE database = {db:String} AND table IN ('rollups', 'batches', 'processed') ORDER BY t, name`,
          { db: old },
        );
        const codec = (t: string, name: string) => codecs.find((c) => c.t === t && c.name === name)?.c;
        expect([codec('rollups', 'series'), codec('rollups', 'tag_values'), codec('batches', 'batch_id'), codec('processed', 'part')]).toEqual(Array(4).fill('CODEC(ZSTD(1))'));
        expect([codec('rollups', 'bucket'), codec('batches', 'received_at')]).toEqual(['CODEC(Delta(8), ZSTD(1))', 'CODEC(Delta(8), ZSTD(1))']);
        expect([codec('rollups', 'agg'), codec('batches', 'sealed'), codec('processed', 'committed_at')]).toEqual(['CODEC(NONE)', 'CODEC(NONE)', '']);
        // rows from before read as before, beside rows written after
        await upgraded.insertBatches([batch('acct-v9', 'b3', t)]);
        expect(ids(await upgraded.pendingBatches(t, 100), 'acct-v9')).toEqual(['b2', 'b3']);
        expect(await upgraded.partMarkedSince('v9-part', t)).toBe(true);
        const [row] = await conn.query<{ s: string; tv: string[]; a: string; n: number | string }>(
          `SELECT toString(series) AS s, arrayMap(x -> toString(x), tag_values) AS tv, agg AS a, count() OVER () AS n FROM ${old}.rollups`,
        );
        expect(row).toEqual({ s: '2', tv: ['4'], a: 'a', n: expect.anything() });
        expect(Number(row!.n)).toBe(1);
      } finally {
        await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old}`);
      }
    });

    it('migration 12 stamps each account row with storage\'s clock (changed_at); rows of a database at version 11 get their updated_at, and accountChanges reads rows by it', async () => {
      const conn = connectionOf(store);
      const old = await databaseAt(11);
      try {
        const w = '2021-05-06 07:08:09.000';
        await conn.exec(`INSERT INTO ${old}.accounts (account_id, version, state, created_at, updated_at, read_token_hash, allowed_origins, retention_days, confidential) VALUES ('acct-v11', 1, 'active', '${w}', '${w}', 'h', [], 30, false)`);
        const upgraded = createStore(conn, { database: old });
        expect(await upgraded.migrate()).toEqual({ from: 11, to: SCHEMA_VERSION });
        const { now } = await upgraded.accountChanges();
        expect(Math.abs(now! - Date.now())).toBeLessThan(60_000); // storage's clock (the same machine here)
        const t = Date.UTC(2021, 4, 6, 7, 8, 9);
        // The old row: its update time, never "now" on every read.
        expect((await upgraded.accountChanges(t)).rows.map((r) => [r.row.accountId, r.changedAt])).toEqual([['acct-v11', t]]);
        expect((await upgraded.accountChanges(t + 1)).rows).toEqual([]);
        // A row written now (whatever its updated_at says): stamped by storage when written.
        await upgraded.putAccount(account('acct-v12', 1));
        const changed = await upgraded.accountChanges(now! - 1000);
        expect(changed.rows.map((r) => r.row)).toEqual([account('acct-v12', 1)]);
        expect(changed.rows[0]!.changedAt).toBeGreaterThanOrEqual(now! - 1000);
        expect(changed.now).toBeGreaterThanOrEqual(changed.rows[0]!.changedAt);
        expect((await upgraded.accountChanges(t + 1)).rows.map((r) => r.row.accountId)).toEqual(['acct-v12']);
      } finally {
        await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old}`);
      }
    });

    it('drops expired rows by TTL', async () => {
      const t = Date.UTC(2019, 0, 1);
      await store.insertBatches([{ ...batch('acct-ttl', 'old', t), expiresAt: t + 1 }, batch('acct-ttl', 'new', t)]);
      await connectionOf(store).exec(`OPTIMIZE TABLE ${table('batches')} FINAL`);
      expect(ids(await store.pendingBatches(t, 1000), 'acct-ttl')).toEqual(['new']);
    });

    it('binds every parameter type server side', async () => {
      const s = "it's a \\ back\tslash\nnewline ' OR 1=1 --";
      const [row] = await connectionOf(store).query(
        'SELECT {s:String} AS s, {n:Nullable(String)} AS n, {a:Array(String)} AS a, {b:Bool} AS b, {i:Int64} AS i, {u:UInt64} AS u, {f:Float64} AS f',
        { s, n: null, a: [s, ''], b: true, i: -5, u: U64_MAX, f: 1.5 },
      );
      expect(row).toEqual({ s, n: null, a: [s, ''], b: true, i: '-5', u: U64_MAX, f: 1.5 });
      await connectionOf(store).exec('SELECT {x:UInt8}', { x: 1 });
    });

    it('migration 15 rewrites rollups with 256 KiB granules: every row of a database at version 14 reads as before, also when an upgrade interrupted after any of its statements runs again (on a server, where only a table without rows is rewritten: before the swap, once the unfinished copy is dropped)', async () => {
      const conn = connectionOf(store);
      const old = `${table('processed').split('.')[0]}_v14`;
      const m15 = renderMigrations({ database: old }).find((m) => m.version === 15)!;
      // a server rewrites only a table without rows (the next test: one with rows keeps its layout)
      const withRows = store.kind === 'chdb';
      for (let done = 0; done <= m15.statements.length; done++) {
        await databaseAt(14);
        try {
          const before = createStore(conn, { database: old });
          // two months (partitions), ~1 MB of sealed aggregates (several granules of 256 KiB), lists
          const rows = Array.from({ length: 400 }, (_, i) =>
            rollup('acct-v14', `v14-${i}`, { level: ([0, 1, 2] as const)[i % 3], bucket: Date.UTC(2026, i % 2, 1 + (i % 28), i % 24), series: String(i % 7), agg: randomBytes(2000 + i), supersedes: i % 5 ? [] : [`c:${i}`, NASTY.toString()] }),
          );
          if (withRows) await before.insertRollups(rows.slice(0, 200));
          if (withRows) await before.insertRollups(rows.slice(200));
          const sum = async () =>
            (await conn.query<{ n: string; h: string }>(
              `SELECT toString(count()) AS n, toString(sum(cityHash64(account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, supersedes, agg, written_at, expires_at, epoch))) AS h FROM ${old}.rollups`,
            ))[0];
          const stored = await sum();
          expect(stored!.n).toBe(withRows ? '400' : '0');
          // interrupted after `done` statements (the version not recorded), then the upgrade runs again
          for (const sql of m15.statements.slice(0, done)) await conn.exec(sql);
          const upgraded = createStore(conn, { database: old });
          if (store.kind === 'remote' && done > 0 && done < 3) {
            // before the swap, on a server: the copy is the claim of a node migrating now, or left by an interrupted one
            await expect(upgraded.migrate()).rejects.toMatchObject({ code: 'storage_query_failed', message: expect.stringContaining(`${old}.rollups_v15 exists: another node is rewriting the rollups table`) });
            expect(await sum()).toEqual(stored);
            await conn.exec(`DROP TABLE ${old}.rollups_v15 SYNC`); // what the message tells an operator to do once no node migrates
          }
          expect(await upgraded.migrate()).toEqual({ from: 14, to: SCHEMA_VERSION });
          expect(await sum()).toEqual(stored);
          const tables = await conn.query<{ name: string; e: string }>(`SELECT name, engine_full AS e FROM system.tables WHERE database = {db:String} AND name LIKE 'rollups%'`, { db: old });
          expect(tables.map((t) => t.name)).toEqual(['rollups']);
          expect(tables[0]!.e).toContain('index_granularity_bytes = 262144');
          // granules of at most 256 KiB: ~120 rows of ~2.2 KB (10 MiB granules held each part's 200 rows in one)
          const [g] = await conn.query<{ rows: number | string; granules: number | string }>(
            `SELECT sum(rows) AS rows, sum(marks) - count() AS granules FROM system.parts WHERE database = {db:String} AND table = 'rollups' AND active`,
            { db: old },
          );
          if (withRows) expect(Number(g!.rows) / Number(g!.granules)).toBeLessThan(130);
          // the rewritten table takes rows and answers as before
          await upgraded.insertRollups([rollup('acct-v14', 'v15-after', { bucket: Date.UTC(2026, 0, 3) })]);
          expect(Number((await sum())!.n)).toBe(withRows ? 401 : 1);
        } finally {
          await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old} SYNC`);
        }
      }
    });

    it('migration 15 run by two nodes at once: one rewrites, the other finds it done or refuses with the reason; no row lost or doubled', async () => {
      const conn = connectionOf(store);
      const old = `${table('processed').split('.')[0]}_v14`;
      await databaseAt(14);
      try {
        // rows on chDB; a server rewrites only a table without rows
        const n = store.kind === 'chdb' ? 300 : 0;
        if (n) await createStore(conn, { database: old }).insertRollups(Array.from({ length: n }, (_, i) => rollup('acct-v14b', `v14b-${i}`, { bucket: Date.UTC(2026, i % 2, 2, i % 24), agg: randomBytes(1500) })));
        const count = async () => Number((await conn.query<{ n: number | string }>(`SELECT count() AS n FROM ${old}.rollups`))[0]!.n);
        const results = await Promise.allSettled([createStore(conn, { database: old }).migrate(), createStore(conn, { database: old }).migrate()]);
        expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
        for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ name: 'StorageError' });
        expect(await createStore(conn, { database: old }).migrate()).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
        expect(await count()).toBe(n);
        const tables = await conn.query<{ name: string; e: string }>(`SELECT name, engine_full AS e FROM system.tables WHERE database = {db:String} AND name LIKE 'rollups%'`, { db: old });
        expect(tables.map((t) => t.name)).toEqual(['rollups']);
        expect(tables[0]!.e).toContain('index_granularity_bytes = 262144');
      } finally {
        await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old} SYNC`);
      }
    });

    it('migration 15 on a table that holds rows: chDB rewrites it, never dropping a copy while the table is missing; a server keeps the table as it is (no copy, every row, 10 MiB granules) until an operator runs the four statements by hand (every row, 256 KiB granules, nothing left to migrate)', async () => {
      const conn = connectionOf(store);
      const old = `${table('processed').split('.')[0]}_v14`;
      const hash = async () =>
        (await conn.query<{ n: string; h: string }>(`SELECT toString(count()) AS n, toString(sum(cityHash64(part, agg, supersedes))) AS h FROM ${old}.rollups`))[0];
      const tables = async () => conn.query<{ name: string; e: string }>(`SELECT name, engine_full AS e FROM system.tables WHERE database = {db:String} AND name LIKE 'rollups%' ORDER BY name`, { db: old });
      const m15 = renderMigrations({ database: old }).find((m) => m.version === 15)!;
      await databaseAt(14);
      try {
        await createStore(conn, { database: old }).insertRollups(Array.from({ length: 50 }, (_, i) => rollup('acct-v14c', `v14c-${i}`, { bucket: Date.UTC(2026, 0, 2, i % 24), agg: randomBytes(900), supersedes: i % 4 ? [] : [`c:${i}`] })));
        const stored = await hash();
        if (store.kind === 'chdb') {
          // a swap torn by a crash: only the copy is attached; it is refused, not dropped
          await conn.exec(m15.statements[0]!);
          await conn.exec(m15.statements[1]!);
          await conn.exec(`RENAME TABLE ${old}.rollups TO ${old}.rollups_torn`);
          await expect(createStore(conn, { database: old }).migrate()).rejects.toMatchObject({ code: 'storage_query_failed', message: expect.stringContaining('Do not drop') });
          expect((await tables()).map((t) => t.name)).toEqual(['rollups_torn', 'rollups_v15']);
          await conn.exec(`RENAME TABLE ${old}.rollups_v15 TO ${old}.rollups`); // what the message says
          await conn.exec(`DROP TABLE ${old}.rollups_torn SYNC`);
        }
        expect(await createStore(conn, { database: old }).migrate()).toEqual({ from: 14, to: SCHEMA_VERSION });
        expect(await hash()).toEqual(stored);
        const after = await tables();
        expect(after.map((t) => t.name)).toEqual(['rollups']);
        if (store.kind === 'chdb') expect(after[0]!.e).toContain('index_granularity_bytes = 262144');
        else {
          expect(after[0]!.e).not.toContain('index_granularity_bytes');
          // README "Upgrading": with every node stopped, an operator runs the four statements of
          // migration 15 by hand; every row reads the same, the table has the small granules, and
          // a node starting afterwards finds nothing left to do
          for (const sql of m15.statements) await conn.exec(sql);
          expect(await hash()).toEqual(stored);
          const rewritten = await tables();
          expect(rewritten.map((t) => t.name)).toEqual(['rollups']);
          expect(rewritten[0]!.e).toContain('index_granularity_bytes = 262144');
          expect(await createStore(conn, { database: old }).migrate()).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
          expect(await hash()).toEqual(stored);
        }
      } finally {
        await conn.execOutsideDatabase(`DROP DATABASE IF EXISTS ${old} SYNC`);
      }
    });

    it('reads RowBinary through queryBinary with bound params, byte-exact and zero-copy', async () => {
      const u64s = [U64_MAX, '9007199254740993', '0'];
      const times = [Date.UTC(2026, 0, 1, 12, 0, 0, 123), Date.UTC(1950, 5, 6, 7, 8, 9, 10), 0];
      const text = 'ünïcødé ✓ \t\n';
      const sql = `SELECT toUInt8(number + 250) AS u8, toUInt32({u32:UInt32} - number) AS u32,
          arrayMap(x -> toUInt64(x), {u64s:Array(String)})[number + 1] AS u64, {f:Float64} / (number + 1) AS f,
          fromUnixTimestamp64Milli({ts:Array(Int64)}[number + 1], 'UTC') AS t,
          [unhex({h:String}), '', {u:String}][number + 1] AS s, arrayPushBack(range(number), {big:UInt64}) AS arr
        FROM numbers(3) ORDER BY number`;
      const params = { u32: 4_294_967_295, u64s, f: Math.PI, ts: times, h: hex(ALL_BYTES), u: text, big: U64_MAX };
      const out = await connectionOf(store).queryBinary(sql, params);
      expect(out).toBeInstanceOf(Uint8Array);
      const r = new RowBinaryReader(out);
      const rows = [];
      while (!r.done) {
        const row = { u8: r.u8(), u32: r.u32(), u64: r.u64(), f: r.f64(), t: r.dateTime64ms(), s: r.bytes(), arr: [] as string[] };
        for (let n = r.arrayLength(); n > 0; n--) row.arr.push(r.u64());
        rows.push(row);
      }
      expect(r.remaining).toBe(0);
      expect(rows.map(({ s, ...x }) => x)).toEqual([0, 1, 2].map((i) => ({
        u8: 250 + i,
        u32: 4_294_967_295 - i,
        u64: u64s[i],
        f: Math.PI / (i + 1),
        t: times[i],
        arr: [...Array.from({ length: i }, (_, k) => String(k)), U64_MAX],
      })));
      expect(rows.map((x) => hex(x.s))).toEqual([hex(ALL_BYTES), '', hex(Buffer.from(text))]);
      expect(rows[0]?.s.buffer).toBe(out.buffer);
      // The same SQL through query() agrees (64-bit integers as strings there).
      const json = await connectionOf(store).query<{ u64: string; arr: string[]; t: string }>(sql, params);
      expect(json.map((x) => [x.u64, x.arr])).toEqual(rows.map((x) => [x.u64, x.arr]));

      // A string column as text, and a table read.
      const a = 'acct-rb';
      await store.insertRollups([rollup(a, 'rb1', { agg: ALL_BYTES, tagValues: [U64_MAX] }), rollup(a, 'rb2', { agg: NASTY })]);
      const tr = new RowBinaryReader(await connectionOf(store).queryBinary('SELECT part, agg, tag_values FROM rollups WHERE account_id = {a:String} ORDER BY part', { a }));
      const got = [];
      while (!tr.done) got.push({ part: tr.string(), agg: hex(tr.bytes()), tv: Array.from({ length: tr.arrayLength() }, () => tr.u64()) });
      expect(got).toEqual([{ part: 'rb1', agg: hex(ALL_BYTES), tv: [U64_MAX] }, { part: 'rb2', agg: hex(NASTY), tv: ['4'] }]);

      expect((await connectionOf(store).queryBinary('SELECT 1 WHERE 0')).length).toBe(0);
      expect((await connectionOf(store).queryBinary('SELECT number FROM numbers(10) WHERE number > {n:UInt64}', { n: 100 })).length).toBe(0);
    });

    it('throws the same StorageError from queryBinary as from query for a bad query', async () => {
      for (const sql of ['SELEC 1', `SELECT * FROM ${table('batches').split('.')[0]}.nope`, 'SELECT {x:UInt8}']) {
        const want = await connectionOf(store).query(sql).then(() => undefined, (e: unknown) => e);
        const got = await connectionOf(store).queryBinary(sql).then(() => undefined, (e: unknown) => e);
        expect(want).toMatchObject({ name: 'StorageError', code: 'storage_query_failed' });
        expect(got).toMatchObject({ name: 'StorageError', code: (want as { code: string }).code, clickhouseCode: (want as { clickhouseCode: number }).clickhouseCode });
      }
    });

    it('throws StorageError with the engine code for a bad query', async () => {
      await expect(connectionOf(store).query('SELEC 1')).rejects.toMatchObject({ name: 'StorageError', code: 'storage_query_failed', clickhouseCode: 62 });
      await expect(connectionOf(store).query(`SELECT * FROM ${table('batches').split('.')[0]}.nope`)).rejects.toMatchObject({ code: 'storage_query_failed', clickhouseCode: 60 });
      await expect(connectionOf(store).exec('DROP TABLE nowhere.nothing')).rejects.toMatchObject({ code: 'storage_query_failed' });
      await expect(store.putAccount(account('acct-bad', 1, { createdAt: Number.NaN }))).rejects.toMatchObject({ code: 'storage_invalid_input' });
    });

    it('pings, refuses after close, and keeps its data across a reopen', async () => {
      await store.ping();
      await store.close();
      await expect(store.ping()).rejects.toMatchObject({ name: 'StorageError', code: 'storage_unavailable' });
      await expect(store.getAccount('acct-v')).rejects.toMatchObject({ code: 'storage_unavailable' });
      await expect(connectionOf(store).queryBinary('SELECT 1')).rejects.toMatchObject({ name: 'StorageError', code: 'storage_unavailable' });
      await store.close(); // idempotent
      store = await factory.open();
      expect(await store.migrate()).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION });
      expect((await store.getAccount('acct-v'))?.version).toBe(3);
      expect((await store.pendingBatches(Date.UTC(2031, 0, 1), 10)).map((b) => hex(b.sealed))[0]).toBe(hex(ALL_BYTES));
    });
  });
}
