/**
 * A small fake collector on node:http (127.0.0.1, random port) that really opens
 * envelopes with the protocol: outer layer with its transport key, inner layer with the
 * account key. It dedupes by batch id like the real one, speaks CORS, and can be told to
 * answer the next requests differently (503 + Retry-After, 410, …).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hpkeOpen, inflateRaw } from '@cipherstat/protocol/node';
import { FLAG_DEFLATE, fromTextForm, keyPair, openEnvelope, openInner, randomBytes, toBase64, toHex, type KeyPair, type Point } from '@cipherstat/protocol';

export interface Received {
  method: string;
  path: string;
  contentType: string;
  /** Raw body bytes (binary POST) or the decoded text form (beacon). */
  body: Uint8Array;
  at: number;
}

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export const ACCOUNT_ID = 'acct_test_0001';

/** The collector's logic without a socket: `handle()` answers one request. */
export function fakeCollector(opts: { prefix?: string } = {}) {
  const account = keyPair();
  let transport = { keyId: toHex(randomBytes(8)), pair: keyPair() };
  const retired = new Map<string, KeyPair>();
  const requests: Received[] = [];
  /** batch id → points (stored once). */
  const batches = new Map<string, Point[]>();
  /** batch id → times received (including duplicates). */
  const deliveries = new Map<string, number>();
  const errors: string[] = [];
  /** Scripted answers for the next POST /v1/batches requests (undefined = normal;
   * status 0 = network failure, in-process only). */
  const script: (Reply | undefined)[] = [];
  const prefix = opts.prefix ?? '';

  const cors = {
    'access-control-allow-origin': '*',
    'access-control-allow-methods': 'GET, POST',
    'access-control-allow-headers': 'content-type',
    'access-control-expose-headers': 'retry-after',
    'access-control-max-age': '600',
  };
  const fail = (status: number, code: string): Reply => ({ status, body: { error: { code, message: code } } });

  function ingest(bytes: Uint8Array | null): Reply {
    if (!bytes) return fail(400, 'not_an_envelope');
    const now = Date.now();
    const env = openEnvelope(bytes, { keys: (id) => (id === transport.keyId ? transport.pair : retired.get(id)), now, hpke: hpkeOpen, flags: FLAG_DEFLATE });
    if (!env.ok) return fail(400, env.code);
    const { header, inner, version, flags } = env.value;
    if (header.accountId !== ACCOUNT_ID) return fail(404, 'unknown_account');
    deliveries.set(header.batchId, (deliveries.get(header.batchId) ?? 0) + 1);
    if (batches.has(header.batchId)) return { status: 202, body: { batchId: header.batchId, duplicate: true } };
    const opened = openInner(inner, { account, accountId: header.accountId, batchId: header.batchId, count: header.count, now, version, hpke: hpkeOpen, flags, inflate: inflateRaw });
    if (!opened.ok) {
      errors.push(opened.code);
      return fail(400, opened.code);
    }
    if (opened.value.rejects.length) errors.push(...opened.value.rejects.map((r) => r.code));
    batches.set(header.batchId, opened.value.points);
    return { status: 202, body: { batchId: header.batchId } };
  }

  function handle(method: string, path: string, contentType: string, raw: Uint8Array): Reply {
    if (method === 'OPTIONS') return { status: 204 };
    if (method === 'GET' && path === prefix + '/v1/collector-key') {
      requests.push({ method, path, contentType, body: raw, at: Date.now() });
      // cacheable like the real collector's: the Library must revalidate after a rotation
      return { status: 200, headers: { 'cache-control': 'public, max-age=300' }, body: { keyId: transport.keyId, publicKey: toBase64(transport.pair.publicKey) } };
    }
    if (method === 'POST' && path === prefix + '/v1/batches') {
      const body = contentType.startsWith('text/plain') ? fromTextForm(Buffer.from(raw).toString('latin1')) : raw;
      requests.push({ method, path, contentType, body: body ?? raw, at: Date.now() });
      return script.shift() ?? ingest(body);
    }
    return fail(404, 'not_found');
  }

  return {
    handle,
    cors,
    prefix,
    accountId: ACCOUNT_ID,
    writeKey: toBase64(account.publicKey),
    get collectorKey() {
      return { keyId: transport.keyId, publicKey: toBase64(transport.pair.publicKey) };
    },
    requests,
    batches,
    deliveries,
    errors,
    script,
    posts: () => requests.filter((r) => r.method === 'POST'),
    keyFetches: () => requests.filter((r) => r.method === 'GET').length,
    /** All points stored, in arrival order. */
    points: () => [...batches.values()].flat(),
    /** Rotates the transport key; the old one becomes unknown unless `overlap`. */
    rotate(overlap = false) {
      if (overlap) retired.set(transport.keyId, transport.pair);
      transport = { keyId: toHex(randomBytes(8)), pair: keyPair() };
    },
    /** Resolves when `n` distinct batches were stored, or rejects after `ms`. */
    async waitForBatches(n: number, ms = 10_000) {
      const end = Date.now() + ms;
      while (batches.size < n) {
        if (Date.now() > end) throw new Error(`expected ${n} batches, got ${batches.size}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

export type FakeCollector = ReturnType<typeof fakeCollector>;

/** The fake collector behind a real HTTP server on 127.0.0.1. */
export async function startCollector(opts: { prefix?: string } = {}) {
  const core = fakeCollector(opts);
  /** Optional static files (path → content) served by the same server. */
  let files: Record<string, { type: string; body: string | Uint8Array }> = {};
  /** Every request that reached the socket, preflights included. */
  const hits: string[] = [];
  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = (req.url ?? '').split('?')[0]!;
    hits.push(`${req.method} ${path}`);
    if (req.method === 'GET' && path in files) {
      res.writeHead(200, { 'content-type': files[path]!.type, 'cache-control': 'no-store' });
      return res.end(files[path]!.body);
    }
    const r = core.handle(req.method ?? '', path, req.headers['content-type'] ?? '', new Uint8Array(Buffer.concat(chunks)));
    res.writeHead(r.status, { ...core.cors, 'content-type': 'application/json', ...r.headers });
    res.end(r.body === undefined ? '' : JSON.stringify(r.body));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return Object.assign(core, {
    hits,
    origin,
    endpoint: origin + core.prefix,
    serve(f: typeof files) {
      files = f;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

export type Collector = Awaited<ReturnType<typeof startCollector>>;

/**
 * The fake collector as an in-process `fetch` (no socket): for tests on fake timers.
 * A scripted reply with status 0 is a network failure (fetch rejects).
 */
export function inProcess(opts: { prefix?: string } = {}) {
  const core = fakeCollector(opts);
  const endpoint = 'https://collector.test' + core.prefix;
  const calls: { url: string; init?: RequestInit; at: number }[] = [];
  const fetch = async (url: string, init?: RequestInit): Promise<Response> => {
    calls.push({ url, init, at: Date.now() });
    const u = new URL(url);
    const body = init?.body;
    const raw = body instanceof Uint8Array ? body : new Uint8Array();
    const headers = new Headers(init?.headers);
    if (core.script[0]?.status === 0 && init?.method === 'POST') {
      core.script.shift();
      throw new TypeError('fetch failed');
    }
    const r = core.handle(init?.method ?? 'GET', u.pathname, headers.get('content-type') ?? '', raw);
    return new Response(r.body === undefined ? null : JSON.stringify(r.body), { status: r.status, headers: r.headers });
  };
  return Object.assign(core, { endpoint, fetch, calls });
}
