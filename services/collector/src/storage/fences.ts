/**
 * Epoch fences (schema migration 9; ARCHITECTURE.md, "Fencing a stale lease holder").
 * ClickHouse has no compare-and-set, so a lease holder that stalled past its lease cannot be
 * refused at insert time. Instead every processed marker carries its tick's lease epoch and the
 * server's clock at insert (`committed_at`), and a node that takes a partition over first writes
 * a fence: (partition, new epoch, the server's clock). A marker of an older epoch committed at or
 * after a fence of its account's partition was written by a stale holder after it lost the
 * partition: every reader of markers leaves it out (`LIVE_MARKER`), so its batch stays pending
 * for the new holder and its rollup part stays an orphan for recovery, and recovery deletes it.
 * Epochs are global over all leases (keyring/leases.ts), so a fence of one partition count also
 * fences the holders of another count that covered the same accounts.
 */
import { str, uint } from './tsv.js';
import type { FenceStore } from './types.js';
import { partitionParams, partitionSql } from './types.js';
import { at, num, type Db } from './sql.js';

/**
 * Condition on a `processed` row: it counts (epoch 0, or no fence of a newer epoch over its
 * account committed before it). The fences are one small table read once per statement.
 */
export const liveMarker = (db: Db): string =>
  `(epoch = 0 OR NOT arrayExists(f -> f.1 > epoch AND committed_at >= f.2 AND cityHash64(account_id) % f.3 = f.4,
    (SELECT groupArray((epoch, fenced_at, partition_count, partition_index)) FROM ${db.t('fences')})))`;

export function fenceRepository(db: Db): FenceStore {
  return {
    // fenced_at: the server's clock (the column's default), the same clock as committed_at
    fencePartition: (f) =>
      db.insert('fences', ['partition_index', 'partition_count', 'epoch', 'holder'], [f], (r) => [uint(r.partition.index), uint(r.partition.count), uint(r.epoch), str(r.holder)]),

    async fencedMarkers({ since, partition, limit }) {
      const rows = await db.conn.query<{ a: string; b: string; e: number | string; p: string }>(
        `SELECT account_id AS a, batch_id AS b, epoch AS e, part AS p FROM ${db.t('processed')}
         WHERE processed_at >= ${at('since')} AND epoch > 0${partition ? ` AND ${partitionSql('account_id')}` : ''} AND NOT ${liveMarker(db)}
         LIMIT {limit:UInt32}`,
        { since, limit, ...(partition ? partitionParams(partition) : {}) },
      );
      return rows.map((r) => ({ accountId: r.a, batchId: r.b, epoch: num(r.e), part: r.p }));
    },

    async deleteMarkers(refs) {
      const key = (r: { accountId: string; batchId: string; epoch: number }) => `${r.accountId}/${r.batchId}/${r.epoch}`;
      for (const run of db.chunks(refs, key)) {
        await db.conn.exec(
          `DELETE FROM ${db.t('processed')}
           WHERE account_id IN {acc:Array(String)} AND batch_id IN {ids:Array(String)}
             AND concat(account_id, '/', batch_id, '/', toString(epoch)) IN {keys:Array(String)}
           SETTINGS lightweight_deletes_sync = 2`,
          { acc: [...new Set(run.map((r) => r.accountId))], ids: [...new Set(run.map((r) => r.batchId))], keys: run.map(key) },
        );
      }
    },
  };
}
