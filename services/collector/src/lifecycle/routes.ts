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
import { readJson } from '../body.js';
import type { Lifecycle } from './lifecycle.js';

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
