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
 * The options come from the configuration (config.ts: CLICKHOUSE_URL, CLICKHOUSE_DATABASE,
 * CLICKHOUSE_USER, CLICKHOUSE_PASSWORD, CLICKHOUSE_CLUSTER; services.ts `storeOptions`).
 * Call `migrate()` before use.
 */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  const { url, database } = options;
  if (url) {
    return openRemoteStore({ url, database, user: options.user, password: options.password, cluster: options.cluster });
  }
  if (options.cluster) throw new StorageError('storage_invalid_input', 'cluster needs a ClickHouse server (url)');
  if (!options.dataDir) throw new StorageError('storage_invalid_input', 'openStore needs a dataDir or a url');
  return (await embeddedEngine()).openChdbStore({ dataDir: options.dataDir, database });
}

/**
 * The embedded engine (the `chdb` package, ~550 MB with its library) is loaded only here,
 * when no server is configured, and may be left out of an install for nodes that use a
 * ClickHouse server (`npm install --omit=optional`).
 */
async function embeddedEngine(): Promise<typeof import('./chdb.js')> {
  try {
    return await import('./chdb.js');
  } catch (e) {
    const code = (e as { code?: unknown } | null)?.code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw e;
    throw new StorageError(
      'storage_unavailable',
      'the embedded engine (npm package chdb) is not installed: install it (npm install chdb) or set CLICKHOUSE_URL to a ClickHouse server',
      undefined,
      { cause: e },
    );
  }
}

export { StorageError, isStorageError } from './errors.js';
export type { StorageErrorCode } from './errors.js';
export { RowBinaryReader } from './rowbinary.js';
export { connectionOf } from './repository.js';
export type { Connection } from './connection.js';
export { readStoredRows, type StoredRow } from './queries.js';
export { LIST_PARAM_BYTES, chunkList } from './sql.js';
/** The tables an account's rows live in, in the order the purge empties them. */
export { ACCOUNT_TABLES as PURGE_TABLES } from './schema.js';
export type * from './types.js';
