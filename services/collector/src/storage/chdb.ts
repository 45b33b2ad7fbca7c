/**
 * Embedded adapter: chDB (in-process ClickHouse) on one data directory. Every call is async
 * (runs on libuv's pool, never on the event loop). chDB binds one data directory per
 * process: a second store at another path in the same process fails with storage_unavailable.
 *
 * The engine runs one statement at a time per session (a second call waits inside chDB until
 * the first ends). So calls wait here instead, in the `CallLane` (lane.ts): one at a time, those
 * of an `urgent()` view (ingest's group commit, whose 202 waits for them) before the waiting
 * calls of the others (at most URGENT_IN_A_ROW in a row while one of those waits), and each
 * call's wait and run time counted by kind (`callStats`).
 */
import { mkdir, open as openFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Session, drainPending, type ChdbResult } from 'chdb';
import { withinDeadline, type Connection } from './connection.js';
import { CallLane, callKind, type WaitObserver } from './lane.js';
import { StorageError, toStorageError } from './errors.js';
import { createStore } from './repository.js';
import { checkIdentifier } from './schema.js';
import type { Params, Store } from './types.js';

export interface ChdbStoreOptions {
  /** The service data directory; the engine keeps its files in `${dataDir}/clickhouse`. */
  dataDir: string;
  database?: string;
}

/** chDB's connection errors mean unavailable; the rest come from the engine. */
const DOWN = new Set(['CHDB_CLOSED', 'CHDB_CONNECTION', 'CHDB_ABORT', 'CHDB_TIMEOUT']);
const wrap = (e: unknown): StorageError =>
  toStorageError(e, DOWN.has(String((e as { code?: unknown } | null)?.code)) ? 'storage_unavailable' : 'storage_query_failed');

function parseJsonEachRow<T>(text: string): T[] {
  const body = text.trimEnd();
  return body === '' ? [] : (JSON.parse(`[${body.split('\n').join(',')}]`) as T[]);
}

const MUTATION_ENTRY = /^mutation_\d+\.txt$/;
const MUTATION_HEADER = 'format version: 1\n';

/**
 * Removes torn mutation entries from the engine's tables (`store/<xyz>/<uuid>/mutation_N.txt`
 * that do not begin with their format line) and returns their paths. ClickHouse writes a
 * mutation's entry file in place; a mutation started on a full disk (a DELETE that failed with
 * ENOSPC) can leave it empty, and the engine then refuses to attach the whole table at every
 * start ("Cannot attach table ... expected 'format version: 1'"). Such an entry was never
 * written, so its statement failed and was never acknowledged: the collector repeats what it
 * needs (a failed tick's or a crash's rows are deleted again by recovery at start).
 */
export async function removeTornMutationEntries(path: string): Promise<string[]> {
  const removed: string[] = [];
  const list = async (dir: string) => readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const shard of await list(join(path, 'store'))) {
    if (!shard.isDirectory()) continue;
    for (const table of await list(join(path, 'store', shard.name))) {
      if (!table.isDirectory()) continue;
      const dir = join(path, 'store', shard.name, table.name);
      for (const f of await list(dir)) {
        if (!f.isFile() || !MUTATION_ENTRY.test(f.name)) continue;
        const file = join(dir, f.name);
        const fh = await openFile(file, 'r');
        const head = Buffer.alloc(MUTATION_HEADER.length);
        const { bytesRead } = await fh.read(head, 0, head.length, 0).finally(() => fh.close());
        if (head.subarray(0, bytesRead).toString('latin1') === MUTATION_HEADER) continue;
        await rm(file);
        removed.push(file);
      }
    }
  }
  return removed;
}

class ChdbConnection implements Connection {
  readonly kind = 'chdb' as const;

  /**
   * @param held the session and its lane, shared with every view (session null once closed).
   * @param timeoutMs deadline of each call (0: none), its wait in the lane included. A call
   *   still waiting at its deadline never runs; chDB cannot cancel a running statement: at the
   *   deadline the caller gets `storage_unavailable` and the statement runs on unobserved.
   * @param urgent this view's calls go before the waiting calls of non-urgent views.
   */
  private constructor(
    private readonly held: { session: Session | null; lane: CallLane },
    private readonly timeoutMs = 0,
    private readonly view = false,
    private readonly urgentCalls = false,
  ) {}

  /** Opens the data directory with `database` current (created if missing: it costs nothing here). */
  static async open(path: string, database: string): Promise<ChdbConnection> {
    let session: Session;
    for (const file of await removeTornMutationEntries(path)) {
      process.emitWarning(`removed a torn mutation entry (written on a full disk; the engine could not attach its table): ${file}`);
    }
    try {
      session = new Session(path, { connectionArgs: ['--output_format_json_quote_64bit_integers=1', '--async_load_databases=0'] });
    } catch (e) {
      throw new StorageError('storage_unavailable', `cannot open chDB at ${path}: ${(e as Error).message}`, undefined, { cause: e });
    }
    const conn = new ChdbConnection({ session, lane: new CallLane() });
    try {
      await conn.execOutsideDatabase(`CREATE DATABASE IF NOT EXISTS ${database}`);
      await conn.exec(`USE ${database}`);
    } catch (e) {
      await conn.close();
      throw e;
    }
    return conn;
  }

  #open(): Session {
    const s = this.held.session;
    if (!s?.open) throw new StorageError('storage_unavailable', 'store is closed');
    return s;
  }

  withDeadline(ms: number): Connection {
    return new ChdbConnection(this.held, ms, true, this.urgentCalls);
  }

  urgent(): Connection {
    return new ChdbConnection(this.held, this.timeoutMs, true, true);
  }

  callStats() {
    return this.held.lane.stats();
  }

  /** `call` through the lane, within this view's deadline. */
  async #call<T>(kind: string, call: (s: Session) => Promise<T>, onWait?: WaitObserver): Promise<T> {
    this.#open();
    try {
      return await withinDeadline(this.timeoutMs, (signal) => this.held.lane.run(kind, this.urgentCalls, () => call(this.#open()), signal, onWait));
    } catch (e) {
      throw wrap(e);
    }
  }

  #run(sql: string, params: Params | undefined, format: string, onWait?: WaitObserver): Promise<ChdbResult> {
    return this.#call(callKind(sql), (s) => (params && Object.keys(params).length > 0 ? s.queryBindAsync(sql, params, { format }) : s.queryAsync(sql, { format })), onWait);
  }

  async query<T>(sql: string, params?: Params, onWait?: WaitObserver): Promise<T[]> {
    return parseJsonEachRow<T>((await this.#run(sql, params, 'JSONEachRow', onWait)).text());
  }

  async queryBinary(sql: string, params?: Params, onWait?: WaitObserver): Promise<Uint8Array> {
    // No copy needed: the addon copies the engine's output into a JS-owned Buffer
    // (napi_create_buffer_copy), which stays valid after later queries and close().
    return (await this.#run(sql, params, 'RowBinary', onWait)).bytes();
  }

  async exec(sql: string, params?: Params): Promise<void> {
    await this.#run(sql, params, 'TabSeparated');
  }

  async insert(table: string, columns: readonly string[], tsv: Buffer): Promise<void> {
    await this.#call(`insert ${table.slice(table.lastIndexOf('.') + 1)}`, (s) => s.insert({ table, columns, values: tsv, format: 'TabSeparated' }));
  }

  execOutsideDatabase(sql: string): Promise<void> {
    return this.exec(sql);
  }

  async close(): Promise<void> {
    if (this.view) return;
    const s = this.held.session;
    this.held.session = null;
    s?.close();
    // close() defers the native teardown behind running operations; wait for it, so the
    // directory can be opened again at once.
    await drainPending();
  }
}

export async function openChdbStore({ dataDir, database = 'cipherstat' }: ChdbStoreOptions): Promise<Store> {
  checkIdentifier('database', database);
  const path = join(dataDir, 'clickhouse');
  await mkdir(path, { recursive: true });
  return createStore(await ChdbConnection.open(path, database), { database });
}
