/**
 * An account's rows across tables, for the lifecycle: counts, the one purge after a shred,
 * the deletes of a wipe, confidential mode and retention, and the ciphertext sample `verify`
 * tries every remaining key on. Deletes are `ALTER … DELETE` mutations waited for on every
 * replica (mutations_sync = 2): they rewrite the parts holding the rows, so the bytes leave
 * the disk, not only the results.
 */
import { ACCOUNT_TABLES, ACCOUNT_TABLES as PURGE_TABLES, REPLACING_TABLES } from './schema.js';
import type { LifecycleStore, PurgeTable, RollupLevel } from './types.js';
import { at, fromBase64, num, type Db } from './sql.js';

/**
 * Which rows of a table the purge deletes: all of the account's, except in `accounts` its
 * tombstone (state shredded, no read-token hash: see Accounts.tombstone).
 */
const PURGE_WHERE: Record<PurgeTable, string> = {
  batches: 'account_id = {id:String}',
  processed: 'account_id = {id:String}',
  rollups: 'account_id = {id:String}',
  dictionary: 'account_id = {id:String}',
  rejects: 'account_id = {id:String}',
  accounts: "account_id = {id:String} AND (state != 'shredded' OR read_token_hash != '')",
};

const zero = (): Record<PurgeTable, number> => ({ batches: 0, processed: 0, rollups: 0, dictionary: 0, rejects: 0, accounts: 0 });

export function lifecycleRepository(db: Db): LifecycleStore {
  const mutate = (sql: string, params: Record<string, string | number>) => db.conn.exec(`${sql} SETTINGS mutations_sync = 2`, params);
  return {
    async countAccountRows(accountId) {
      const rows = await db.conn.query<{ table: string; n: string }>(
        ACCOUNT_TABLES.map(
          (name) =>
            `SELECT '${name}' AS table, count() AS n FROM ${db.t(name)}${REPLACING_TABLES.has(name) ? ' FINAL' : ''} WHERE account_id = {id:String}`,
        ).join('\nUNION ALL '),
        { id: accountId },
      );
      const counts: Record<string, number> = Object.fromEntries(ACCOUNT_TABLES.map((name) => [name, 0]));
      for (const r of rows) counts[r.table] = num(r.n);
      return counts;
    },

    async purgeRowCounts(accountIds) {
      const out = new Map<string, Record<PurgeTable, number>>();
      for (const id of accountIds) out.set(id, zero());
      for (const ids of db.chunks(accountIds, (id) => id)) {
        const rows = await db.conn.query<{ t: string; a: string; n: string }>(
          PURGE_TABLES.map(
            (t) =>
              `SELECT '${t}' AS t, account_id AS a, count() AS n FROM ${db.t(t)} WHERE ${PURGE_WHERE[t].replace('account_id = {id:String}', 'account_id IN {ids:Array(String)}')} GROUP BY account_id`,
          ).join('\nUNION ALL '),
          { ids },
        );
        for (const r of rows) {
          const counts = out.get(r.a);
          if (counts) counts[r.t as PurgeTable] = num(r.n);
        }
      }
      return out;
    },

    async purgeAccount(accountId, tables = PURGE_TABLES) {
      for (const table of tables) await mutate(`ALTER TABLE ${db.t(table)} DELETE WHERE ${PURGE_WHERE[table]}`, { id: accountId });
    },

    async deleteBeforeWipe(accountId, keyVersion, receivedUpTo) {
      const params = { id: accountId, v: keyVersion, t: receivedUpTo };
      const batches = `account_id = {id:String} AND received_at <= ${at('t')}`;
      const older = 'account_id = {id:String} AND key_version < {v:UInt32}';
      const [counts] = await db.conn.query<{ b: string; r: string; d: string }>(
        `SELECT
           (SELECT count() FROM ${db.t('batches')} WHERE ${batches}) AS b,
           (SELECT count() FROM ${db.t('rollups')} WHERE ${older}) AS r,
           (SELECT count() FROM ${db.t('dictionary')} WHERE ${older}) AS d`,
        params,
      );
      const deleted = { batches: num(counts?.b ?? 0), rollups: num(counts?.r ?? 0), dictionary: num(counts?.d ?? 0) };
      if (deleted.batches) await mutate(`ALTER TABLE ${db.t('batches')} DELETE WHERE ${batches}`, params);
      if (deleted.rollups) await mutate(`ALTER TABLE ${db.t('rollups')} DELETE WHERE ${older}`, params);
      if (deleted.dictionary) await mutate(`ALTER TABLE ${db.t('dictionary')} DELETE WHERE ${older}`, params);
      return deleted;
    },

    async deleteExpired(now) {
      const deleted = { batches: 0, rollups: 0 };
      for (const table of ['batches', 'rollups'] as const) {
        const [r] = await db.conn.query<{ n: string }>(`SELECT count() AS n FROM ${db.t(table)} WHERE expires_at < ${at('t')}`, { t: now });
        deleted[table] = num(r?.n ?? 0);
        if (deleted[table]) await mutate(`ALTER TABLE ${db.t(table)} DELETE WHERE expires_at < ${at('t')}`, { t: now });
      }
      return deleted;
    },

    async ciphertextSample(accountId, { rows, batches }) {
      const [rollups, dictionary, sealed] = await Promise.all([
        db.conn.query<{ l: number; b: string; m: string; s: string; k: string[]; t: string[]; c: string; v: number; p: string }>(
          `SELECT level AS l, toString(toUnixTimestamp64Milli(bucket)) AS b, toString(metric) AS m, toString(series) AS s, key_version AS v, part AS p,
             arrayMap(x -> toString(x), tag_keys) AS k, arrayMap(x -> toString(x), tag_values) AS t, base64Encode(agg) AS c
           FROM ${db.t('rollups')} WHERE account_id = {id:String} LIMIT {n:UInt32}`,
          { id: accountId, n: rows },
        ),
        db.conn.query<{ kind: number; p: string; c: string }>(
          `SELECT kind, toString(pseudonym) AS p, base64Encode(ciphertext) AS c FROM ${db.t('dictionary')} WHERE account_id = {id:String} LIMIT {n:UInt32}`,
          { id: accountId, n: rows },
        ),
        db.conn.query<{ c: string }>(`SELECT base64Encode(sealed) AS c FROM ${db.t('batches')} WHERE account_id = {id:String} LIMIT {n:UInt32}`, { id: accountId, n: batches }),
      ]);
      return {
        rollups: rollups.map((r) => ({
          accountId, level: num(r.l) as RollupLevel, bucket: num(r.b), metric: r.m, series: r.s, tagKeys: r.k, tagValues: r.t, keyVersion: num(r.v), part: r.p, agg: fromBase64(r.c),
        })),
        dictionary: dictionary.map((r) => ({ kind: num(r.kind) as 0 | 1 | 2, pseudonym: r.p, ciphertext: fromBase64(r.c) })),
        batches: sealed.map((r) => fromBase64(r.c)),
      };
    },
  };
}
