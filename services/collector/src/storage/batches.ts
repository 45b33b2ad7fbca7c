/**
 * Batches and their processed markers: what ingest stores (the sealed inner layer), what
 * processing has finished (one marker per batch, naming the rollup part its tick wrote), and
 * what recovery and the lifecycle ask of them.
 */
import { bytes, str, time, uint } from './tsv.js';
import type { BatchRow, BatchStore } from './types.js';
import { partitionParams, partitionSql } from './types.js';
import { at, fromBase64, ms, num, unique, type Db, type Raw } from './sql.js';
import { liveMarker } from './fences.js';

const key = (k: { accountId: string; batchId: string }): string => `${k.accountId}/${k.batchId}`;
const since = at('since');

const BATCH_COLUMNS = ['account_id', 'batch_id', 'received_at', 'created_at', 'point_count', 'sdk', 'version', 'flags', 'sealed', 'visitor', 'expires_at'] as const;
const BATCH_SELECT = `account_id AS accountId, batch_id AS batchId, ${ms('received_at', 'receivedAt')}, ${ms('created_at', 'createdAt')},
  point_count AS pointCount, sdk, version, flags, base64Encode(sealed) AS sealedBase64, base64Encode(visitor) AS visitorBase64, ${ms('expires_at', 'expiresAt')}`;

// committed_at is left to the server's clock (its default): fences.ts
const PROCESSED_COLUMNS = ['account_id', 'batch_id', 'processed_at', 'accepted', 'rejected', 'part', 'version', 'epoch'] as const;
function toBatch(r: Raw): BatchRow {
  return {
    accountId: String(r.accountId),
    batchId: String(r.batchId),
    receivedAt: num(r.receivedAt),
    createdAt: num(r.createdAt),
    pointCount: num(r.pointCount),
    sdk: String(r.sdk),
    version: num(r.version),
    ...(num(r.flags) ? { flags: num(r.flags) } : {}),
    sealed: fromBase64(r.sealedBase64),
    ...(r.visitorBase64 ? { visitor: fromBase64(r.visitorBase64) } : {}),
    expiresAt: num(r.expiresAt),
  };
}

export function batchRepository(db: Db): BatchStore {
  /**
   * Which of these (account, batch) pairs `select(where)` returns, as `${accountId}/${batchId}`.
   * `where` (`PREWHERE … WHERE …`) is `IN` on both key columns, which uses the primary index; the
   * cross product it may over-select is filtered here (an exact tuple match in SQL costs 2-20x
   * more). It reads the batch ids first (PREWHERE) and the account ids only of rows whose batch
   * id matched: a tick's accounts are spread over the whole key space, so the index selects nearly
   * every granule, and the batches checked are nearly all new (no row matches). The twin read of
   * a tick (1,000 batches of ~800 accounts, 200,000 markers, process CPU, mean of 30 calls):
   * 38/41 -> 25/25 ms; with 50 twins among the 1,000, 37/40/37 -> 30/30/31 ms (interleaved).
   */
  async function pairsFound(keys: { accountId: string; batchId: string }[], select: (where: string) => string): Promise<Set<string>> {
    const found = new Set<string>();
    for (const part of db.chunks(keys, key)) {
      const wanted = new Set(part.map(key));
      const rows = await db.conn.query<{ account_id: string; batch_id: string }>(
        select('PREWHERE batch_id IN {b:Array(String)} WHERE account_id IN {a:Array(String)}'),
        { a: unique(part.map((k) => k.accountId)), b: unique(part.map((k) => k.batchId)) },
      );
      for (const r of rows) {
        const k = key({ accountId: r.account_id, batchId: r.batch_id });
        if (wanted.has(k)) found.add(k);
      }
    }
    return found;
  }

  return {
    insertBatches: (rows) =>
      db.insert('batches', BATCH_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.batchId), time(r.receivedAt), time(r.createdAt), uint(r.pointCount), str(r.sdk), uint(r.version ?? 1, 255), uint(r.flags ?? 0, 255), bytes(r.sealed), bytes(r.visitor ?? new Uint8Array(0)),
        time(r.expiresAt),
      ]),

    // A batch counts as stored while either its sealed row or its processed row exists, so a
    // client retrying a batch already processed and deleted (confidential mode) is not re-ingested.
    existingBatches: (keys) =>
      pairsFound(keys, (where) =>
        `SELECT account_id, batch_id FROM ${db.t('batches')} ${where}
         UNION DISTINCT SELECT account_id, batch_id FROM ${db.t('processed')} ${where}`),

    // Processing's check of a tick's batches (process/processor.ts): one read of `processed`,
    // live markers only (a stale lease holder's late marker does not count: fences.ts).
    markedBatches: (keys) =>
      pairsFound(keys, (where) => `SELECT DISTINCT account_id, batch_id FROM ${db.t('processed')} ${where} AND ${liveMarker(db)}`),

    async pendingBatches(sinceMs, limit, partition) {
      const rows = await db.conn.query(
        `SELECT ${BATCH_SELECT} FROM ${db.t('batches')} FINAL
         WHERE received_at >= ${since}${partition ? ` AND ${partitionSql('account_id')}` : ''}
           AND (account_id, batch_id) NOT IN (
             SELECT account_id, batch_id FROM ${db.t('processed')}
             WHERE ${liveMarker(db)} AND (account_id, batch_id) IN (SELECT account_id, batch_id FROM ${db.t('batches')} WHERE received_at >= ${since}))
         ORDER BY received_at, account_id, batch_id
         LIMIT {limit:UInt32}`,
        { since: sinceMs, limit, ...(partition ? partitionParams(partition) : {}) },
      );
      return rows.map(toBatch);
    },

    markProcessed: (rows) =>
      db.insert('processed', PROCESSED_COLUMNS, rows, (r) => [
        str(r.accountId), str(r.batchId), time(r.processedAt), uint(r.accepted), uint(r.rejected), str(r.part), uint(r.version ?? 1, 255), uint(r.epoch ?? 0),
      ]),

    async deleteBatches(keys) {
      for (const part of db.chunks(keys, key)) {
        await db.conn.exec(
          `DELETE FROM ${db.t('batches')}
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

    async envelopeVersions(accountId) {
      const rows = await db.conn.query<{ v: string; n: string }>(
        // processed, and stored but not yet processed (a batch is in both between its processing and its deletion; a retry twice in batches until merged)
        `SELECT toString(version) AS v, uniqExact(batch_id) AS n
         FROM (SELECT batch_id, version FROM ${db.t('processed')} WHERE account_id = {id:String}
               UNION ALL SELECT batch_id, version FROM ${db.t('batches')} WHERE account_id = {id:String})
         GROUP BY version ORDER BY version`,
        { id: accountId },
      );
      return Object.fromEntries(rows.map((r) => [r.v, num(r.n)]));
    },

    async partMarkedSince(part, sinceMs) {
      const [r] = await db.conn.query<{ n: string }>(
        `SELECT count() AS n FROM ${db.t('processed')} WHERE processed_at >= ${since} AND part = {part:String} AND ${liveMarker(db)}`,
        { since: sinceMs, part },
      );
      return num(r?.n ?? 0) > 0;
    },

    async deleteProcessedBatches(accountId) {
      await db.conn.exec(
        `ALTER TABLE ${db.t('batches')} DELETE WHERE account_id = {id:String}
           AND batch_id IN (SELECT batch_id FROM ${db.t('processed')} WHERE account_id = {id:String} AND ${liveMarker(db)})
         SETTINGS mutations_sync = 2`,
        { id: accountId },
      );
    },
  };
}
