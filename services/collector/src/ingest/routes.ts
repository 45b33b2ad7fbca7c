/**
 * Ingest: `POST /v1/batches`. Admission per sender address before the body is read, the outer
 * layer opened, the account's state, origin, rate and fairness budget checked, then the
 * still-sealed inner layer handed to the writer's group commit; 202 once it is durable.
 */
import { createHash } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { base64DecodedLength, FLAG_DEFLATE, fromBase64, fromUtf8, INFO_INNER, innerAad, openEnvelope, openSeal, VERSION_2 } from '@cipherstat/protocol';
import { hpkeOpen, rawX25519 } from '../x25519.js';
import { FifoMap } from '../fifo-map.js';
import { CollectorError, isCollectorError } from '../errors.js';
import type { Config } from '../config.js';
import type { Metrics } from '../metrics.js';
import type { AccountKeys, Keyring } from '../keyring/index.js';
import type { Accounts } from '../accounts/accounts.js';
import { declaredLength, readBody } from './body.js';
import { textFormBytes, type Admission, type Ticket } from './admission.js';
import type { Fairness } from './fairness.js';
import type { RateLimiter } from './rate-limit.js';
import type { BatchWriter } from './writer.js';
import type { Refusals } from './refusals.js';
import type { Visitors, VisitorRequest } from './visitors.js';

/** What the ingest route needs (a slice of the process's services). */
export interface IngestDeps {
  config: Pick<Config, 'maxBodyBytes' | 'bodyTimeoutMs'>;
  metrics: Metrics;
  keyring: Keyring;
  accounts: Accounts;
  admission: Admission;
  fairness: Fairness;
  rateLimiter: RateLimiter;
  writer: BatchWriter;
  refusals: Refusals;
  visitors: Visitors;
  roles: { process: boolean };
  now: () => number;
}

/** Envelopes refused as `overloaded` for their account that are remembered (their digest and account): ~100 bytes each. */
export const REFUSED_ENVELOPES = 20_000;

/** The digest an envelope is remembered by once refused: SHA-256 of all its bytes, so only the very same envelope matches. */
const envelopeDigest = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('base64');

/** Retry-After (s) for a deactivated account: senders ask again hourly at most. */
const DEACTIVATED_RETRY_AFTER_S = 3600;

/**
 * A batch of a wiped account that none of its key pairs opens: sealed to a write key the wipe
 * destroyed (or garbage, which nobody can tell apart from it any more). Only wiped accounts
 * (oldest key version above 1) pay this X25519, and only where this process holds the keys;
 * elsewhere the processor counts the batch under the same code.
 */
function staleWriteKey(keys: AccountKeys[] | undefined, accountId: string, batchId: string, version: number, flags: number, inner: Uint8Array): boolean {
  if (!keys?.length || keys[0]!.version === 1) return false;
  const opens = version === VERSION_2 ? (k: AccountKeys) => hpkeOpen(k, INFO_INNER, innerAad(accountId, batchId, flags), inner).ok : (k: AccountKeys) => openSeal(inner, k, rawX25519).ok;
  return !keys.some(opens);
}

/**
 * The batch's visitor hash sealed to the account's current public key (ingest/visitors.ts), or
 * undefined: not a browser's request, or this node holds no key entry for the account (an
 * ingest-only node without account entries stores the batch without a visitor).
 */
function sealVisitor(s: IngestDeps, keys: AccountKeys[] | undefined, accountId: string, batchId: string, r: VisitorRequest): Uint8Array | undefined {
  const current = keys?.[keys.length - 1];
  return current ? s.visitors.seal(accountId, batchId, current.publicKey, r) : undefined;
}

/** The keys this node holds for an account that is not required to have them here (a node that does not process), or undefined. */
function heldKeys(s: IngestDeps, accountId: string): AccountKeys[] | undefined {
  try {
    return s.keyring.accountKeys(accountId);
  } catch {
    return undefined;
  }
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

/**
 * Registers `POST /v1/batches`. `batchAccount` records the account of a request once it is
 * known, so the app's error handler counts a refusal for that account.
 */
export function registerIngestRoutes(
  app: Hono,
  s: IngestDeps,
  { clientAddress, batchAccount }: { clientAddress: (c: Context) => string | undefined; batchAccount: WeakMap<Request, string> },
): void {
  const { metrics } = s;
  // A batch refused because its account is behind in processing comes back as the very same
  // bytes (the Library stores the sealed envelope and resends it after Retry-After). Its account
  // is known from the open that refused it, kept here in memory only (never in clear on the
  // wire); while that account is still behind, the resend is refused before its X25519 open.
  // Looked up only while something is remembered.
  const refused = new FifoMap<string, string>(REFUSED_ENVELOPES);
  app.post('/v1/batches', async (c) => {
    // Admission before work: the address pays for the request and its bytes before the body
    // is read, decoded or opened, whatever becomes of it.
    const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    const text = type === 'text/plain';
    const maxBytes = text ? textFormBytes(s.config.maxBodyBytes) : s.config.maxBodyBytes;
    let ticket: Ticket | undefined;
    let opened: ReturnType<typeof openEnvelope>;
    let bytes: Uint8Array;
    let digest: string | undefined;
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
      try {
        s.fairness.checkGlobal(); // truly overloaded: say so before spending an X25519 on the envelope
      } catch (e) {
        if (isCollectorError(e)) metrics.batchRejects.inc({ code: e.code }); // no account known yet: the service-wide count only
        throw e;
      }
      digest = refused.size ? envelopeDigest(bytes) : undefined;
      const behind = digest === undefined ? undefined : refused.get(digest);
      if (behind !== undefined) {
        try {
          s.fairness.checkLag(behind); // throws while the account is still behind
        } catch (e) {
          batchAccount.set(c.req.raw, behind); // counted for its account, like any refusal
          throw e;
        }
        refused.delete(digest!); // caught up: this resend goes the whole way
      }
      metrics.ingestOpenedBytes.inc(bytes.length);
      opened = openEnvelope(bytes, { keys: (id) => s.keyring.transportKey(id), now, x25519: rawX25519, hpke: hpkeOpen, flags: FLAG_DEFLATE });
    } finally {
      ticket?.release();
    }
    if (!opened.ok) {
      metrics.batches.inc({ outcome: 'rejected' });
      metrics.batchRejects.inc({ code: opened.code });
      throw new CollectorError(opened.code === 'envelope_too_large' ? 413 : 400, opened.code, opened.message);
    }
    const { header, inner, version, flags } = opened.value;
    const account = await s.accounts.get(header.accountId);
    if (!account) {
      metrics.batchRejects.inc({ code: 'unknown_account' });
      throw new CollectorError(401, 'unknown_account', 'no such account');
    }
    batchAccount.set(c.req.raw, account.accountId);
    /** A batch for a deleted account: dropped, counted for the account (in memory, written once per interval) and service-wide. */
    const late = (message: string) => {
      metrics.batches.inc({ outcome: 'dropped' });
      metrics.batchRejects.inc({ code: 'account_deleted' });
      s.refusals.record(account.accountId, 'late_batch_dropped', 'the account was deleted', c.req.header('origin'));
      return new CollectorError(410, 'account_deleted', message);
    };
    if (account.state === 'shredded') throw late('this account was deleted; it never accepts data again');
    if (account.state !== 'active') {
      // Restorable: not 410. Senders keep what they queued and ask again later (Retry-After).
      metrics.batches.inc({ outcome: 'dropped' });
      throw new CollectorError(503, 'account_deactivated', 'this account is deactivated (restorable); try again later', DEACTIVATED_RETRY_AFTER_S);
    }
    // Acknowledge only what can be kept: a batch for an account whose key entry cannot be
    // read would wait unprocessed; refused (503) until the entry is readable again. Checked
    // where this node also processes: an ingest-only node may hold a keyring without account
    // entries (README); what it acknowledges for such an account waits, never dropped.
    // The keys are asked for once per request: the checks below use these.
    const keys = s.roles.process ? s.accounts.keys(account.accountId, { refusing: true }) /* 503 counted by onError */ : heldKeys(s, account.accountId);
    if (s.roles.process) {
      if (!keys) {
        // Tombstoned: the shred is being finished (the lifecycle's next pass, or another node's
        // shred seen through the shared keyring before this node's account state): dropped and
        // counted for the account like a batch to a shredded one.
        throw late('this account no longer accepts data');
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
    try {
      s.fairness.admit(account.accountId, { bytes: bytes.length, points: header.count });
    } catch (e) {
      if (isCollectorError(e) && e.code === 'overloaded') refused.set(digest ?? envelopeDigest(bytes), account.accountId);
      throw e;
    }
    if (staleWriteKey(keys, account.accountId, header.batchId, version, flags, inner)) {
      metrics.batches.inc({ outcome: 'rejected' });
      // counted per account and in Prometheus by the error handler, like every refusal
      throw new CollectorError(400, 'stale_write_key', 'sealed to a write key this account no longer has (it was wiped): use the new write key');
    }
    const visitor = sealVisitor(s, keys, account.accountId, header.batchId, { address: clientAddress(c), userAgent: c.req.header('user-agent'), origin });
    const outcome = await s.writer.submit({
      accountId: header.accountId,
      batchId: header.batchId,
      receivedAt: now,
      createdAt: header.createdAt,
      pointCount: header.count,
      sdk: header.sdk,
      version,
      ...(flags ? { flags } : {}),
      sealed: inner,
      ...(visitor ? { visitor } : {}),
      expiresAt: now + account.retentionDays * 86_400_000,
      // Handed to processing with the batch: its tick does not wait for account state.
      seen: s.accounts.seen(account.accountId) || { retentionDays: account.retentionDays, confidential: account.confidential, at: now },
    });
    metrics.batches.inc({ outcome: outcome === 'stored' ? 'accepted' : 'duplicate' });
    if (outcome === 'stored') metrics.envelopes.inc({ version: String(version) });
    return c.json({ batchId: header.batchId, duplicate: outcome === 'duplicate' }, 202);
  });
}
