/**
 * The Store on top of a Connection: all SQL of both adapters lives here. Values always
 * travel as bound parameters ({name:Type}) or in an insert's TSV body, never inside SQL.
 * Reads: ReplacingMergeTree tables with FINAL, times as epoch ms, binary as base64.
 */
import type { Connection } from './connection.js';
import { ACCOUNT_TABLES, MIGRATIONS_TABLE, REPLACING_TABLES, SCHEMA_VERSION, bootstrapSql, renderMigrations, type SchemaOptions } from './schema.js';
import { bool, bytes, nullable, str, strArray, time, tsv, u64, u64Array, uint } from './tsv.js';
import type { AccountRow, AccountState, BatchRow, DictKind, DictRow, Params, RollupGroupKey, RollupLevel, RollupRef, Store, StoredRollup } from './types.js';
import { partitionParams, partitionSql } from './types.js';

type Raw = Record<string, unknown>;
const key = (k: { accountId: string; batchId: string }): string => `${k.accountId}/${k.batchId}`;
const unique = (xs: string[]): string[] => [...new Set(xs)];
// Aliases are camelCase on purpose: an alias equal to a column name would shadow the column
// in WHERE/ORDER BY (ClickHouse resolves aliases first).
const ms = (col: string, alias: string): string => `toUnixTimestamp64Milli(${col}) AS ${alias}`;
const num = (v: unknown): number => Number(v);
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const fromBase64 = (v: unknown): Uint8Array => new Uint8Array(Buffer.from(String(v), 'base64'));

const ACCOUNT_COLUMNS = [
  'account_id', 'version', 'state', 'created_at', 'updated_at', 'deactivated_at', 'shred_after', 'shredded_at',
  'read_token_hash', 'allowed_origins', 'retention_days', 'confidential', 'name',
] as const;
const ACCOUNT_SELECT = `account_id AS accountId, version, state, ${ms('created_at', 'createdAt')}, ${ms('updated_at', 'updatedAt')},
  ${ms('deactivated_at', 'deactivatedAt')}, ${ms('shred_after', 'shredAfter')}, ${ms('shredded_at', 'shreddedAt')},
  read_token_hash AS readTokenHash, allowed_origins AS allowedOrigins, retention_days AS retentionDays, confidential, name`;

const BATCH_COLUMNS = ['account_id', 'batch_id', 'received_at', 'created_at', 'point_count', 'sdk', 'version', 'sealed', 'expires_at'] as const;
const BATCH_SELECT = `account_id AS accountId, batch_id AS batchId, ${ms('received_at', 'receivedAt')}, ${ms('created_at', 'createdAt')},
  point_count AS pointCount, sdk, version, base64Encode(sealed) AS sealedBase64, ${ms('expires_at', 'expiresAt')}`;

const PROCESSED_COLUMNS = ['account_id', 'batch_id', 'processed_at', 'accepted', 'rejected', 'part', 'version'] as const;
const ROLLUP_COLUMNS = [
  'account_id', 'level', 'bucket', 'metric', 'series', 'tag_keys', 'tag_values', 'key_version', 'part', 'supersedes', 'agg', 'written_at', 'expires_at',
] as const;
// One rollup group / row of an account as one string, in SQL and here: exact matches through a
// hash set (`IN`) instead of a linear has(arrayZip(...)) per row.
const GROUP_KEY_SQL = `concat(account_id, '|', toString(level), '|', toString(metric), '|', toString(toUnixTimestamp64Milli(bucket)), '|', toString(series))`;
const REF_KEY_SQL = `concat(${GROUP_KEY_SQL}, '|', part)`;
const groupKey = (g: RollupGroupKey): string => `${g.accountId}|${g.level}|${g.metric}|${g.bucket}|${g.series}`;
const refKey = (r: RollupRef): string => `${groupKey(r)}|${r.part}`;
/**
 * Most bytes of one list parameter in one statement, counted as sent (URL-encoded, quoted). A
 * ClickHouse server takes bound parameters as URL fields: at most `http_max_field_value_size`
 * (128 KiB) each and `http_max_uri_size` (1 MiB) in all, and a statement here carries at most
 * four lists made from the same keys: 64 KiB per list keeps every statement below both, however
 * long the backlog. chDB binds parameters in process, with no such limit; its lists are still
 * bounded.
 */
export const LIST_PARAM_BYTES: Record<Connection['kind'], number> = { remote: 64 * 1024, chdb: 1024 * 1024 };

/** `xs` cut into runs whose `text`s fit one list parameter of a statement (`budget` bytes). */
export function chunkList<T>(xs: readonly T[], text: (x: T) => string, budget: number): T[][] {
  const out: T[][] = [];
  let run: T[] = [];
  let bytes = 0;
  for (const x of xs) {
    const n = encodeURIComponent(text(x)).length + 9; // '…', URL-encoded
    if (run.length && bytes + n > budget) {
      out.push(run);
      run = [];
      bytes = 0;
    }
    run.push(x);
    bytes += n;
  }
  if (run.length) out.push(run);
  return out;
}
/** Coarse filters on the sorting key (accounts, metrics, bucket range) so exact key matches read few granules. */
function refRange(rows: RollupGroupKey[]): { accs: string[]; ms: string[]; bmin: number; bmax: number } {
  let bmin = Infinity;
  let bmax = -Infinity;
  for (const r of rows) {
    if (r.bucket < bmin) bmin = r.bucket;
    if (r.bucket > bmax) bmax = r.bucket;
  }
  return { accs: unique(rows.map((r) => r.accountId)), ms: unique(rows.map((r) => r.metric)), bmin, bmax };
}
const RANGE_SQL = `account_id IN {accs:Array(String)} AND metric IN arrayMap(x -> toUInt64(x), {ms:Array(String)})
  AND bucket >= fromUnixTimestamp64Milli({bmin:Int64}, 'UTC') AND bucket <= fromUnixTimestamp64Milli({bmax:Int64}, 'UTC')`;
const DICT_COLUMNS = ['account_id', 'kind', 'pseudonym', 'key_version', 'ciphertext', 'first_seen'] as const;
const REJECT_COLUMNS = ['account_id', 'code', 'at', 'count'] as const;

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

function toBatch(r: Raw): BatchRow {
  return {
    accountId: String(r.accountId),
    batchId: String(r.batchId),
    receivedAt: num(r.receivedAt),
    createdAt: num(r.createdAt),
    pointCount: num(r.pointCount),
    sdk: String(r.sdk),
    version: num(r.version),
    sealed: fromBase64(r.sealedBase64),
    expiresAt: num(r.expiresAt),
  };
}

function toDict(r: Raw): DictRow {
  return {
    accountId: String(r.accountId),
    kind: num(r.kind) as DictKind,
    pseudonym: String(r.pseudonym),
    keyVersion: num(r.keyVersion),
    ciphertext: fromBase64(r.ciphertextBase64),
    firstSeen: num(r.firstSeen),
  };
}

export function createStore(conn: Connection, opts: SchemaOptions): Store {
  const db = opts.database;
  const chunks = <T>(xs: readonly T[], text: (x: T) => string): T[][] => chunkList(xs, text, LIST_PARAM_BYTES[conn.kind]);
  const t = (name: string): string => `${db}.${name}`;
  const insert = async <R>(table: string, columns: readonly string[], rows: readonly R[], fields: (r: R) => (string | Buffer)[]) => {
    if (rows.length > 0) await conn.insert(t(table), columns, await tsv(rows, fields));
  };
  const since = `fromUnixTimestamp64Milli({since:Int64}, 'UTC')`;

  return {
    kind: conn.kind,

    async migrate() {
      const boot = bootstrapSql(opts);
      await conn.execOutsideDatabase(boot.createDatabase);
      await conn.exec(boot.createMigrationsTable);
      const [row] = await conn.query<{ v: number }>(`SELECT max(version) AS v FROM ${t(MIGRATIONS_TABLE)}`);
      const from = num(row?.v ?? 0);
      for (const m of renderMigrations(opts)) {
        if (m.version <= from) continue;
        for (const sql of m.statements) await conn.exec(sql);
        await insert(MIGRATIONS_TABLE, ['version', 'applied_at'], [m.version], (v) => [uint(v), time(Date.now())]);
      }
      return { from, to: Math.max(from, SCHEMA_VERSION) };
    },

    async ping() {
      await conn.query('SELECT 1 AS ok');
    },

    close: () => conn.close(),
    withDeadline: (ms) => createStore(conn.withDeadline(ms), opts),
    query: (sql, params) => conn.query(sql, params),
    queryBinary: (sql, params) => conn.queryBinary(sql, params),
    exec: (sql, params) => conn.exec(sql, params),

    putAccount: (r) =>
      insert('accounts', ACCOUNT_COLUMNS, [r], (r) => [
        str(r.accountId), uint(r.version, Number.MAX_SAFE_INTEGER), str(r.state), time(r.createdAt), time(r.updatedAt),
        nullable(r.deactivatedAt, time), nullable(r.shredAfter, time), nullable(r.shreddedAt, time),
        str(r.readTokenHash), strArray(r.allowedOrigins), uint(r.retentionDays), bool(r.confidential), str(r.name ?? ''),
      ]),

    async getAccount(accountId) {
      const rows = await conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${t('accounts')} FINAL WHERE account_id = {id:String}`, { id: accountId });
      return rows[0] && toAccount(rows[0]);
    },

    async getAccounts(accountIds) {
      const out: AccountRow[] = [];
      for (const part of chunks(accountIds, (id) => id)) {
        const rows = await conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${t('accounts')} FINAL WHERE account_id IN {ids:Array(String)}`, { ids: part });
        for (const r of rows) out.push(toAccount(r));
      }
      return out;
    },

    async listAccounts() {
      return (await conn.query(`SELECT ${ACCOUNT_SELECT} FROM ${t('accounts')} FINAL ORDER BY account_id`)).map(toAccount);
    },

    insertBatches: (rows) =>
      insert('batches', BATCH_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.batchId), time(r.receivedAt), time(r.createdAt), uint(r.pointCount), str(r.sdk), uint(r.version ?? 1, 255), bytes(r.sealed),
        time(r.expiresAt),
      ]),

    // A batch counts as stored while either its sealed row or its processed row exists, so a
    // client retrying a batch already processed and deleted (confidential mode) is not re-ingested.
    // `IN` on both key columns uses the primary index; the cross product it may over-select is
    // filtered here (an exact tuple match in SQL costs 2-20x more).
    async existingBatches(keys) {
      const found = new Set<string>();
      for (const part of chunks(keys, key)) {
        const wanted = new Set(part.map(key));
        const where = 'account_id IN {a:Array(String)} AND batch_id IN {b:Array(String)}';
        const rows = await conn.query<{ account_id: string; batch_id: string }>(
          `SELECT account_id, batch_id FROM ${t('batches')} WHERE ${where}
           UNION DISTINCT SELECT account_id, batch_id FROM ${t('processed')} WHERE ${where}`,
          { a: unique(part.map((k) => k.accountId)), b: unique(part.map((k) => k.batchId)) },
        );
        for (const r of rows) {
          const k = key({ accountId: r.account_id, batchId: r.batch_id });
          if (wanted.has(k)) found.add(k);
        }
      }
      return found;
    },

    async pendingBatches(sinceMs, limit, partition) {
      const rows = await conn.query(
        `SELECT ${BATCH_SELECT} FROM ${t('batches')} FINAL
         WHERE received_at >= ${since}${partition ? ` AND ${partitionSql('account_id')}` : ''}
           AND (account_id, batch_id) NOT IN (
             SELECT account_id, batch_id FROM ${t('processed')}
             WHERE (account_id, batch_id) IN (SELECT account_id, batch_id FROM ${t('batches')} WHERE received_at >= ${since}))
         ORDER BY received_at, account_id, batch_id
         LIMIT {limit:UInt32}`,
        { since: sinceMs, limit, ...(partition ? partitionParams(partition) : {}) },
      );
      return rows.map(toBatch);
    },

    markProcessed: (rows) =>
      insert('processed', PROCESSED_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.batchId), time(r.processedAt), uint(r.accepted), uint(r.rejected), str(r.part), uint(r.version ?? 1, 255),
      ]),

    async deleteBatches(keys) {
      for (const part of chunks(keys, key)) {
        await conn.exec(
          `DELETE FROM ${t('batches')}
           WHERE account_id IN {acc:Array(String)} AND batch_id IN {ids:Array(String)}
             AND has(arrayZip({a:Array(String)}, {b:Array(String)}), (account_id, batch_id))
           SETTINGS lightweight_deletes_sync = 2`,
          {
            acc: unique(part.map((k) => k.accountId)),
            ids: unique(part.map((k) => k.batchId)),
            a: part.map((k) => k.accountId),
            b: part.map((k) => k.batchId),
          },
        );
      }
    },

    insertRollups: (rows) =>
      insert('rollups', ROLLUP_COLUMNS, rows, (r) => [
        str(r.accountId), uint(r.level, 2), time(r.bucket), u64(r.metric), u64(r.series), u64Array(r.tagKeys), u64Array(r.tagValues),
        uint(r.keyVersion), str(r.part), strArray(r.supersedes ?? []), bytes(r.agg), time(r.writtenAt), time(r.expiresAt),
      ]),

    async rollupGroupsToCompact({ since: sinceMs, after, limit }) {
      const key = '(account_id, level, metric, bucket, series)';
      const params: Params = { limit };
      let cursor = '';
      if (after) {
        cursor = ` AND ${key} > ({ca:String}, {cl:UInt8}, {cm:UInt64}, fromUnixTimestamp64Milli({cb:Int64}, 'UTC'), {cs:UInt64})`;
        Object.assign(params, { ca: after.accountId, cl: after.level, cm: after.metric, cb: after.bucket, cs: after.series });
      }
      let recent = '';
      if (sinceMs !== undefined) {
        recent = ` AND ${key} IN (SELECT account_id, level, metric, bucket, series FROM ${t('rollups')} WHERE written_at >= ${since}${cursor})`;
        params.since = sinceMs;
      }
      const rows = await conn.query<{ a: string; l: number; m: string; b: number | string; s: string; n: number | string }>(
        `SELECT account_id AS a, level AS l, toString(metric) AS m, toUnixTimestamp64Milli(bucket) AS b, toString(series) AS s, count() AS n
         FROM ${t('rollups')}
         WHERE 1${cursor}${recent}
         GROUP BY account_id, level, metric, bucket, series
         HAVING n > 1 AND countIf(notEmpty(supersedes)) = 0
         ORDER BY account_id, level, metric, bucket, series
         LIMIT {limit:UInt32}
         SETTINGS optimize_aggregation_in_order = 1`,
        params,
      );
      return rows.map((r) => ({ accountId: r.a, level: num(r.l) as RollupLevel, metric: r.m, bucket: num(r.b), series: r.s, rows: num(r.n) }));
    },

    async rollupsOfGroups(groups, perGroup) {
      const out: StoredRollup[] = [];
      for (const part of chunks(groups, groupKey)) {
        const where = `${RANGE_SQL} AND ${GROUP_KEY_SQL} IN {keys:Array(String)}`;
        const rows = await conn.query<Raw>(
          `SELECT account_id AS acc, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s,
             tag_keys AS tk, tag_values AS tv, key_version AS v, part AS p, supersedes AS sup, base64Encode(agg) AS a,
             ${ms('written_at', 'w')}, ${ms('expires_at', 'e')},
             (account_id, part) IN (SELECT account_id, part FROM ${t('processed')} WHERE account_id IN {accs:Array(String)}
                AND (account_id, part) IN (SELECT account_id, part FROM ${t('rollups')} WHERE ${where})) AS marked
           FROM ${t('rollups')}
           WHERE ${where}
           ORDER BY account_id, level, metric, bucket, series, written_at, part
           LIMIT {per:UInt32} BY account_id, level, metric, bucket, series`,
          { ...refRange(part), keys: part.map(groupKey), per: perGroup },
        );
        for (const r of rows) {
          out.push({
            accountId: String(r.acc),
            level: num(r.l) as RollupLevel,
            bucket: num(r.b),
            metric: String(r.m),
            series: String(r.s),
            tagKeys: (r.tk as unknown[]).map(String),
            tagValues: (r.tv as unknown[]).map(String),
            keyVersion: num(r.v),
            part: String(r.p),
            supersedes: (r.sup as unknown[]).map(String),
            agg: fromBase64(r.a),
            writtenAt: num(r.w),
            expiresAt: num(r.e),
            marked: r.marked === true || r.marked === 1 || r.marked === '1',
          });
        }
      }
      return out;
    },

    async supersedingRollups(limit) {
      const rows = await conn.query<{ a: string; l: number; b: number | string; m: string; s: string; p: string; sup: string[]; tk: unknown[]; tv: unknown[]; v: number | string; g: string }>(
        `SELECT account_id AS a, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, part AS p, supersedes AS sup,
           tag_keys AS tk, tag_values AS tv, key_version AS v, base64Encode(agg) AS g
         FROM ${t('rollups')} WHERE notEmpty(supersedes)
         ORDER BY account_id, written_at, part
         LIMIT {limit:UInt32}`,
        { limit },
      );
      return rows.map((r) => ({
        accountId: r.a, level: num(r.l) as RollupLevel, bucket: num(r.b), metric: r.m, series: r.s, part: r.p, supersedes: r.sup,
        tagKeys: r.tk.map(String), tagValues: r.tv.map(String), keyVersion: num(r.v), agg: fromBase64(r.g),
      }));
    },

    // Mutations, queued or waited for (every replica); the exact row keys go through a hash
    // set, the account/metric/bucket/part filters let ClickHouse skip parts and granules.
    async deleteRollups(rows, opts) {
      for (const part of chunks(rows, refKey)) {
        await conn.exec(
          `DELETE FROM ${t('rollups')}
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           SETTINGS lightweight_deletes_sync = ${opts?.wait ? 2 : 0}`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
      }
    },

    async clearSupersedes(rows, opts) {
      for (const part of chunks(rows, refKey)) {
        await conn.exec(
          `ALTER TABLE ${t('rollups')} UPDATE supersedes = []
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           SETTINGS mutations_sync = ${opts?.wait ? 2 : 0}`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
      }
    },


    async findRollups(rows) {
      const out: { accountId: string; level: RollupLevel; bucket: number; metric: string; series: string; part: string; supersedes: string[] }[] = [];
      for (const part of chunks(rows, refKey)) {
        const found = await conn.query<{ a: string; l: number; b: number | string; m: string; s: string; p: string; sup: string[] }>(
          `SELECT account_id AS a, level AS l, toUnixTimestamp64Milli(bucket) AS b, toString(metric) AS m, toString(series) AS s, part AS p, supersedes AS sup
           FROM ${t('rollups')}
           WHERE ${RANGE_SQL} AND part IN {parts:Array(String)} AND ${REF_KEY_SQL} IN {keys:Array(String)}
           ORDER BY account_id, level, metric, bucket, series, part`,
          { ...refRange(part), parts: unique(part.map((r) => r.part)), keys: part.map(refKey) },
        );
        for (const r of found) out.push({ accountId: r.a, level: num(r.l) as RollupLevel, bucket: num(r.b), metric: r.m, series: r.s, part: r.p, supersedes: r.sup });
      }
      return out;
    },

    insertDictionary: (rows) =>
      insert('dictionary', DICT_COLUMNS, rows, (r) => [
        str(r.accountId), uint(r.kind, 2), u64(r.pseudonym), uint(r.keyVersion), bytes(r.ciphertext), time(r.firstSeen),
      ]),

    async dictionary(accountId, kind) {
      const rows = await conn.query(
        `SELECT account_id AS accountId, kind, pseudonym, key_version AS keyVersion, base64Encode(ciphertext) AS ciphertextBase64,
           ${ms('first_seen', 'firstSeen')}
         FROM ${t('dictionary')} FINAL
         WHERE account_id = {id:String}${kind === undefined ? '' : ' AND kind = {kind:UInt8}'}
         ORDER BY kind, pseudonym`,
        kind === undefined ? { id: accountId } : { id: accountId, kind },
      );
      return rows.map(toDict);
    },

    addRejects: (rows) =>
      insert('rejects', REJECT_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.code), time(r.at), uint(r.count, Number.MAX_SAFE_INTEGER),
      ]),

    async rejects(accountId) {
      const rows = await conn.query<{ code: string; n: string }>(
        `SELECT code, sum(count) AS n FROM ${t('rejects')} WHERE account_id = {id:String} GROUP BY code ORDER BY code`,
        { id: accountId },
      );
      return Object.fromEntries(rows.map((r) => [r.code, num(r.n)]));
    },

    async envelopeVersions(accountId) {
      const rows = await conn.query<{ v: string; n: string }>(
        `SELECT toString(version) AS v, count() AS n FROM ${t('processed')} FINAL WHERE account_id = {id:String} GROUP BY version ORDER BY version`,
        { id: accountId },
      );
      return Object.fromEntries(rows.map((r) => [r.v, num(r.n)]));
    },

    async countAccountRows(accountId) {
      const rows = await conn.query<{ table: string; n: string }>(
        ACCOUNT_TABLES.map(
          (name) =>
            `SELECT '${name}' AS table, count() AS n FROM ${t(name)}${REPLACING_TABLES.has(name) ? ' FINAL' : ''} WHERE account_id = {id:String}`,
        ).join('\nUNION ALL '),
        { id: accountId },
      );
      const counts: Record<string, number> = Object.fromEntries(ACCOUNT_TABLES.map((name) => [name, 0]));
      for (const r of rows) counts[r.table] = num(r.n);
      return counts;
    },

    // ALTER ... DELETE rewrites the parts holding the account, so its bytes leave the disk
    // (once the old parts are cleaned up), not only the query results. Replicated tables
    // replay the mutation on every replica; mutations_sync = 2 waits for all of them.
    async purgeAccount(accountId) {
      for (const name of ACCOUNT_TABLES) {
        await conn.exec(`ALTER TABLE ${t(name)} DELETE WHERE account_id = {id:String} SETTINGS mutations_sync = 2`, { id: accountId });
      }
    },

    async tables() {
      const rows = await conn.query<{ name: string }>(`SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name`, { db });
      return rows.map((r) => t(r.name));
    },
  };
}

