/**
 * The admin surface: the admin token check (limited per address), the proof a CLI asks for
 * before it sends the token, and the account routes (create, list, show). Lifecycle routes
 * (lifecycle/routes.ts) sit behind the same check.
 */
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { fromBase64 } from '@cipherstat/protocol';
import { CollectorError } from '../errors.js';
import { readJson } from '../ingest/body.js';
import { adminProof, tokenMatches } from '../keyring/index.js';
import type { Logger } from '../logger.js';
import type { Accounts } from './accounts.js';
import type { Lifecycle } from '../lifecycle/index.js';
import { accountDetails, accountView } from '../lifecycle/routes.js';
import type { AuthFailures } from '../ingest/admission.js';
import type { Refusals } from '../ingest/refusals.js';
import type { Store } from '../storage/index.js';
import type { ScriptBuild } from '../script.js';

/** What the admin routes need (a slice of the process's services). */
export interface AdminDeps {
  log: Logger;
  accounts: Accounts;
  lifecycle: Lifecycle;
  refusals: Refusals;
  store: Pick<Store, 'rejects'>;
  authFailures: AuthFailures;
  adminTokenHash: string;
  script: ScriptBuild | undefined;
}

function bearer(c: Context): string {
  const h = c.req.header('authorization') ?? '';
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (!m) throw new CollectorError(401, 'unauthorized', 'missing bearer token');
  return m[1]!;
}

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
  ready: z.object({
    ready: z.boolean(),
    storage: z.boolean(),
    schemaVersion: z.number().describe("storage's schema version; above this collector's own (then ready is false): a newer collector migrated storage"),
  }),
  collectorKey: z.object({ keyId: z.string(), publicKey: z.string() }),
  batch: z.object({ batchId: z.string(), duplicate: z.boolean() }),
  adminProof: z.object({ proof: z.string() }),
  created: z.object({
    accountId: z.string(),
    writeKey: z.string(),
    readToken: z.string(),
    collectorKey: z.object({ keyId: z.string(), publicKey: z.string() }),
    script: z
      .object({
        path: z.string(),
        integrity: z.string(),
        storefront: z.object({ path: z.string(), integrity: z.string() }).optional().describe('the storefront build (autocapture, Web Vitals, commerce helpers)'),
      })
      .optional()
      .describe('where this collector serves the script build (for a ready-to-paste tag)'),
  }),
  accounts: z.object({ accounts: z.array(accountView) }),
  account: accountDetails,
};

/** Registers `POST /v1/admin-proof` and the admin-only account routes under `/v1/accounts`. */
export function registerAdminRoutes(app: Hono, s: AdminDeps, clientAddress: (c: Context) => string | undefined): void {
  const { log } = s;
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
    const sf = s.script?.storefrontTag;
    const script = s.script && { path: s.script.immutablePath, integrity: s.script.integrity, ...(sf ? { storefront: { path: sf.immutablePath, integrity: sf.integrity } } : {}) };
    return c.json({ ...created, script }, 201);
  });
  app.get('/v1/accounts', async (c) => {
    const rows = await s.accounts.list();
    return c.json({ accounts: await Promise.all(rows.map((r) => s.accounts.view(r))) });
  });
  app.get('/v1/accounts/:id', async (c) => {
    const row = await s.accounts.fresh(c.req.param('id'));
    if (!row) throw new CollectorError(404, 'account_not_found', 'no such account');
    // Refusals not written yet included, read beside no flush (refusals.ts `counted`).
    return c.json(await s.lifecycle.describe(row, (id) => s.refusals.counted(id, () => s.store.rejects(id))));
  });
}
