/**
 * The one schema of both adapters, as versioned migrations. A migration's statements are
 * rendered for a database name and, optionally, a cluster: with `cluster` every DDL gets
 * `ON CLUSTER <name>` and every engine becomes its `Replicated*` twin keyed by the
 * `{shard}`/`{replica}` macros (one shard, N replicas: reads and writes go to local tables).
 *
 * Rules: never edit a released migration, append a new one; every statement is idempotent
 * (IF NOT EXISTS), so a migration interrupted halfway is simply run again.
 */
import { StorageError } from './errors.js';

export interface SchemaOptions {
  database: string;
  cluster?: string | undefined;
}

export interface Migration {
  version: number;
  statements: (s: SchemaContext) => string[];
  /**
   * A migration whose statements cannot all run twice (one that rewrites a table and swaps it
   * in): its first statement creates the copy without IF NOT EXISTS, the claim (on a server, a
   * second node migrating at the same time fails there and refuses to start, `busy` says why);
   * `done`, `source` and `empty` are queries answering one row `{ done: 0 | 1 }`: `done` 1 once
   * the swap happened, after which a run again (an interruption before the version was
   * recorded) only runs `finish`; `source` 1 while the table copied exists; `empty` 1 while it
   * holds no row. `finish` also removes a copy an interrupted run left before the swap where one
   * process owns storage (chDB's data directory; `torn` refuses when the source table is missing
   * there). On a server the rewrite runs only on an empty table (a new database): storage there
   * cannot tell whether another node still writes into a table being copied.
   */
  rerun?: (s: SchemaContext) => RewriteRerun;
}

/** How a table-rewriting migration runs again (Migration.rerun). */
export interface RewriteRerun {
  done: string;
  source: string;
  empty: string;
  finish: string[];
  busy: string;
  torn: string;
}

/** What a migration needs to render its DDL. */
export interface SchemaContext {
  database: string;
  /** `db.table` */
  t(name: string): string;
  /** ` ON CLUSTER c` or `` */
  on: string;
  /** `ENGINE = X(args)` or `ENGINE = ReplicatedX('/clickhouse/tables/{shard}/{database}/table', '{replica}', args)` */
  engine(kind: 'MergeTree' | 'ReplacingMergeTree' | 'SummingMergeTree', table: string, ...args: string[]): string;
}

const TIME = "DateTime64(3, 'UTC')";
/** The rollups table's granules: at most this many bytes of columns (migration 15; 8,192 rows at most, as before). */
export const ROLLUP_GRANULE_BYTES = 262_144;

export const migrations: Migration[] = [
  {
    version: 1,
    statements: ({ t, on, engine }) => [
      `CREATE TABLE IF NOT EXISTS ${t('accounts')}${on} (
  account_id String,
  version UInt64,
  state LowCardinality(String),
  created_at ${TIME},
  updated_at ${TIME},
  deactivated_at Nullable(${TIME}),
  shred_after Nullable(${TIME}),
  shredded_at Nullable(${TIME}),
  read_token_hash String,
  allowed_origins Array(String),
  retention_days UInt32,
  confidential Bool
) ${engine('ReplacingMergeTree', 'accounts', 'version')}
ORDER BY account_id`,
      // The sealed inner layers. A 202 is sent only after this insert returns, hence the
      // fsyncs. No partitioning: a retried batch must land next to its twin for FINAL.
      `CREATE TABLE IF NOT EXISTS ${t('batches')}${on} (
  account_id String,
  batch_id String,
  received_at ${TIME},
  created_at ${TIME},
  point_count UInt32,
  sdk LowCardinality(String),
  sealed String CODEC(NONE),
  expires_at ${TIME},
  INDEX received_at_idx received_at TYPE minmax GRANULARITY 1
) ${engine('ReplacingMergeTree', 'batches')}
ORDER BY (account_id, batch_id)
TTL expires_at DELETE
SETTINGS fsync_after_insert = 1, fsync_part_directory = 1`,
      `CREATE TABLE IF NOT EXISTS ${t('processed')}${on} (
  account_id String,
  batch_id String,
  processed_at ${TIME},
  accepted UInt32,
  rejected UInt32,
  part String,
  INDEX processed_at_idx processed_at TYPE minmax GRANULARITY 1
) ${engine('ReplacingMergeTree', 'processed')}
ORDER BY (account_id, batch_id)`,
      // Identical retried blocks are dropped (as replicated tables do by default), so a
      // processor that crashes between insertRollups and markProcessed does not double count
      // when it replays the same deterministic rows.
      `CREATE TABLE IF NOT EXISTS ${t('rollups')}${on} (
  account_id String,
  level UInt8,
  bucket ${TIME},
  metric UInt64,
  series UInt64,
  tag_keys Array(UInt64),
  tag_values Array(UInt64),
  key_version UInt32,
  part String,
  agg String CODEC(NONE),
  written_at ${TIME},
  expires_at ${TIME},
  INDEX written_at_idx written_at TYPE minmax GRANULARITY 1
) ${engine('MergeTree', 'rollups')}
PARTITION BY toYYYYMM(bucket)
ORDER BY (account_id, level, metric, bucket, series)
TTL expires_at DELETE
SETTINGS non_replicated_deduplication_window = 1000`,
      `CREATE TABLE IF NOT EXISTS ${t('dictionary')}${on} (
  account_id String,
  kind UInt8,
  pseudonym UInt64,
  key_version UInt32,
  ciphertext String CODEC(NONE),
  first_seen ${TIME}
) ${engine('ReplacingMergeTree', 'dictionary', 'key_version')}
ORDER BY (account_id, kind, pseudonym)`,
      `CREATE TABLE IF NOT EXISTS ${t('rejects')}${on} (
  account_id String,
  code LowCardinality(String),
  at ${TIME},
  count UInt64
) ${engine('SummingMergeTree', 'rejects', 'count')}
ORDER BY (account_id, code, toStartOfHour(at))`,
    ],
  },
  {
    version: 2,
    // Compaction (src/compaction/compactor.ts): a merged rollup row lists the parts of its group it
    // replaces; readers ignore those rows until they are deleted, then the list is emptied.
    statements: ({ t, on }) => [
      `ALTER TABLE ${t('rollups')}${on} ADD COLUMN IF NOT EXISTS supersedes Array(String) AFTER part`,
    ],
  },
  {
    version: 3,
    // Day packs (level 2) now replace the hour rows they hold (rollup/days.ts). Packs of the
    // earlier kind sat beside their hour rows: drop them (derived data; compaction repacks).
    statements: ({ t, on }) => [`ALTER TABLE ${t('rollups')}${on} DELETE WHERE level = 2 SETTINGS mutations_sync = 2`],
  },
  {
    version: 4,
    // An account's name (chosen by the operator, e.g. the shop's name; plaintext, like its origins).
    statements: ({ t, on }) => [`ALTER TABLE ${t('accounts')}${on} ADD COLUMN IF NOT EXISTS name String DEFAULT '' AFTER confidential`],
  },
  {
    version: 5,
    // Envelope v2 (docs/protocol.md): the process role opens a stored inner layer by the
    // version it came in; processed batches are counted per account and version (GET /v1/metrics).
    statements: ({ t, on }) => [
      `ALTER TABLE ${t('batches')}${on} ADD COLUMN IF NOT EXISTS version UInt8 DEFAULT 1 AFTER sdk`,
      `ALTER TABLE ${t('processed')}${on} ADD COLUMN IF NOT EXISTS version UInt8 DEFAULT 1`,
    ],
  },
  {
    version: 6,
    // Unique visitors (ingest/visitors.ts): a browser batch's daily visitor hash, sealed to the
    // account key by ingest; empty for batches without one (and for every batch stored before).
    statements: ({ t, on }) => [`ALTER TABLE ${t('batches')}${on} ADD COLUMN IF NOT EXISTS visitor String DEFAULT '' CODEC(NONE) AFTER sealed`],
  },
  {
    version: 7,
    // Quarter-hour rollups (level 3, hourly and daily buckets in zones at :30 and :45) are
    // written from this version on. Queries read them only for ranges from `since` on: a
    // database that already held rollup rows has none for its older data (answered from minute
    // rows, as before), so `since` is now plus 10 minutes (points may be stamped up to 5 minutes
    // ahead); a new database has them for everything (`since` = 0).
    statements: ({ t, on, engine }) => [
      `CREATE TABLE IF NOT EXISTS ${t('rollup_levels')}${on} (
  level UInt8,
  since ${TIME}
) ${engine('ReplacingMergeTree', 'rollup_levels')}
ORDER BY level`,
      `INSERT INTO ${t('rollup_levels')} (level, since)
SELECT 3, if((SELECT count() FROM ${t('rollups')}) = 0, toDateTime64(0, 3, 'UTC'), now64(3, 'UTC') + INTERVAL 10 MINUTE)
WHERE (SELECT count() FROM ${t('rollup_levels')} WHERE level = 3) = 0`,
    ],
  },
  {
    version: 8,
    // Envelope v2 flags (docs/protocol.md §Flags): 0x01 means the stored inner layer seals a
    // deflated plaintext (and its AAD says so); the process role inflates it, bounded.
    statements: ({ t, on }) => [`ALTER TABLE ${t('batches')}${on} ADD COLUMN IF NOT EXISTS flags UInt8 DEFAULT 0 AFTER version`],
  },
  {
    version: 9,
    // Epoch fencing (ARCHITECTURE.md, "Fencing a stale lease holder"): a processing tick writes
    // its lease epoch with its rollup rows and processed markers; a marker's `committed_at` is
    // the server's clock when the insert ran (never the writer's). A node taking a partition over
    // first writes a fence (the partition, its new epoch, the server's time): a marker of an older
    // epoch committed at or after a fence of its account's partition is a stale holder's late
    // write, ignored by every reader and deleted. `epoch` joins the markers' sorting key so a
    // stale marker never replaces the valid one of its batch in a merge (a column added in the
    // same ALTER, without a default expression: the only sorting-key change ClickHouse allows).
    // Rows written before (epoch 0, like role all's) are never fenced.
    statements: ({ t, on, engine }) => [
      `ALTER TABLE ${t('processed')}${on} ADD COLUMN IF NOT EXISTS epoch UInt32, ADD COLUMN IF NOT EXISTS committed_at DateTime64(6, 'UTC') DEFAULT now64(6), MODIFY ORDER BY (account_id, batch_id, epoch)`,
      `ALTER TABLE ${t('rollups')}${on} ADD COLUMN IF NOT EXISTS epoch UInt32 DEFAULT 0`,
      `CREATE TABLE IF NOT EXISTS ${t('fences')}${on} (
  partition_index UInt32,
  partition_count UInt32,
  epoch UInt32,
  holder String,
  fenced_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ${engine('MergeTree', 'fences')}
ORDER BY (partition_count, partition_index, epoch)`,
    ],
  },
  {
    version: 10,
    // Bytes per point (issue 14): ZSTD on the identity columns stored beside each sealed row (HMAC
    // pseudonyms repeat across a part's rows; `tag_values` of the ingest bench's ticks: LZ4 1.7,
    // ZSTD 0.85 B/point), and Delta first on times (`npm run bench bytes` splits bytes by column).
    // Ciphertext columns keep CODEC(NONE) (nothing to gain). A codec change is metadata only: parts
    // written before keep their codec until a merge rewrites them; new parts use these. Columns
    // with a default expression are left alone (MODIFY COLUMN would have to restate it).
    // The same release writes rollup aggregates in the compact encoding (rollup/aggregate.ts,
    // version 3) that older nodes cannot read: this version is also the mark that keeps them from
    // running on such storage (schema-gate.ts).
    statements: ({ t, on }) => {
      const zstd = (col: string, type: string) => `MODIFY COLUMN ${col} ${type} CODEC(ZSTD(1))`;
      const time = (col: string) => `MODIFY COLUMN ${col} ${TIME} CODEC(Delta, ZSTD(1))`;
      return [
        `ALTER TABLE ${t('rollups')}${on} ${[
          zstd('account_id', 'String'), zstd('level', 'UInt8'), time('bucket'), zstd('metric', 'UInt64'), zstd('series', 'UInt64'),
          zstd('tag_keys', 'Array(UInt64)'), zstd('tag_values', 'Array(UInt64)'), zstd('key_version', 'UInt32'), zstd('part', 'String'),
          zstd('supersedes', 'Array(String)'), time('written_at'), time('expires_at'),
        ].join(', ')}`,
        `ALTER TABLE ${t('batches')}${on} ${[zstd('account_id', 'String'), zstd('batch_id', 'String'), time('received_at'), time('created_at'), zstd('point_count', 'UInt32'), time('expires_at')].join(', ')}`,
        `ALTER TABLE ${t('processed')}${on} ${[zstd('account_id', 'String'), zstd('batch_id', 'String'), time('processed_at'), zstd('accepted', 'UInt32'), zstd('rejected', 'UInt32'), zstd('part', 'String')].join(', ')}`,
      ];
    },
  },
  {
    version: 11,
    // Hour and quarter-hour rows derived by compaction from minute rows (ARCHITECTURE.md,
    // "Hour rows derived from minute rows"): `until` is the derivation watermark — hours before
    // it have complete hour and quarter-hour rows, hours from it on are read from minute rows.
    // It only grows (readers take the max). An upgraded database starts at the hour before the
    // upgrade (older hours were written whole by the old ticks), a new one at 0.
    statements: ({ t, on, engine }) => [
      `CREATE TABLE IF NOT EXISTS ${t('derived')}${on} (
  until ${TIME},
  written_at ${TIME} DEFAULT now64(3)
) ${engine('MergeTree', 'derived')}
ORDER BY until`,
      `INSERT INTO ${t('derived')} (until)
SELECT if((SELECT count() FROM ${t('rollups')}) = 0, toDateTime64(0, 3, 'UTC'), toDateTime64(toStartOfHour(now('UTC') - INTERVAL 10 MINUTE), 3, 'UTC'))
WHERE (SELECT count() FROM ${t('derived')}) = 0`,
    ],
  },
  {
    version: 12,
    // Account state refreshed in the background (accounts/accounts.ts): when storage wrote each
    // account row, by storage's clock (not a node's: nodes' clocks may differ, and a tombstone's
    // updated_at is the shred's time, which may be in the past), so a node reads only the rows
    // written since its last poll. Rows written before this version get their updated_at (first
    // materialized, then the default becomes storage's clock: a part without the column would
    // otherwise read the new default as "now" on every poll). Run again after an interruption,
    // MATERIALIZE may move old rows' times forward, never back: one poll reads them once more.
    statements: ({ t, on }) => [
      `ALTER TABLE ${t('accounts')}${on} ADD COLUMN IF NOT EXISTS changed_at ${TIME} DEFAULT updated_at`,
      `ALTER TABLE ${t('accounts')}${on} MATERIALIZE COLUMN changed_at SETTINGS mutations_sync = 2`,
      `ALTER TABLE ${t('accounts')}${on} MODIFY COLUMN changed_at ${TIME} DEFAULT now64(3)`,
    ],
  },
  {
    version: 13,
    // Minute packs (rollup level 5, rollup/levels.ts): compaction packs the minute rows of a
    // derived UTC hour into one row per (hour, metric, series, key version) and deletes them.
    // No statement: the rows go into the same table. An older node would read minute buckets
    // from minute rows only and miss the packed ones: this version is the mark that keeps it
    // from running on such storage (schema-gate.ts).
    statements: () => [],
  },
  {
    version: 14,
    // Record format 4 (at-rest/records.ts): compaction seals the list of rows a merged row or a
    // pack replaces in binary (a pack's list was most of its bytes). No statement: the rows go
    // into the same table. An older node opens no format 4 row (it would count every merged row
    // and pack as failed and answer without them): this version keeps it off such storage
    // (schema-gate.ts).
    statements: () => [],
  },
  {
    version: 15,
    // Smaller granules for the rollups table (ARCHITECTURE.md, "The statement's read"): at most
    // 256 KiB of columns per granule instead of 10 MiB. A query reads whole granules of the sealed
    // `agg` column, so a 30-day hourly sum (1.8 MB of rows) read 16 MB of them. Both granularity
    // settings are readonly for an existing MergeTree table, so the table is rewritten: a copy
    // with the new settings (same columns, codecs, index, partitioning, sorting key and TTL), the
    // rows copied across (unfinished mutations applied on the fly, no block dropped as a
    // duplicate), then the two swapped (EXCHANGE TABLES: atomic, both names always exist) and
    // the old one dropped. Only where no writer can run beside the copy: chDB (one process owns
    // the data directory, and this node's own writers start after the migrations) or a server's
    // table that holds no row yet (a new database). A server's table with rows keeps 10 MiB
    // granules: a node of the older version left running (or a second node) would write rows
    // into the old table during the copy that the drop then loses, and storage cannot prove that
    // none does; README "Upgrading" gives the offline rewrite. Creating the copy is the claim of
    // one migrating node (Migration.rerun). Run again after an interruption: after the swap
    // (`done`: the table already has the new setting) only the old table is dropped; before it,
    // chDB drops the unfinished copy and starts over, a server refuses until an operator did
    // (`busy`). On a
    // cluster the copy has its own ZooKeeper path, which the swapped table keeps: a later
    // rewrite must name its copy anew.
    statements: ({ t, on, engine }) => {
      const columns = `account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, supersedes, agg, written_at, expires_at, epoch`;
      return [
        `CREATE TABLE ${t('rollups_v15')}${on} (
  account_id String CODEC(ZSTD(1)),
  level UInt8 CODEC(ZSTD(1)),
  bucket ${TIME} CODEC(Delta, ZSTD(1)),
  metric UInt64 CODEC(ZSTD(1)),
  series UInt64 CODEC(ZSTD(1)),
  tag_keys Array(UInt64) CODEC(ZSTD(1)),
  tag_values Array(UInt64) CODEC(ZSTD(1)),
  key_version UInt32 CODEC(ZSTD(1)),
  part String CODEC(ZSTD(1)),
  supersedes Array(String) CODEC(ZSTD(1)),
  agg String CODEC(NONE),
  written_at ${TIME} CODEC(Delta, ZSTD(1)),
  expires_at ${TIME} CODEC(Delta, ZSTD(1)),
  epoch UInt32 DEFAULT 0,
  INDEX written_at_idx written_at TYPE minmax GRANULARITY 1
) ${engine('MergeTree', 'rollups_v15')}
PARTITION BY toYYYYMM(bucket)
ORDER BY (account_id, level, metric, bucket, series)
TTL expires_at DELETE
SETTINGS non_replicated_deduplication_window = 1000, index_granularity_bytes = ${ROLLUP_GRANULE_BYTES}`,
        `INSERT INTO ${t('rollups_v15')} (${columns}) SELECT ${columns} FROM ${t('rollups')}
SETTINGS insert_deduplicate = 0, apply_mutations_on_fly = 1`,
        `EXCHANGE TABLES ${t('rollups')} AND ${t('rollups_v15')}${on}`,
        `DROP TABLE IF EXISTS ${t('rollups_v15')}${on} SYNC`,
      ];
    },
    rerun: ({ database, t, on }) => ({
      done: `SELECT toUInt8(count() > 0) AS done FROM system.tables
WHERE database = '${database}' AND name = 'rollups' AND engine_full LIKE '%index_granularity_bytes = ${ROLLUP_GRANULE_BYTES}%'`,
      source: `SELECT toUInt8(count() > 0) AS done FROM system.tables WHERE database = '${database}' AND name = 'rollups'`,
      empty: `SELECT toUInt8(count() = 0) AS done FROM ${t('rollups')}`,
      finish: [`DROP TABLE IF EXISTS ${t('rollups_v15')}${on} SYNC`],
      torn: `${t('rollups')} is missing and ${t('rollups_v15')} exists: the swap of schema version 15 was interrupted. Do not drop ${t('rollups_v15')}: rename it back (RENAME TABLE ${t('rollups_v15')} TO ${t('rollups')}), then start again`,
      busy: `${t('rollups_v15')} exists: another node is rewriting the rollups table (schema version 15), or one was interrupted doing it. Start this node again once that node is up; if no node is migrating, drop the unfinished copy first (DROP TABLE ${t('rollups_v15')}${on} SYNC)`,
    }),
  },
];

/** Tables holding account data, in purge order (the account row last). */
export const ACCOUNT_TABLES = ['batches', 'processed', 'rollups', 'dictionary', 'rejects', 'accounts'] as const;
export type AccountTable = (typeof ACCOUNT_TABLES)[number];
/** ReplacingMergeTree tables: read with FINAL. */
export const REPLACING_TABLES: ReadonlySet<string> = new Set(['accounts', 'batches', 'processed', 'dictionary']);
export const MIGRATIONS_TABLE = 'schema_migrations';
export const SCHEMA_VERSION = Math.max(...migrations.map((m) => m.version));

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function checkIdentifier(what: string, name: string): string {
  if (!IDENTIFIER.test(name)) throw new StorageError('storage_invalid_input', `invalid ${what} name ${JSON.stringify(name)}`);
  return name;
}

export function schemaContext({ database, cluster }: SchemaOptions): SchemaContext {
  checkIdentifier('database', database);
  if (cluster !== undefined) checkIdentifier('cluster', cluster);
  return {
    database,
    t: (name) => `${database}.${name}`,
    on: cluster ? ` ON CLUSTER ${cluster}` : '',
    engine: (kind, table, ...args) =>
      cluster
        ? `ENGINE = Replicated${kind}(${[`'/clickhouse/tables/{shard}/{database}/${table}'`, `'{replica}'`, ...args].join(', ')})`
        : `ENGINE = ${kind}(${args.join(', ')})`,
  };
}

/** The statements that create the database and the migrations table, before any migration. */
export function bootstrapSql(opts: SchemaOptions): { createDatabase: string; createMigrationsTable: string } {
  const s = schemaContext(opts);
  return {
    createDatabase: `CREATE DATABASE IF NOT EXISTS ${opts.database}${s.on}`,
    createMigrationsTable: `CREATE TABLE IF NOT EXISTS ${s.t(MIGRATIONS_TABLE)}${s.on} (
  version UInt32,
  applied_at ${TIME}
) ${s.engine('ReplacingMergeTree', MIGRATIONS_TABLE)}
ORDER BY version`,
  };
}

/** Every migration rendered to SQL (what migrate() runs; also what tests inspect). */
export function renderMigrations(opts: SchemaOptions): { version: number; statements: string[]; rerun?: RewriteRerun }[] {
  const s = schemaContext(opts);
  return migrations.map((m) => ({ version: m.version, statements: m.statements(s), ...(m.rerun ? { rerun: m.rerun(s) } : {}) }));
}
