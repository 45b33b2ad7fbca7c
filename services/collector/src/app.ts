/**
 * The HTTP edge: routes, auth, CORS and the mapping of every error to
 * `{ error: { code, message } }` with a stable code.
 */
import { createRequire } from 'node:module';
import { Hono } from 'hono';
import { toBase64 } from '@cipherstat/protocol';
import { CollectorError, isCollectorError } from './errors.js';
import { clientAddressOf } from './ingest/admission.js';
import { registerIngestRoutes } from './ingest/routes.js';
import { ingestCors } from './ingest/cors.js';
import { registerAdminRoutes } from './accounts/routes.js';
import type { Services } from './services.js';
import { StorageError } from './storage/index.js';
import { isDiskFull } from './disk.js';
import { registerLifecycleRoutes } from './lifecycle/index.js';
import { prometheusError, registerQueryRoutes } from './query/index.js';
import { registerScriptRoutes } from './script.js';
import { openApiDocument } from './openapi.js';

/** This package's version (services/collector/package.json, from src/ and dist/ alike). */
const PACKAGE_VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export function createApp(s: Services): Hono {
  const app = new Hono();
  const { metrics, log } = s;
  const logStorageFailure = s.storageFailureLog;
  const clientAddress = clientAddressOf(s.config.trustProxy);
  /** Ingest requests whose account is known: a refusal of one is counted for that account. */
  const batchAccount = new WeakMap<Request, string>();

  app.use('*', async (c, next) => {
    await next();
    metrics.requests.inc({ route: c.req.routePath || 'unmatched', status: String(c.res.status) });
  });

  app.onError((err, c) => {
    let e: CollectorError;
    if (isCollectorError(err)) e = err;
    else if (err instanceof StorageError || isDiskFull(err)) {
      // Storage refused, timed out or is full (a disk-full message names the file and the free space).
      logStorageFailure(err.message, (suppressed) => log.error({ err: err.message, route: c.req.routePath, suppressed }, 'storage call failed: 503 storage_unavailable'));
      e = new CollectorError(503, 'storage_unavailable', 'storage is unavailable; retry later', 5);
    } else {
      log.error({ err: err.message, route: c.req.routePath }, 'unhandled error');
      e = new CollectorError(500, 'internal_error', 'internal error');
    }
    if (e.retryAfter !== undefined) c.header('Retry-After', String(e.retryAfter));
    const refused = batchAccount.get(c.req.raw);
    // (a batch for a deleted account is counted as late_batch_dropped where it is refused)
    if (refused && e.code !== 'account_deleted') {
      metrics.batchRejects.inc({ code: e.code });
      s.refusals.record(refused, e.code, e.message, c.req.header('origin'));
    }
    if (c.req.path.startsWith('/prometheus/')) return prometheusError(c, e); // Grafana reads Prometheus's envelope
    return c.json({ error: { code: e.code, message: e.message } }, e.status as 400);
  });
  app.notFound((c) => c.json({ error: { code: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` } }, 404));

  // Ops
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const ready = await s.ready();
    return c.json(ready, ready.ready ? 200 : 503);
  });
  let openapi: string | undefined;
  app.get('/openapi.json', (c) => {
    openapi ??= JSON.stringify(openApiDocument(PACKAGE_VERSION));
    c.header('Content-Type', 'application/json');
    return c.body(openapi);
  });
  app.get('/metrics', async (c) => {
    c.header('Content-Type', metrics.registry.contentType);
    return c.body(await metrics.registry.metrics());
  });

  // Ingest surface: any origin may talk to it; per-account origins are enforced per batch.
  const open = ingestCors();
  app.use('/v1/collector-key', open);
  app.use('/v1/batches', open);

  if (s.roles.ingest) {
    registerScriptRoutes(app, s.script);

    app.get('/v1/collector-key', (c) => {
      const k = s.keyring.currentTransportKey();
      c.header('Cache-Control', 'public, max-age=300');
      return c.json({ keyId: k.keyId, publicKey: toBase64(k.publicKey) });
    });

    registerIngestRoutes(app, s, { clientAddress, batchAccount });
  }

  // Admin: not on internet-facing ingest-only nodes.
  if (!s.roles.process && !s.roles.query) return app;
  registerAdminRoutes(app, s, clientAddress);
  registerLifecycleRoutes(app, s);
  if (s.roles.query) {
    // Storage migrated by a newer collector: answers by older rules could be wrong (schema-gate.ts).
    for (const path of ['/v1/query', '/v1/metrics', '/prometheus/*']) {
      app.use(path, async (_c, next) => {
        await s.schemaGate.check();
        await next();
      });
    }
    registerQueryRoutes(app, s, s.queryCache);
  }

  return app;
}

