import type { z } from 'zod';
import { fromUtf8 } from '@cipherstat/protocol';
import { CollectorError, isCollectorError } from '../errors.js';

/** The request's Content-Length, or undefined when it has none (a chunked body). */
export function declaredLength(req: Request): number | undefined {
  const declared = req.headers.get('content-length');
  if (declared === null) return undefined;
  if (!/^\d+$/.test(declared)) throw new CollectorError(400, 'invalid_content_length', 'Content-Length is not a number');
  return Number(declared);
}

/**
 * Reads a request body with a byte cap and a deadline: a declared Content-Length over the
 * cap is refused before reading, a body that grows past it is cut off (413), and one that
 * trickles in slower than the deadline is abandoned (408). Nothing unbounded is buffered.
 * `onChunk` sees each chunk's size as it arrives and may refuse the rest by throwing.
 */
export async function readBody(req: Request, maxBytes: number, timeoutMs: number, onChunk?: (bytes: number) => void): Promise<Uint8Array> {
  const declared = declaredLength(req);
  if ((declared ?? 0) > maxBytes) throw new CollectorError(413, 'envelope_too_large', `body over ${maxBytes} bytes`);
  if (declared !== undefined && declared <= WHOLE_BODY_BYTES) return readDeclared(req, timeoutMs, onChunk);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    void reader.cancel().catch(() => {});
  }, timeoutMs);
  try {
    for (;;) {
      let step: ReadableStreamReadResult<Uint8Array>;
      try {
        step = await reader.read();
      } catch {
        if (timedOut) throw new CollectorError(408, 'body_timeout', `body not received within ${timeoutMs} ms`);
        throw new CollectorError(400, 'body_incomplete', 'the request body ended early');
      }
      if (timedOut) throw new CollectorError(408, 'body_timeout', `body not received within ${timeoutMs} ms`);
      if (step.done) break;
      total += step.value.length;
      try {
        if (total > maxBytes) throw new CollectorError(413, 'envelope_too_large', `body over ${maxBytes} bytes`);
        onChunk?.(step.value.length);
      } catch (e) {
        void reader.cancel().catch(() => {});
        throw e;
      }
      chunks.push(step.value);
    }
  } finally {
    clearTimeout(timer);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) (out.set(c, o), (o += c.length));
  return out;
}

/**
 * Bodies of at most this many declared bytes (a page view's batch is well under 2 KB) are read
 * whole: they arrive in one or two reads anyway; bigger ones chunk by chunk, each chunk counted
 * as it arrives (`onChunk`: the address's byte budget, cipherstat_ingest_body_bytes_total).
 */
const WHOLE_BODY_BYTES = 16 * 1024;

/**
 * A small body with a Content-Length (at most the cap: checked before): Node's HTTP parser
 * never delivers more than declared, so it is read whole — on @hono/node-server straight from
 * the socket's IncomingMessage, without the WHATWG Request and stream the `body` getter builds
 * (~11 % of the ingest thread's CPU in the storefront bench). The deadline still holds.
 */
async function readDeclared(req: Request, timeoutMs: number, onChunk?: (bytes: number) => void): Promise<Uint8Array> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new CollectorError(408, 'body_timeout', `body not received within ${timeoutMs} ms`)), timeoutMs);
  });
  let body: ArrayBuffer;
  try {
    body = await Promise.race([req.arrayBuffer(), late]);
  } catch (e) {
    if (isCollectorError(e)) throw e;
    throw new CollectorError(400, 'body_incomplete', 'the request body ended early');
  } finally {
    clearTimeout(timer);
  }
  onChunk?.(body.byteLength);
  return new Uint8Array(body);
}

/**
 * Reads a small JSON body (64 KiB, 10 s) and validates it with zod: 400 invalid_json or
 * invalid_request. `empty` is the value of an empty body; without it, an empty body is invalid_json.
 */
export async function readJson<T>(req: Request, schema: z.ZodType<T>, empty?: unknown): Promise<T> {
  const body = await readBody(req, 64 * 1024, 10_000);
  let value: unknown = empty;
  if (body.length || empty === undefined) {
    try {
      value = JSON.parse(fromUtf8(body));
    } catch {
      throw new CollectorError(400, 'invalid_json', 'the request body is not JSON');
    }
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const i = parsed.error.issues[0]!;
    throw new CollectorError(400, 'invalid_request', `${i.path.join('.') || 'body'}: ${i.message}`);
  }
  return parsed.data;
}
