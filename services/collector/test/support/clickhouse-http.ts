/**
 * A test-only ClickHouse HTTP endpoint backed by chDB, enough of
 * https://clickhouse.com/docs/interfaces/http for @clickhouse/client: the query in the
 * `query` URL parameter and/or the body, INSERT data in the body, `database`,
 * `default_format`, `param_*`, settings as URL parameters, gzip both ways, `/ping`,
 * X-ClickHouse-* headers and ClickHouse-shaped errors.
 *
 * Each request runs on its own chDB session (sessions at one path share the data and are
 * cheap), so its settings and `SET param_*` bindings never leak into another request.
 * Parameters are handed to the engine verbatim, as the server does: the engine parses each
 * `param_x` with the escaped text format of the placeholder's type. Limits as a server's:
 * every URL field (a parameter) at most `http_max_field_value_size` (128 KiB), the URL at
 * most `http_max_uri_size` (1 MiB), and `max_query_size` (256 KiB unless the request sets it)
 * applies to the query text only, not to the parameters (they are not parsed as SQL).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync, gzipSync } from 'node:zlib';
import { Session, drainPending } from 'chdb';

export interface ClickHouseHttp {
  url: string;
  /** Every statement received, with its parameters (to check what reaches "the server"). */
  requests: { query: string; params: Record<string, string> }[];
  close(): Promise<void>;
}

export interface ClickHouseHttpOptions {
  dataDir: string;
  /** When set, requests must authenticate as this user (Basic, X-ClickHouse-* or URL). */
  user?: string;
  password?: string;
  /** How long an idle keep-alive connection stays open (Node's default 5 s; a test whose client is paused longer sets more). */
  keepAliveTimeoutMs?: number;
}

const VERSION = '26.7.2.1-chdb-shim';
/** The server's defaults: http_max_field_value_size, http_max_uri_size, max_query_size. */
const MAX_FIELD_VALUE = 128 * 1024;
const MAX_URI = 1024 * 1024;
const MAX_QUERY_SIZE = 256 * 1024;

/** Settings that belong to the HTTP layer, not the engine. */
const HTTP_ONLY = new Set([
  'query', 'database', 'default_format', 'query_id', 'session_id', 'session_timeout', 'session_check', 'user', 'password',
  'quota_key', 'role', 'compress', 'decompress', 'buffer_size', 'wait_end_of_query', 'enable_http_compression',
  'http_zlib_compression_level', 'send_progress_in_http_headers', 'http_headers_progress_interval_ms',
  'http_response_buffer_size', 'http_wait_end_of_query', 'http_native_compression_disable_checksumming_on_decompress',
]);

/** A few of ClickHouse's exception code to HTTP status mappings. */
function httpStatus(code: number): number {
  if ([516, 192, 193, 194, 195].includes(code)) return 401;
  if ([60, 81, 46].includes(code)) return 404;
  if ([62, 115, 27, 26, 6, 36, 38, 41, 43, 44, 47, 53, 69, 72, 117, 130, 456, 457].includes(code)) return 400;
  if (code === 48) return 501;
  return 500;
}

class HttpError extends Error {
  constructor(
    readonly ch: number,
    message: string,
    readonly status = httpStatus(ch),
  ) {
    super(message);
  }
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const sqlString = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
// `INSERT INTO t [(cols)] [SETTINGS ...] FORMAT F`, as @clickhouse/client writes it.
const INSERT_RE = /^\s*INSERT\s+INTO\s+([A-Za-z0-9_.]+)\s*(?:\(([^)]*)\))?\s*FORMAT\s+(\w+)\s*$/i;
const RAW_FORMATS = new Set(['JSONEachRow', 'JSONCompactEachRow', 'CSV', 'CSVWithNames', 'TSV', 'TabSeparated', 'TSVWithNames', 'TabSeparatedWithNames']);

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  const enc = req.headers['content-encoding'];
  if (!enc) return body;
  if (enc === 'gzip') return gunzipSync(body);
  throw new HttpError(48, `Unknown Content-Encoding: ${enc}`);
}

function credentials(req: IncomingMessage, q: URLSearchParams): { user: string; password: string } {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Basic ')) {
    const [user = '', ...rest] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':');
    return { user, password: rest.join(':') };
  }
  const user = req.headers['x-clickhouse-user'] ?? q.get('user') ?? 'default';
  const password = req.headers['x-clickhouse-key'] ?? q.get('password') ?? '';
  return { user: String(user), password: String(password) };
}

export async function startClickHouseHttp(options: ClickHouseHttpOptions): Promise<ClickHouseHttp> {
  const { dataDir } = options;
  // The long-lived session holds the process's data directory binding.
  const main = new Session(dataDir, { connectionArgs: ['--async_load_databases=0'] });
  const requests: ClickHouseHttp['requests'] = [];

  async function run(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if ((req.url ?? '').length > MAX_URI) throw new HttpError(1000, 'HTML Form Exception: URI too long. (POCO_EXCEPTION)', 414);
    const url = new URL(req.url ?? '/', 'http://localhost');
    const q = url.searchParams;
    for (const [k, v] of q) {
      if (Buffer.byteLength(v) > MAX_FIELD_VALUE) throw new HttpError(1000, `HTML Form Exception: Field value too long (${k}). (POCO_EXCEPTION)`, 400);
    }
    if (url.pathname === '/ping' || (url.pathname === '/' && req.method === 'GET' && !q.has('query'))) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=UTF-8' }).end('Ok.\n');
      return;
    }
    if (url.pathname !== '/') throw new HttpError(0, `There is no handle ${url.pathname}`, 404);
    if (options.user !== undefined) {
      const c = credentials(req, q);
      if (c.user !== options.user || c.password !== (options.password ?? '')) {
        throw new HttpError(516, `${c.user}: Authentication failed: password is incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)`);
      }
    }
    if (String(req.headers['content-type'] ?? '').startsWith('multipart/')) throw new HttpError(48, 'multipart parameters are not supported by the shim (NOT_IMPLEMENTED)');

    const body = await readBody(req);
    const urlQuery = q.get('query') ?? '';
    const insert = urlQuery && body.length > 0 ? INSERT_RE.exec(urlQuery) : null;
    const sql = insert ? urlQuery : urlQuery ? (body.length ? `${urlQuery}\n${body.toString('utf8')}` : urlQuery) : body.toString('utf8');
    if (!sql.trim()) throw new HttpError(62, 'Empty query. (SYNTAX_ERROR)');

    const params: Record<string, string> = {};
    const sets: string[] = [];
    let maxQuerySize = String(MAX_QUERY_SIZE);
    for (const [k, v] of q) {
      if (k === 'max_query_size') {
        maxQuerySize = v; // set after the parameters (below)
        continue;
      }
      if (k.startsWith('param_')) {
        if (!IDENT.test(k.slice(6))) throw new HttpError(36, `Bad parameter name ${k}. (BAD_ARGUMENTS)`);
        params[k.slice(6)] = v;
        sets.push(`${k} = ${sqlString(v)}`);
      } else if (!HTTP_ONLY.has(k)) {
        if (!IDENT.test(k)) throw new HttpError(115, `Unknown setting ${k}. (UNKNOWN_SETTING)`);
        sets.push(`${k} = ${sqlString(v)}`);
      }
    }
    requests.push({ query: sql, params });

    const queryId = q.get('query_id') || randomUUID();
    // The SET that binds the parameters is not the query: it may be as long as the URL allows;
    // max_query_size then applies to the query text, as on a server.
    const session = new Session(dataDir, { connectionArgs: [`--max_query_size=${4 * MAX_URI}`] });
    let out: Uint8Array;
    let summary: Record<string, string>;
    try {
      if (sets.length) await session.queryAsync(`SET ${sets.join(', ')}`);
      await session.queryAsync(`SET max_query_size = ${sqlString(maxQuerySize)}`);
      const database = q.get('database');
      if (database) {
        if (!IDENT.test(database)) throw new HttpError(81, `Database ${database} does not exist. (UNKNOWN_DATABASE)`);
        await session.queryAsync(`USE ${database}`);
      }
      if (insert) {
        const [, table = '', cols, format = ''] = insert;
        if (!RAW_FORMATS.has(format)) throw new HttpError(48, `Format ${format} is not supported by the shim. (NOT_IMPLEMENTED)`);
        const columns = cols?.split(',').map((c) => c.trim().replace(/^`|`$/g, ''));
        const r = await session.insert({ table, values: body, format: format as 'TabSeparated', ...(columns ? { columns } : {}) });
        out = new Uint8Array(0);
        summary = { read_rows: String(r.rowsWritten), read_bytes: String(r.bytesSent), written_rows: String(r.rowsWritten), written_bytes: String(r.bytesWritten), result_rows: '0', result_bytes: '0' };
      } else {
        const r = await session.queryAsync(sql, { format: q.get('default_format') ?? 'TabSeparated' });
        out = r.bytes();
        summary = { read_rows: String(r.rowsRead), read_bytes: String(r.bytesRead), written_rows: '0', written_bytes: '0', result_rows: '0', result_bytes: String(out.length) };
      }
    } finally {
      session.close();
    }
    const headers: Record<string, string> = {
      'Content-Type': 'text/plain; charset=UTF-8',
      'X-ClickHouse-Query-Id': queryId,
      'X-ClickHouse-Format': /FORMAT\s+(\w+)\s*;?\s*$/i.exec(sql)?.[1] ?? q.get('default_format') ?? 'TabSeparated',
      'X-ClickHouse-Timezone': 'UTC',
      'X-ClickHouse-Server-Display-Name': 'chdb-shim',
      'X-ClickHouse-Summary': JSON.stringify({ ...summary, total_rows_to_read: '0', elapsed_ns: '0' }),
    };
    let payload = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    if (q.get('enable_http_compression') === '1' && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) {
      payload = gzipSync(payload);
      headers['Content-Encoding'] = 'gzip';
    }
    res.writeHead(200, headers).end(payload);
  }

  const server = createServer({ maxHeaderSize: 1 << 20 }, (req, res) => {
    run(req, res).catch((e: unknown) => {
      const message = e instanceof Error ? e.message : String(e);
      const code = e instanceof HttpError ? e.ch : Number((e as { clickhouseCode?: unknown }).clickhouseCode ?? /Code: (\d+)\./.exec(message)?.[1] ?? 1001);
      const text = /^Code: \d+\./.test(message) ? message : `Code: ${code}. DB::Exception: ${message}`;
      const status = e instanceof HttpError ? e.status : httpStatus(code);
      if (res.headersSent) return void res.destroy();
      res
        .writeHead(status, { 'Content-Type': 'text/plain; charset=UTF-8', 'X-ClickHouse-Exception-Code': String(code) })
        .end(`${text} (version ${VERSION})\n`);
    });
  });
  if (options.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = options.keepAliveTimeoutMs;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      main.close();
      await drainPending();
    },
  };
}
