import { openChdbStore } from './chdb.js';
import { StorageError } from './errors.js';
import { openRemoteStore } from './remote.js';
import type { Store } from './types.js';

export interface OpenStoreOptions {
  /** Embedded chDB data lives in `${dataDir}/clickhouse` (used when there is no url). */
  dataDir?: string;
  /** A ClickHouse server (`CLICKHOUSE_URL`); selects the remote adapter. */
  url?: string;
  /** Default `cipherstat` (`CLICKHOUSE_DATABASE`). */
  database?: string;
  user?: string;
  password?: string;
  /** ON CLUSTER DDL and Replicated* engines (remote only). */
  cluster?: string;
}

/**
 * Opens the store: a ClickHouse server when `url` is given, else embedded chDB under `dataDir`.
 * Missing options fall back to CLICKHOUSE_URL, CLICKHOUSE_DATABASE, CLICKHOUSE_USER,
 * CLICKHOUSE_PASSWORD and CLICKHOUSE_CLUSTER. Call `migrate()` before use.
 */
export async function openStore(options: OpenStoreOptions, env: NodeJS.ProcessEnv = process.env): Promise<Store> {
  const url = options.url ?? env.CLICKHOUSE_URL;
  const database = options.database ?? env.CLICKHOUSE_DATABASE;
  if (url) {
    return openRemoteStore({
      url,
      database,
      user: options.user ?? env.CLICKHOUSE_USER,
      password: options.password ?? env.CLICKHOUSE_PASSWORD,
      cluster: options.cluster ?? env.CLICKHOUSE_CLUSTER,
    });
  }
  if (options.cluster) throw new StorageError('storage_invalid_input', 'cluster needs a ClickHouse server (url)');
  if (!options.dataDir) throw new StorageError('storage_invalid_input', 'openStore needs a dataDir or a url');
  return openChdbStore({ dataDir: options.dataDir, database });
}

export { StorageError, isStorageError } from './errors.js';
export type { StorageErrorCode } from './errors.js';
export { RowBinaryReader } from './rowbinary.js';
export { LIST_PARAM_BYTES, chunkList } from './repository.js';
export type * from './types.js';
