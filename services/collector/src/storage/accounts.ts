/** Accounts: the account rows (settings, state, read-token hash) and per-account refusal counts. */
import { bool, nullable, str, strArray, time, uint } from './tsv.js';
import type { AccountRow, AccountState, AccountStore } from './types.js';
import { at, ms, num, numOrNull, type Db, type Raw } from './sql.js';

const ACCOUNT_COLUMNS = [
  'account_id', 'version', 'state', 'created_at', 'updated_at', 'deactivated_at', 'shred_after', 'shredded_at',
  'read_token_hash', 'allowed_origins', 'retention_days', 'confidential', 'name',
] as const;
const ACCOUNT_SELECT = `account_id AS accountId, version, state, ${ms('created_at', 'createdAt')}, ${ms('updated_at', 'updatedAt')},
  ${ms('deactivated_at', 'deactivatedAt')}, ${ms('shred_after', 'shredAfter')}, ${ms('shredded_at', 'shreddedAt')},
  read_token_hash AS readTokenHash, allowed_origins AS allowedOrigins, retention_days AS retentionDays, confidential, name`;

function toAccount(r: Raw): AccountRow {
  return {
    accountId: String(r.accountId),
    version: num(r.version),
    state: String(r.state) as AccountState,
    createdAt: num(r.createdAt),
    updatedAt: num(r.updatedAt),
    deactivatedAt: numOrNull(r.deactivatedAt),
    shredAfter: numOrNull(r.shredAfter),
    shreddedAt: numOrNull(r.shreddedAt),
    readTokenHash: String(r.readTokenHash),
    allowedOrigins: r.allowedOrigins as string[],
    retentionDays: num(r.retentionDays),
    confidential: r.confidential === true,
    name: String(r.name ?? ''),
  };
}

const REJECT_COLUMNS = ['account_id', 'code', 'at', 'count'] as const;

export function accountRepository(db: Db): AccountStore {
  return {
    putAccount: (r) =>
      db.insert('accounts', ACCOUNT_COLUMNS, [r], (r) => [
        str(r.accountId), uint(r.version, Number.MAX_SAFE_INTEGER), str(r.state), time(r.createdAt), time(r.updatedAt),
        nullable(r.deactivatedAt, time), nullable(r.shredAfter, time), nullable(r.shreddedAt, time),
        str(r.readTokenHash), strArray(r.allowedOrigins), uint(r.retentionDays), bool(r.confidential), str(r.name ?? ''),
      ]),

    async getAccount(accountId) {
      const rows = await db.conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${db.t('accounts')} FINAL WHERE account_id = {id:String}`, { id: accountId });
      return rows[0] && toAccount(rows[0]);
    },

    async getAccounts(accountIds) {
      const out: AccountRow[] = [];
      for (const part of db.chunks(accountIds, (id) => id)) {
        const rows = await db.conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${db.t('accounts')} FINAL WHERE account_id IN {ids:Array(String)}`, { ids: part });
        for (const r of rows) out.push(toAccount(r));
      }
      return out;
    },

    async listAccounts() {
      return (await db.conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${db.t('accounts')} FINAL ORDER BY account_id`)).map(toAccount);
    },

    async someAccounts(limit) {
      // FINAL: each account's current row; one scan of a small table, bounded by the limit.
      return (await db.conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${db.t('accounts')} FINAL ORDER BY changed_at DESC LIMIT {n:UInt32}`, { n: limit })).map(toAccount);
    },

    async accountIdByReadTokenHash(hash) {
      const rows = await db.conn.query<{ account_id: string }>(
        `SELECT account_id FROM ${db.t('accounts')} FINAL WHERE read_token_hash = {h:String} LIMIT 1`,
        { h: hash },
      );
      return rows[0]?.account_id;
    },

    async accountChanges(sinceMs, onWait) {
      // Storage's clock in the same statement: a poll's next `since` never comes from a node's clock.
      const clock = `toUnixTimestamp64Milli(now64(3)) AS storageNow`;
      if (sinceMs === undefined) {
        const [r] = await db.conn.query(`SELECT ${clock}`);
        return { now: num(r!.storageNow), rows: [] };
      }
      // changed_at is not in the sort key: the whole column is scanned (one small column; rows
      // are read only where it matches). No FINAL: the caller keeps each account's newest version.
      const rows = await db.conn.query(
        `SELECT ${ACCOUNT_SELECT}, ${ms('changed_at', 'changedAt')}, ${clock} FROM ${db.t('accounts')} WHERE changed_at >= ${at('since')}`,
        { since: sinceMs },
        onWait,
      );
      return { now: rows.length ? num(rows[0]!.storageNow) : undefined, rows: rows.map((r) => ({ row: toAccount(r), changedAt: num(r.changedAt) })) };
    },

    addRejects: (rows) =>
      db.insert('rejects', REJECT_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.code), time(r.at), uint(r.count, Number.MAX_SAFE_INTEGER),
      ]),

    async rejects(accountId) {
      const rows = await db.conn.query<{ code: string; n: string }>(
        `SELECT code, sum(count) AS n FROM ${db.t('rejects')} WHERE account_id = {id:String} GROUP BY code ORDER BY code`,
        { id: accountId },
      );
      return Object.fromEntries(rows.map((r) => [r.code, num(r.n)]));
    },
  };
}
