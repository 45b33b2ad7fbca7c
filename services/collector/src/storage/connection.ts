import { StorageError } from './errors.js';
import type { CallStats, WaitObserver } from './lane.js';
import type { Params } from './types.js';

/**
 * The runtime seam: everything the repository needs from an engine, one implementation per
 * runtime (embedded chDB, a ClickHouse server over HTTP). Implementations throw StorageError.
 */
export interface Connection {
  readonly kind: 'chdb' | 'remote';
  /** Runs a SELECT; rows as JSONEachRow objects, 64-bit integers as decimal strings. `onWait`: as for queryBinary. */
  query<T = Record<string, unknown>>(sql: string, params?: Params, onWait?: WaitObserver): Promise<T[]>;
  /**
   * Runs a SELECT; its raw RowBinary output (no header; read it with RowBinaryReader). `onWait`
   * is told when the call waits for the engine and when it starts (lane.ts; a server: never).
   */
  queryBinary(sql: string, params?: Params, onWait?: WaitObserver): Promise<Uint8Array>;
  /** Runs a statement without result rows (DDL, DELETE, ALTER). */
  exec(sql: string, params?: Params): Promise<void>;
  /** Inserts a TabSeparated payload; resolves once the engine has written (and fsynced) it. */
  insert(table: string, columns: readonly string[], tsv: Buffer): Promise<void>;
  /**
   * Runs a statement outside the store's database (CREATE DATABASE). Every other call runs
   * with the store's database current, so unqualified table names work once it exists.
   */
  execOutsideDatabase(sql: string): Promise<void>;
  /**
   * The same connection where every call ends within `ms` (0: no deadline of its own) in
   * `storage_unavailable`. The call is abandoned, not undone: a statement the engine already
   * has may still complete (callers of writes must be idempotent). Closing a view is a no-op.
   */
  withDeadline(ms: number): Connection;
  /**
   * The same connection whose calls go before the waiting calls of other views, where the
   * engine runs one call at a time (chDB: lane.ts); a server runs calls side by side, so there
   * it is the same connection.
   */
  urgent(): Connection;
  /** Calls so far by kind, with the seconds they waited for the engine and ran (chDB; empty for a server). */
  callStats(): Record<string, CallStats>;
  close(): Promise<void>;
}

/** The error of a call that did not answer within its deadline. */
export const deadlineError = (ms: number): StorageError =>
  new StorageError('storage_unavailable', `storage did not answer within ${ms} ms`);

/**
 * `run` raced against a timer of `ms` (0: no deadline). `run` gets an AbortSignal that fires
 * at the deadline, for drivers that can cancel (the HTTP client closes its request).
 */
export async function withinDeadline<T>(ms: number, run: (signal?: AbortSignal) => Promise<T>): Promise<T> {
  if (!(ms > 0)) return run();
  const abort = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(deadlineError(ms));
      abort.abort();
    }, ms);
  });
  const work = run(abort.signal);
  work.catch(() => {}); // settles after the deadline: nobody waits for it any more
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
