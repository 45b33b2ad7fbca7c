/**
 * Admin routes of the account lifecycle. Registered after the admin-token middleware of
 * `/v1/accounts/*` in app.ts, so every route here needs the admin token.
 *
 *   DELETE /v1/accounts/:id[?graceDays=N][&now=true]  deactivate (or shred now)
 *   POST   /v1/accounts/:id/restore                    undo inside the grace period
 *   POST   /v1/accounts/:id/wipe                       fresh keys, all data so far destroyed
 *   PATCH  /v1/accounts/:id {name?, confidential?, retentionDays?, allowedOrigins?}
 *   POST   /v1/accounts/:id/read-token                 a new read token; the old one is refused at once
 *   GET    /v1/accounts/:id/verify                     proof that a shred worked
 */
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { ACCOUNT_ID_PATTERN } from '@cipherstat/protocol';
import { CollectorError } from '../errors.js';
import { readJson } from '../ingest/body.js';
import type { Lifecycle } from './lifecycle.js';

// ---- responses (described in /openapi.json; services/collector/test/openapi.test.ts validates recorded answers)
const iso = z.string().describe('ISO 8601 instant');
const perTable = z.object({ batches: z.number(), processed: z.number(), rollups: z.number(), dictionary: z.number(), rejects: z.number(), accounts: z.number() });
/** What admins see of an account (accounts/accounts.ts AccountView): never the token hash, never a key. */
export const accountView = z.object({
  accountId: z.string(),
  name: z.string(),
  state: z.enum(['active', 'deactivated', 'shredded', 'key_unavailable']),
  createdAt: iso,
  deactivatedAt: iso.nullable(),
  shredAfter: iso.nullable(),
  shreddedAt: iso.nullable(),
  allowedOrigins: z.array(z.string()),
  retentionDays: z.number(),
  confidential: z.boolean(),
  writeKey: z.string().nullable(),
  keyProblem: z.object({ file: z.string(), reason: z.string(), since: iso, refusedBatches: z.number() }).nullable(),
});
/** GET /v1/accounts/:id: the view plus reject counts, rows held and the purge's progress. */
export const accountDetails = accountView.extend({
  rejects: z.record(z.string(), z.number()),
  rows: perTable,
  purge: z.object({ complete: z.boolean(), pendingRows: z.number(), tables: perTable }).nullable(),
});
const deactivated = z.object({ accountId: z.string(), state: z.literal('deactivated'), deactivatedAt: iso, shredAfter: iso, graceDays: z.number() });
const shredded = z.object({
  accountId: z.string(),
  state: z.literal('shredded'),
  deactivatedAt: iso.nullable(),
  tombstonedAt: iso,
  shreddedAt: iso,
  destroyed: z.array(z.string()),
  caches: z.array(z.string()),
  rowsToPurge: perTable,
  purge: z.enum(['pending', 'complete']),
});
const trial = z.object({ remaining: z.number(), tried: z.number(), opened: z.number() });
export const LIFECYCLE_RESPONSES = {
  delete: z.union([deactivated, shredded]),
  restore: accountView,
  wipe: z.object({
    accountId: z.string(),
    wipedAt: iso,
    keyVersion: z.number(),
    destroyedKeyVersions: z.array(z.number()),
    deleted: z.object({ batches: z.number(), rollups: z.number(), dictionary: z.number() }),
    writeKey: z.string(),
  }),
  readToken: z.object({ accountId: z.string(), readToken: z.string() }),
  verify: z.object({
    accountId: z.string(),
    verifiedAt: iso,
    state: z.enum(['active', 'deactivated', 'shredded', 'unknown']),
    ok: z.boolean(),
    problems: z.array(z.string()),
    keyring: z.object({
      accountFile: z.boolean(),
      tombstone: z.object({ present: z.boolean(), tombstonedAt: iso.nullable() }),
      filesScanned: z.number(),
      filesMentioningAccount: z.array(z.string()),
    }),
    keysTried: z.object({ dataKeys: z.number(), keyPairs: z.number() }),
    decryption: z.object({ rollups: trial, dictionary: trial, batches: trial }),
    rowsRemaining: perTable,
    purge: z.enum(['pending', 'complete']),
  }),
};

export const settingsBody = z
  .object({
    name: z.string().max(200).optional(),
    confidential: z.boolean().optional(),
    retentionDays: z.number().int().min(1).max(3650).optional(),
    allowedOrigins: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'an origin like https://shop.example')).max(50).optional(),
  })
  .strict();

function accountId(c: Context): string {
  const id = c.req.param('id') ?? '';
  if (!ACCOUNT_ID_PATTERN.test(id)) throw new CollectorError(404, 'account_not_found', 'no such account');
  return id;
}

const flag = (v: string | undefined) => v !== undefined && ['', '1', 'true', 'yes'].includes(v.toLowerCase());

export function registerLifecycleRoutes(app: Hono, s: { lifecycle: Lifecycle }): void {
  const l = s.lifecycle;

  app.delete('/v1/accounts/:id', async (c) => {
    const grace = c.req.query('graceDays');
    const graceDays = grace === undefined ? undefined : Number(grace);
    if (graceDays !== undefined && !(grace !== '' && graceDays >= 0 && graceDays <= 3650)) {
      throw new CollectorError(400, 'invalid_request', 'graceDays must be a number within 0..3650');
    }
    return c.json(await l.deactivate(accountId(c), { graceDays, immediately: flag(c.req.query('now')) }));
  });

  app.post('/v1/accounts/:id/restore', async (c) => c.json(await l.restore(accountId(c))));
  app.post('/v1/accounts/:id/wipe', async (c) => c.json(await l.wipe(accountId(c))));
  app.post('/v1/accounts/:id/read-token', async (c) => c.json(await l.rotateReadToken(accountId(c))));
  app.get('/v1/accounts/:id/verify', async (c) => c.json(await l.verify(accountId(c))));

  app.patch('/v1/accounts/:id', async (c) => {
    const id = accountId(c);
    const settings = await readJson(c.req.raw, settingsBody);
    return c.json(await l.update(id, settings));
  });
}
