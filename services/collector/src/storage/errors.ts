/**
 * The one error type of the storage layer. The HTTP edge maps any StorageError to 503
 * (`storage_unavailable`, `storage_query_failed`) or 500 (`storage_invalid_input`, a bug
 * in the caller). Messages carry ClickHouse's first line at most: never SQL values.
 */
export type StorageErrorCode =
  /** Cannot reach the engine: store closed, connection refused, timeout. */
  | 'storage_unavailable'
  /** The engine answered with an error. */
  | 'storage_query_failed'
  /** A row or option was refused before reaching the engine. */
  | 'storage_invalid_input';

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    /** ClickHouse's exception code, when the engine gave one. */
    readonly clickhouseCode?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const isStorageError = (e: unknown): e is StorageError => e instanceof StorageError;

/** ClickHouse codes that mean "the engine is not there" rather than "your query is wrong". */
const UNAVAILABLE_CODES = new Set([
  3, // UNEXPECTED_END_OF_FILE
  159, // TIMEOUT_EXCEEDED
  160, // TOO_SLOW
  202, // TOO_MANY_SIMULTANEOUS_QUERIES
  209, // SOCKET_TIMEOUT
  210, // NETWORK_ERROR
  236, // ABORTED
  242, // TABLE_IS_READ_ONLY
  243, // NOT_ENOUGH_SPACE (disk full)
  252, // TOO_MANY_PARTS
  319, // UNKNOWN_STATUS_OF_INSERT
  394, // QUERY_WAS_CANCELLED
  425, // SYSTEM_ERROR
  999, // KEEPER_EXCEPTION
]);

/** Wraps anything thrown by a driver into a StorageError (idempotent). */
export function toStorageError(e: unknown, fallback: 'storage_unavailable' | 'storage_query_failed'): StorageError {
  if (e instanceof StorageError) return e;
  const raw = e instanceof Error ? e.message : String(e);
  const parsed = /Code: (\d+)\./.exec(raw);
  const own = (e as { code?: unknown } | null)?.code;
  const ch = (e as { clickhouseCode?: unknown } | null)?.clickhouseCode;
  const chCode =
    typeof ch === 'number' ? ch : typeof own === 'string' && /^\d+$/.test(own) ? Number(own) : parsed ? Number(parsed[1]) : undefined;
  const code = chCode !== undefined ? (UNAVAILABLE_CODES.has(chCode) ? 'storage_unavailable' : 'storage_query_failed') : fallback;
  const firstLine = raw.split('\n', 1)[0] ?? '';
  return new StorageError(code, firstLine.slice(0, 500), chCode, { cause: e });
}
