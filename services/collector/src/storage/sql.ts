/**
 * What the repositories of this folder share: the connection, table names in the store's
 * database, TSV inserts, list parameters cut to fit one statement, and the conversions of
 * read values. Values always travel as bound parameters ({name:Type}) or in an insert's TSV
 * body, never inside SQL.
 */
import type { Connection } from './connection.js';
import { tsv } from './tsv.js';

export type Raw = Record<string, unknown>;

/** One store's handle for its repositories. */
export interface Db {
  conn: Connection;
  /** `database.table` of the store. */
  t(name: string): string;
  insert<R>(table: string, columns: readonly string[], rows: readonly R[], fields: (r: R) => (string | Buffer)[]): Promise<void>;
  /** Inserts a TSV payload built elsewhere (a worker thread) for `columns`. */
  insertBody(table: string, columns: readonly string[], body: Uint8Array): Promise<void>;
  /** `xs` cut into runs that fit one list parameter of a statement on this connection. */
  chunks<T>(xs: readonly T[], text: (x: T) => string): T[][];
}

export function createDb(conn: Connection, database: string): Db {
  const t = (name: string): string => `${database}.${name}`;
  return {
    conn,
    t,
    insert: async (table, columns, rows, fields) => {
      if (rows.length > 0) await conn.insert(t(table), columns, await tsv(rows, fields));
    },
    insertBody: async (table, columns, body) => {
      if (body.length > 0) await conn.insert(t(table), columns, Buffer.from(body.buffer, body.byteOffset, body.byteLength));
    },
    chunks: (xs, text) => chunkList(xs, text, LIST_PARAM_BYTES[conn.kind]),
  };
}

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

export const unique = (xs: string[]): string[] => [...new Set(xs)];
// Aliases are camelCase on purpose: an alias equal to a column name would shadow the column
// in WHERE/ORDER BY (ClickHouse resolves aliases first).
export const ms = (col: string, alias: string): string => `toUnixTimestamp64Milli(${col}) AS ${alias}`;
export const num = (v: unknown): number => Number(v);
export const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
export const fromBase64 = (v: unknown): Uint8Array => new Uint8Array(Buffer.from(String(v), 'base64'));
/** A bound epoch-ms parameter as a UTC DateTime64. */
export const at = (param: string): string => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;
