/**
 * Serves the dashboard bundle (built by dashboard/rollup.dashboard.mjs into dist/dashboard)
 * and the security headers of everything a browser loads from the query role: a strict CSP
 * (no inline script or style, Trusted Types on), no framing, no referrer, nosniff, and HSTS
 * only on requests that arrived over TLS.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context, MiddlewareHandler } from 'hono';
import { secureHeaders } from 'hono/secure-headers';

/** `services/collector/dist/dashboard`, from both src/query (tests) and dist/query (builds). */
export const DEFAULT_DASHBOARD_DIR = fileURLToPath(new URL('../../dist/dashboard/', import.meta.url));

export const CONTENT_SECURITY_POLICY = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  // uPlot positions elements through CSSOM properties (el.style.x = …), which CSP allows.
  styleSrc: ["'self'"],
  imgSrc: ["'self'"],
  connectSrc: ["'self'"],
  fontSrc: ["'self'"],
  objectSrc: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"],
  requireTrustedTypesFor: ["'script'"],
  trustedTypes: ["'none'"],
};

const headers = secureHeaders({
  contentSecurityPolicy: CONTENT_SECURITY_POLICY,
  strictTransportSecurity: false, // set below, only over TLS
  xFrameOptions: 'DENY',
  referrerPolicy: 'no-referrer',
  xContentTypeOptions: 'nosniff',
  crossOriginResourcePolicy: 'same-origin',
  crossOriginOpenerPolicy: 'same-origin',
  permissionsPolicy: { camera: [], microphone: [], geolocation: [], payment: [], usb: [] },
});

/** Whether the request reached us over TLS (directly, or through a trusted proxy that says so). */
export function overTls(c: Context, trustProxy: boolean): boolean {
  if (new URL(c.req.url).protocol === 'https:') return true;
  return trustProxy && (c.req.header('x-forwarded-proto') ?? '').split(',')[0]!.trim().toLowerCase() === 'https';
}

export function securityHeaders(trustProxy: boolean): MiddlewareHandler {
  return async (c, next) => {
    await headers(c, next);
    if (overTls(c, trustProxy)) c.header('Strict-Transport-Security', 'max-age=31536000; includeSubDomains');
  };
}

interface StaticFile {
  body: Uint8Array;
  type: string;
  etag: string;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The bundle, read into memory once it exists (a build after start is picked up). */
export class DashboardFiles {
  private files: Map<string, StaticFile> | undefined;
  private checkedAt = 0;

  constructor(readonly dir: string = DEFAULT_DASHBOARD_DIR) {}

  get(path: string): StaticFile | undefined {
    if (!this.files && Date.now() - this.checkedAt > 1000) this.load();
    return this.files?.get(path);
  }

  private load(): void {
    this.checkedAt = Date.now();
    try {
      statSync(join(this.dir, 'index.html'));
    } catch {
      return;
    }
    const files = new Map<string, StaticFile>();
    const add = (urlPath: string, file: string) => {
      const ext = file.slice(file.lastIndexOf('.'));
      const type = TYPES[ext];
      if (!type) return;
      const body = new Uint8Array(readFileSync(file));
      files.set(urlPath, { body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
    };
    add('/', join(this.dir, 'index.html'));
    let assets: string[] = [];
    try {
      assets = readdirSync(join(this.dir, 'assets'));
    } catch {
      /* no assets */
    }
    for (const name of assets) if (SAFE_NAME.test(name)) add(`/assets/${name}`, join(this.dir, 'assets', name));
    this.files = files;
  }
}

/** GET handler for `/` and `/assets/:name`. */
export function serveDashboard(files: DashboardFiles): (c: Context) => Response {
  return (c) => {
    const path = c.req.path === '/' || c.req.path === '/index.html' ? '/' : c.req.path;
    const f = files.get(path);
    if (!f) {
      if (path === '/') return c.text('The dashboard is not built. Run `npm run build`.', 503);
      return c.text('not found', 404);
    }
    // Hashed asset names never change content; the page itself is revalidated every time.
    c.header('Cache-Control', path === '/' ? 'no-cache' : 'public, max-age=31536000, immutable');
    c.header('ETag', f.etag);
    if (c.req.header('if-none-match') === f.etag) return c.body(null, 304);
    c.header('Content-Type', f.type);
    return c.body(f.body as Uint8Array<ArrayBuffer>);
  };
}
