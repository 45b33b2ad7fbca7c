import type { Params } from './types.js';

/**
 * The runtime seam: everything the repository needs from an engine, one implementation per
 * runtime (embedded chDB, a ClickHouse server over HTTP). Implementations throw StorageError.
 */
export interface Connection {
  readonly kind: 'chdb' | 'remote';
  /** Runs a SELECT; rows as JSONEachRow objects, 64-bit integers as decimal strings. */
  query<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T[]>;
  /** Runs a SELECT; its raw RowBinary output (no header; read it with RowBinaryReader). */
  queryBinary(sql: string, params?: Params): Promise<Uint8Array>;
  /** Runs a statement without result rows (DDL, DELETE, ALTER). */
  exec(sql: string, params?: Params): Promise<void>;
  /** Inserts a TabSeparated payload; resolves once the engine has written (and fsynced) it. */
  insert(table: string, columns: readonly string[], tsv: Buffer): Promise<void>;
  /**
   * Runs a statement outside the store's database (CREATE DATABASE). Every other call runs
   * with the store's database current, so unqualified table names work once it exists.
   */
  execOutsideDatabase(sql: string): Promise<void>;
  close(): Promise<void>;
}
