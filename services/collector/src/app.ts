/**
 * The HTTP edge: routes, auth, CORS and the mapping of every error to
 * `{ error: { code, message } }` with a stable code.
 */
import { createRequire } from 'node:module';
import { Hono, type Context } from 'hono';
import { cors } from 'hono/cors';
import { z } from 'zod';
import { base64DecodedLength, fromBase64, fromUtf8, INFO_INNER, innerAad, openEnvelope, openSeal, toBase64, VERSION_2 } from '@cipherstat/protocol';
import { hpkeOpen, nodeX25519 } from '@cipherstat/protocol/node';
import { CollectorError, isCollectorError } from './errors.js';
import { declaredLength, readBody, readJson } from './body.js';
import { clientAddressOf, textFormBytes, type Ticket } from './admission.js';
import type { Services } from './services.js';
import { adminProof, tokenMatches } from './keyring/index.js';
import { StorageError } from './storage/index.js';
import { isDiskFull } from './disk.js';
import { everyFewSeconds } from './logger.js';
import { registerLifecycleRoutes } from './lifecycle/index.js';
import { accountDetails, accountView } from './lifecycle/routes.js';
import { prometheusError, registerQueryRoutes } from './query/index.js';
import { addCounts } from './refusals.js';
import { registerScriptRoutes } from './script.js';
import { openApiDocument } from './openapi.js';

/** Retry-After (s) for a deactivated account: senders ask again hourly at most. */
const DEACTIVATED_RETRY_AFTER_S = 3600;

/**
 * A batch of a wiped account that none of its key pairs opens: sealed to a write key the wipe
 * destroyed (or garbage, which nobody can tell apart from it any more). Only wiped accounts
 * (oldest key version above 1) pay this X25519, and only where this process holds the keys;
 * elsewhere the processor counts the batch under the same code.
 */
function staleWriteKey(s: Services, accountId: string, batchId: string, version: number, inner: Uint8Array): boolean {
  let keys: ReturnType<Services['keyring']['accountKeys']>;
  try {
    keys = s.keyring.accountKeys(accountId);
  } catch {
    return false;
  }
  if (!keys?.length || keys[0]!.version === 1) return false;
  const opens = version === VERSION_2 ? (k: (typeof keys)[number]) => hpkeOpen(k, INFO_INNER, innerAad(accountId, batchId), inner).ok : (k: (typeof keys)[number]) => openSeal(inner, k, nodeX25519).ok;
  return !keys.some(opens);
}

/** The envelope in a text/plain body: strict base64, sized from its length before decoding. */
function fromText(body: Uint8Array, maxBytes: number): Uint8Array {
  let text: string;
  try {
    text = fromUtf8(body).trim();
  } catch {
    text = '!';
  }
  const length = base64DecodedLength(text);
  if (length < 0) throw new CollectorError(400, 'invalid_base64', 'text/plain bodies must be standard base64 of an envelope');
  if (length > maxBytes) throw new CollectorError(413, 'envelope_too_large', `envelope over ${maxBytes} bytes`);
  return fromBase64(text)!;
}

function bearer(c: Context): string {
  const h = c.req.header('authorization') ?? '';
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (!m) throw new CollectorError(401, 'unauthorized', 'missing bearer token');
  return m[1]!;
}

/** This package's version (services/collector/package.json, from src/ and dist/ alike). */
const PACKAGE_VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

export const adminProofBody = z.object({ challenge: z.string().length(44).refine((v) => fromBase64(v)?.length === 32, '32 bytes of base64') }).strict();

export const createAccountBody = z.object({
  name: z.string().max(200).optional(),
  allowedOrigins: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'an origin like https://shop.example')).max(50).optional(),
  retentionDays: z.number().int().min(1).max(3650).optional(),
  confidential: z.boolean().optional(),
}).strict();

// ---- responses (described in /openapi.json; services/collector/test/openapi.test.ts validates recorded answers)
export const APP_RESPONSES = {
  health: z.object({ status: z.literal('ok') }),
  ready: z.object({ ready: z.boolean(), storage: z.boolean(), schemaVersion: z.number() }),
  collectorKey: z.object({ keyId: z.string(), publicKey: z.string() }),
  batch: z.object({ batchId: z.string(), duplicate: z.boolean() }),
  adminProof: z.object({ proof: z.string() }),
  created: z.object({
    accountId: z.string(),
    writeKey: z.string(),
    readToken: z.string(),
    collectorKey: z.object({ keyId: z.string(), publicKey: z.string() }),
    script: z.object({ path: z.string(), integrity: z.string() }).optional().describe('where this collector serves the script build (for a ready-to-paste tag)'),
  }),
  accounts: z.object({ accounts: z.array(accountView) }),
  account: accountDetails,
};

export function createApp(s: Services): Hono {
  const app = new Hono();
  const { metrics, log } = s;
  const logStorageFailure = everyFewSeconds();
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
  const open = cors({ origin: (o) => o, allowMethods: ['GET', 'POST', 'OPTIONS'], allowHeaders: ['Content-Type'], exposeHeaders: ['Retry-After'], maxAge: 86400 });
  app.use('/v1/collector-key', open);
  app.use('/v1/batches', open);

  if (s.roles.ingest) {
    registerScriptRoutes(app, s.script);

    app.get('/v1/collector-key', (c) => {
      const k = s.keyring.currentTransportKey();
      c.header('Cache-Control', 'public, max-age=300');
      return c.json({ keyId: k.keyId, publicKey: toBase64(k.publicKey) });
    });

    app.post('/v1/batches', async (c) => {
      // Admission before work: the address pays for the request and its bytes before the body
      // is read, decoded or opened, whatever becomes of it.
      const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
      const text = type === 'text/plain';
      const maxBytes = text ? textFormBytes(s.config.maxBodyBytes) : s.config.maxBodyBytes;
      let ticket: Ticket | undefined;
      let opened: ReturnType<typeof openEnvelope>;
      let bytes: Uint8Array;
      const now = s.now();
      try {
        try {
          ticket = s.admission.admit(clientAddress(c), declaredLength(c.req.raw), maxBytes);
          if (!text && type !== 'application/octet-stream') {
            throw new CollectorError(415, 'unsupported_media_type', 'send application/octet-stream, or text/plain with base64');
          }
          const body = await readBody(c.req.raw, maxBytes, s.config.bodyTimeoutMs, (n) => {
            metrics.ingestBodyBytes.inc(n);
            ticket!.onBytes(n);
          });
          bytes = text ? fromText(body, s.config.maxBodyBytes) : body;
        } catch (e) {
          // Refused with its body (maybe) unread: close the connection rather than drain it.
          c.header('Connection', 'close');
          if (isCollectorError(e)) metrics.batchRejects.inc({ code: e.code });
          throw e;
        }
        s.fairness.checkGlobal(); // truly overloaded: say so before spending an X25519 on the envelope
        metrics.ingestOpenedBytes.inc(bytes.length);
        opened = openEnvelope(bytes, { keys: (id) => s.keyring.transportKey(id), now, x25519: nodeX25519, hpke: hpkeOpen });
      } finally {
        ticket?.release();
      }
      if (!opened.ok) {
        metrics.batches.inc({ outcome: 'rejected' });
        metrics.batchRejects.inc({ code: opened.code });
        throw new CollectorError(opened.code === 'envelope_too_large' ? 413 : 400, opened.code, opened.message);
      }
      const { header, inner, version } = opened.value;
      const account = await s.accounts.get(header.accountId);
      if (!account) throw new CollectorError(401, 'unknown_account', 'no such account');
      batchAccount.set(c.req.raw, account.accountId);
      if (account.state === 'shredded') {
        metrics.batches.inc({ outcome: 'dropped' });
        metrics.batchRejects.inc({ code: 'account_deleted' });
        s.refusals.record(account.accountId, 'late_batch_dropped', 'the account was deleted', c.req.header('origin')); // counted in memory, written once per interval
        throw new CollectorError(410, 'account_deleted', 'this account was deleted; it never accepts data again');
      }
      if (account.state !== 'active') {
        // Restorable: not 410. Senders keep what they queued and ask again later (Retry-After).
        metrics.batches.inc({ outcome: 'dropped' });
        throw new CollectorError(503, 'account_deactivated', 'this account is deactivated (restorable); try again later', DEACTIVATED_RETRY_AFTER_S);
      }
      // Acknowledge only what can be kept: a batch for an account whose key entry cannot be
      // read would wait unprocessed; refused (503) until the entry is readable again. Checked
      // where this node also processes: an ingest-only node may hold a keyring without account
      // entries (README); what it acknowledges for such an account waits, never dropped.
      if (s.roles.process) {
        const keys = s.accounts.keys(account.accountId, { refusing: true }); // 503 counted by onError
        if (!keys) {
          // Tombstoned: the shred is being finished (the lifecycle's next pass).
          metrics.batches.inc({ outcome: 'dropped' });
          metrics.batchRejects.inc({ code: 'account_deleted' });
          throw new CollectorError(410, 'account_deleted', 'this account no longer accepts data');
        }
      }
      const origin = c.req.header('origin');
      if (origin && account.allowedOrigins.length && !account.allowedOrigins.includes(origin)) {
        throw new CollectorError(403, 'origin_not_allowed', 'this origin may not send data to this account');
      }
      // A batch already stored is acknowledged again without spending anyone's budget, so a
      // replayed envelope cannot drain an account's rate limit.
      if (s.writer.seen(header.accountId, header.batchId)) {
        metrics.batches.inc({ outcome: 'duplicate' });
        return c.json({ batchId: header.batchId, duplicate: true }, 202);
      }
      // The sender address paid at admission; now the account.
      const wait = s.rateLimiter.take(account.accountId);
      if (wait) throw new CollectorError(429, 'rate_limited', 'too many batches for this account', wait);
      // What this batch will cost processing, charged to its account (fairness.ts).
      s.fairness.admit(account.accountId, { bytes: bytes.length, points: header.count });
      if (staleWriteKey(s, account.accountId, header.batchId, version, inner)) {
        metrics.batches.inc({ outcome: 'rejected' });
        // counted per account and in Prometheus by the error handler, like every refusal
        throw new CollectorError(400, 'stale_write_key', 'sealed to a write key this account no longer has (it was wiped): use the new write key');
      }
      const outcome = await s.writer.submit({
        accountId: header.accountId,
        batchId: header.batchId,
        receivedAt: now,
        createdAt: header.createdAt,
        pointCount: header.count,
        sdk: header.sdk,
        version,
        sealed: inner,
        expiresAt: now + account.retentionDays * 86_400_000,
      });
      metrics.batches.inc({ outcome: outcome === 'stored' ? 'accepted' : 'duplicate' });
      if (outcome === 'stored') metrics.envelopes.inc({ version: String(version) });
      return c.json({ batchId: header.batchId, duplicate: outcome === 'duplicate' }, 202);
    });
  }

  // Admin: not on internet-facing ingest-only nodes.
  if (!s.roles.process && !s.roles.query) return app;
  const admin = async (c: Context, next: () => Promise<void>) => {
    const ip = clientAddress(c);
    s.authFailures.check(ip);
    if (!tokenMatches(bearer(c), s.adminTokenHash)) {
      s.authFailures.failed(ip);
      throw new CollectorError(401, 'unauthorized', 'invalid admin token');
    }
    await next();
  };
  // Before the CLI sends the admin token, the server proves it holds that token's hash
  // (limited per address like the other authentication paths: each answer is keyed by it).
  app.post('/v1/admin-proof', async (c) => {
    s.authFailures.proof(clientAddress(c));
    const { challenge } = await readJson(c.req.raw, adminProofBody);
    return c.json({ proof: adminProof(s.adminTokenHash, fromBase64(challenge)!) });
  });
  app.use('/v1/accounts', admin);
  app.use('/v1/accounts/*', admin);

  app.post('/v1/accounts', async (c) => {
    const input = await readJson(c.req.raw, createAccountBody, {});
    const created = await s.accounts.create(input);
    log.info({ accountId: created.accountId }, 'account created');
    // where this collector serves the script build, for a ready-to-paste snippet
    const script = s.script && { path: s.script.immutablePath, integrity: s.script.integrity };
    return c.json({ ...created, script }, 201);
  });
  app.get('/v1/accounts', async (c) => {
    const rows = await s.accounts.list();
    return c.json({ accounts: await Promise.all(rows.map((r) => s.accounts.view(r))) });
  });
  app.get('/v1/accounts/:id', async (c) => {
    const row = await s.accounts.fresh(c.req.param('id'));
    if (!row) throw new CollectorError(404, 'account_not_found', 'no such account');
    const described = await s.lifecycle.describe(row);
    return c.json({ ...described, rejects: addCounts(described.rejects, s.refusals.pending(row.accountId)) });
  });
  registerLifecycleRoutes(app, s);
  if (s.roles.query) registerQueryRoutes(app, s, s.queryCache);

  return app;
}

