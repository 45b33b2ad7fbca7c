/**
 * Server adapter: a ClickHouse server or cluster over HTTP through @clickhouse/client.
 *
 * Durability settings sent with every request:
 * - `wait_end_of_query = 1`: the server answers only once the statement has finished, so a
 *   200 means the insert/DDL/mutation is done (and an error can't arrive after a 200).
 * - inserts: `async_insert = 0` (a server default of async inserts would ack before the
 *   write); with `cluster`, `insert_quorum = 'auto'` (a majority of replicas has the part
 *   before the ack). The batches table itself fsyncs each part (`fsync_after_insert`).
 * - mutations carry `mutations_sync = 2` / `lightweight_deletes_sync = 2` in their SQL: they
 *   return once every replica has applied them.
 * Credentials go in the Authorization header only, never in SQL or the URL.
 */
import { Readable } from 'node:stream';
import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client';
import { withinDeadline, type Connection } from './connection.js';
import { StorageError, toStorageError } from './errors.js';
import { createStore } from './repository.js';
import { checkIdentifier } from './schema.js';
import type { Params, Store } from './types.js';

export interface RemoteStoreOptions {
  url: string;
  database?: string;
  user?: string;
  password?: string;
  /** Cluster name for ON CLUSTER DDL and Replicated* engines (one shard, N replicas). */
  cluster?: string;
  /** Per-request timeout, ms (default 300 000: mutations with mutations_sync can be slow). */
  requestTimeout?: number;
}

const wrap = (e: unknown): StorageError => toStorageError(e, 'storage_unavailable');

class RemoteConnection implements Connection {
  readonly kind = 'remote' as const;
  readonly #insertSettings: ClickHouseSettings;

  /**
   * @param client runs everything with the store's database current.
   * @param outside has no database, for creating it (the server refuses a missing `database`).
   * @param state shared with every deadline view.
   * @param timeoutMs deadline of each call (0: only the client's request timeout); at the
   *   deadline the request is aborted (its connection closed) and the caller gets `storage_unavailable`.
   */
  constructor(
    private readonly client: ClickHouseClient,
    private readonly outside: ClickHouseClient,
    private readonly cluster: string | undefined,
    private readonly state = { closed: false },
    private readonly timeoutMs = 0,
    private readonly view = false,
  ) {
    this.#insertSettings = { wait_end_of_query: 1, async_insert: 0, ...(cluster ? { insert_quorum: 'auto' } : {}) };
  }

  #check(): void {
    if (this.state.closed) throw new StorageError('storage_unavailable', 'store is closed');
  }

  withDeadline(ms: number): Connection {
    return new RemoteConnection(this.client, this.outside, this.cluster, this.state, ms, true);
  }

  /** A server runs calls side by side: nothing to go before. */
  urgent(): Connection {
    return this;
  }

  callStats(): Record<string, never> {
    return {};
  }

  /** Runs one request within the deadline; an aborted request reads as the deadline's error. */
  async #call<T>(run: (signal?: AbortSignal) => Promise<T>): Promise<T> {
    this.#check();
    try {
      return await withinDeadline(this.timeoutMs, run);
    } catch (e) {
      throw wrap(e);
    }
  }

  query<T>(sql: string, params?: Params): Promise<T[]> {
    return this.#call(async (signal) => {
      const rs = await this.client.query({
        query: sql,
        query_params: params,
        format: 'JSONEachRow',
        clickhouse_settings: { wait_end_of_query: 1, output_format_json_quote_64bit_integers: 1 },
        abort_signal: signal,
      });
      return await rs.json<T>();
    });
  }

  queryBinary(sql: string, params?: Params): Promise<Uint8Array> {
    return this.#call(async (signal) => {
      // The client decodes no RowBinary: exec sends our FORMAT clause and hands back the body.
      // (`\n` so a trailing line comment cannot swallow it.)
      const rs = await this.client.exec({
        query: `${sql.trim().replace(/;+$/, '')}\nFORMAT RowBinary`,
        query_params: params,
        clickhouse_settings: { wait_end_of_query: 1 },
        abort_signal: signal,
      });
      const chunks: Buffer[] = [];
      for await (const c of rs.stream) chunks.push(c as Buffer);
      return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    });
  }

  #command(client: ClickHouseClient, sql: string, params?: Params): Promise<void> {
    return this.#call(async (signal) => {
      await client.command({ query: sql, query_params: params, clickhouse_settings: { wait_end_of_query: 1 }, abort_signal: signal });
    });
  }

  exec(sql: string, params?: Params): Promise<void> {
    return this.#command(this.client, sql, params);
  }

  execOutsideDatabase(sql: string): Promise<void> {
    return this.#command(this.outside, sql);
  }

  insert(table: string, columns: readonly string[], tsv: Buffer): Promise<void> {
    return this.#call(async (signal) => {
      await this.client.insert({
        table,
        columns: [...columns] as [string, ...string[]],
        values: Readable.from([tsv], { objectMode: false }),
        format: 'TabSeparated',
        clickhouse_settings: this.#insertSettings,
        abort_signal: signal,
      });
    });
  }

  async close(): Promise<void> {
    if (this.view || this.state.closed) return;
    this.state.closed = true;
    await Promise.all([this.client.close(), this.outside.close()]);
  }
}

export async function openRemoteStore(o: RemoteStoreOptions): Promise<Store> {
  const database = o.database ?? 'cipherstat';
  checkIdentifier('database', database);
  if (o.cluster !== undefined) checkIdentifier('cluster', o.cluster);
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new StorageError('storage_invalid_input', 'invalid ClickHouse URL');
  }
  // Credentials given in the URL move to the Authorization header like the others.
  const username = o.user ?? (decodeURIComponent(url.username) || 'default');
  const password = o.password ?? decodeURIComponent(url.password);
  url.username = '';
  url.password = '';
  const client = (db: string | undefined) =>
    createClient({
      url: url.toString(),
      database: db,
      username,
      password,
      application: 'cipherstat-collector',
      request_timeout: o.requestTimeout ?? 300_000,
      // Progress headers keep a long mutation's connection alive through load balancers.
      clickhouse_settings: { send_progress_in_http_headers: 1, http_headers_progress_interval_ms: '20000' },
      // Failures surface as StorageError to the caller, who logs them (the client would print
      // to the console on its own).
      log: { level: ClickHouseLogLevel.OFF },
    });
  return createStore(new RemoteConnection(client(database), client(undefined), o.cluster), { database, cluster: o.cluster });
}
