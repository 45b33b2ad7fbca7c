/**
 * CORS of the ingest surface (`/v1/batches`, `/v1/collector-key`): any origin may talk to it (a
 * batch's origin is checked per account, routes.ts), and browsers may read Retry-After (the
 * Library honours it). Preflights are hono/cors's. Other requests get the same headers as
 * hono/cors gives them, set with `c.header()` before the handler runs: hono/cors sets them on
 * `c.res`, which builds a Response (and its Headers) for every request before the handler builds
 * its own, and Hono then copies the first one's headers into it — ~13 µs of the ingest thread
 * per batch, in-process (bench: most of what CORS cost; the plaintext baseline has no CORS).
 */
import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';

export function ingestCors(): MiddlewareHandler {
  const preflight = cors({ origin: (o) => o, allowMethods: ['GET', 'POST', 'OPTIONS'], allowHeaders: ['Content-Type'], exposeHeaders: ['Retry-After'], maxAge: 86400 });
  return async (c, next) => {
    if (c.req.method === 'OPTIONS') return preflight(c, next);
    const origin = c.req.header('origin');
    if (origin) c.header('Access-Control-Allow-Origin', origin);
    c.header('Access-Control-Expose-Headers', 'Retry-After');
    c.header('Vary', 'Origin');
    await next();
  };
}
