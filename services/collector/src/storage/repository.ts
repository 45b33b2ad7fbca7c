/**
 * The Store on top of a Connection: schema migrations and the repositories per concern
 * (accounts.ts, batches.ts, rollups.ts, dictionary.ts, lifecycle.ts). All SQL of both adapters
 * lives in this folder. Reads: ReplacingMergeTree tables with FINAL, times as epoch ms, binary
 * as base64.
 */
import type { Connection } from './connection.js';
import { MIGRATIONS_TABLE, SCHEMA_VERSION, bootstrapSql, renderMigrations, type RewriteRerun, type SchemaOptions } from './schema.js';
import { time, uint } from './tsv.js';
import type { Store } from './types.js';
import { createDb, num } from './sql.js';
import { StorageError } from './errors.js';
import { accountRepository } from './accounts.js';
import { batchRepository } from './batches.js';
import { rollupRepository } from './rollups.js';
import { dictionaryRepository } from './dictionary.js';
import { lifecycleRepository } from './lifecycle.js';
import { queryRepository } from './queries.js';
import { fenceRepository } from './fences.js';

export { LIST_PARAM_BYTES, chunkList } from './sql.js';

/**
 * Where a store keeps its connection: a registered symbol, so a store made by another copy of
 * this module (the compiled files in dist/ beside the sources in tests) answers too.
 */
const CONNECTION = Symbol.for('@cipherstat/collector.storage.connection');

/**
 * The raw connection under a store (its database current), for tests that inspect or tamper
 * with stored rows and for bench tools; collector code outside storage/ never uses it.
 */
export function connectionOf(store: Store): Connection {
  const conn = (store as Store & { [CONNECTION]?: Connection })[CONNECTION];
  if (!conn) throw new Error('not a store opened by openStore/createStore');
  return conn;
}

export function createStore(conn: Connection, opts: SchemaOptions): Store {
  const db = createDb(conn, opts.database);
  const { t, insert } = db;

  /** A migration that rewrites a table (schema.ts, Migration.rerun). */
  const rewrite = async ([claim, ...rest]: string[], rerun: RewriteRerun): Promise<void> => {
    const yes = async (sql: string) => num((await conn.query<{ done: number | string }>(sql))[0]?.done ?? 0) === 1;
    const finish = async () => {
      for (const sql of rerun.finish) await conn.exec(sql);
    };
    if (await yes(rerun.done)) return finish();
    if (conn.kind === 'chdb') {
      // One process opens a chDB data directory: a copy left here is an interrupted run's, dropped
      // to start over — never while the table it copies is missing (a swap torn by a crash: the
      // copy may be the only whole table).
      if (!(await yes(rerun.source))) throw new StorageError('storage_query_failed', rerun.torn);
      await finish();
    } else if (!(await yes(rerun.empty))) {
      // A server's table that holds rows keeps its layout: nothing here can prove that no other
      // node writes into it while it is copied (README "Upgrading", the offline rewrite).
      return;
    }
    try {
      await conn.exec(claim!);
    } catch (e) {
      // 57 TABLE_ALREADY_EXISTS
      if (e instanceof StorageError && e.clickhouseCode === 57) throw new StorageError('storage_query_failed', rerun.busy, 57, { cause: e });
      throw e;
    }
    // On a server, a node that migrated at the same time may have swapped and dropped its copy
    // (which freed the name this claim took) and be writing rows: then this copy is not needed.
    if (conn.kind === 'remote' && ((await yes(rerun.done)) || !(await yes(rerun.empty)))) return finish();
    for (const sql of rest) await conn.exec(sql);
  };

  const store: Store = {
    kind: conn.kind,

    async migrate() {
      const boot = bootstrapSql(opts);
      await conn.execOutsideDatabase(boot.createDatabase);
      await conn.exec(boot.createMigrationsTable);
      const [row] = await conn.query<{ v: number }>(`SELECT max(version) AS v FROM ${t(MIGRATIONS_TABLE)}`);
      const from = num(row?.v ?? 0);
      for (const m of renderMigrations(opts)) {
        if (m.version <= from) continue;
        if (m.rerun) await rewrite(m.statements, m.rerun);
        else for (const sql of m.statements) await conn.exec(sql);
        await insert(MIGRATIONS_TABLE, ['version', 'applied_at'], [m.version], (v) => [uint(v), time(Date.now())]);
      }
      return { from, to: Math.max(from, SCHEMA_VERSION) };
    },

    async schemaVersion() {
      const [row] = await conn.query<{ v: number }>(`SELECT max(version) AS v FROM ${t(MIGRATIONS_TABLE)}`);
      return num(row?.v ?? 0);
    },

    async ping() {
      await conn.query('SELECT 1 AS ok');
    },

    close: () => conn.close(),
    withDeadline: (ms) => createStore(conn.withDeadline(ms), opts),
    urgent: () => createStore(conn.urgent(), opts),
    callStats: () => conn.callStats(),
    ...accountRepository(db),
    ...batchRepository(db),
    ...rollupRepository(db),
    ...dictionaryRepository(db),
    ...lifecycleRepository(db),
    ...queryRepository(db),
    ...fenceRepository(db),

    async tables() {
      const rows = await conn.query<{ name: string }>(`SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name`, { db: opts.database });
      return rows.map((r) => t(r.name));
    },
  };
  Object.defineProperty(store, CONNECTION, { value: conn }); // not enumerable: `{ ...store }` is a Store without it
  return store;
}

