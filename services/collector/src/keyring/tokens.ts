/**
 * Read and admin tokens: 256 random bits, base64url, with a kind prefix. Only the hex
 * SHA-256 is ever stored or kept in memory; comparison is constant time.
 *
 * Crypto policy note: SHA-256, HMAC-SHA-256 and timingSafeEqual come from node:crypto (allowed
 * for token hashing, comparison and the admin proof only); the randomness comes from the protocol wrapper.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { KeyringError } from './errors.js';
import { atomicWrite, errno } from './fsutil.js';
import type { KeyringLog } from './master-key.js';

export type TokenKind = 'read' | 'admin';

export const TOKEN_BYTES = 32;
const PREFIX: Record<TokenKind, string> = { read: 'csr_', admin: 'csa_' };
const TOKEN = /^cs([ra])_[A-Za-z0-9_-]{43}$/;
/** Shortest CIPHERSTAT_ADMIN_TOKEN accepted from the environment. */
export const MIN_ADMIN_TOKEN_LENGTH = 32;

const base64url = (bytes: Uint8Array): string => toBase64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

export function newToken(kind: TokenKind): string {
  return PREFIX[kind] + base64url(randomBytes(TOKEN_BYTES));
}

/** The kind of a well-formed generated token, else undefined. */
export function tokenKind(token: string): TokenKind | undefined {
  const m = TOKEN.exec(token);
  return m ? (m[1] === 'r' ? 'read' : 'admin') : undefined;
}

/** Lowercase hex SHA-256 of the token's UTF-8 bytes. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant time in the token's content; false for a malformed hash. */
export function tokenMatches(token: string, hash: string): boolean {
  if (typeof token !== 'string' || typeof hash !== 'string') return false;
  const valid = /^[0-9a-fA-F]{64}$/.test(hash);
  const expected = valid ? Buffer.from(hash, 'hex') : Buffer.alloc(32);
  const same = timingSafeEqual(Buffer.from(hashToken(token), 'hex'), expected);
  return valid && same;
}

/**
 * The collector's answer to a CLI's random `challenge`: HMAC-SHA-256 keyed with the admin
 * token's hash. Only a server that holds the hash of the very token the CLI is about to send
 * can compute it, and it reveals neither the token nor its hash.
 */
export function adminProof(tokenHash: string, challenge: Uint8Array): string {
  return createHmac('sha256', Buffer.from(tokenHash, 'hex')).update('cipherstat admin proof v1\0').update(challenge).digest('hex');
}

export interface AdminToken {
  hash: string;
  /** The token file, when the token came from one. */
  path?: string;
  /** True when this call created the token file. */
  generated: boolean;
}

/**
 * CIPHERSTAT_ADMIN_TOKEN, else `${dataDir}/admin.token` (created on first start, mode
 * 0600). Logs where the token is, never the token. Returns only its hash.
 */
export function loadAdminToken({
  dataDir,
  adminToken,
  log,
}: {
  dataDir: string;
  /** CIPHERSTAT_ADMIN_TOKEN (config.ts `loadSecrets`). */
  adminToken?: string;
  log: KeyringLog;
}): AdminToken {
  const fromEnv = adminToken?.trim();
  if (fromEnv) {
    if (fromEnv.length < MIN_ADMIN_TOKEN_LENGTH) {
      throw new KeyringError('admin_token_invalid', `CIPHERSTAT_ADMIN_TOKEN must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters`);
    }
    log.info({ source: 'env' }, 'admin token from CIPHERSTAT_ADMIN_TOKEN');
    return { hash: hashToken(fromEnv), generated: false };
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const path = resolve(join(dataDir, 'admin.token'));
  const generated = atomicWrite(path, newToken('admin') + '\n', true) !== undefined;
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new KeyringError('admin_token_invalid', `cannot read ${path}: ${errno(e) ?? 'error'}`, { cause: e });
  }
  if (token.length < MIN_ADMIN_TOKEN_LENGTH) throw new KeyringError('admin_token_invalid', `${path} holds no valid token`);
  if (generated) log.warn({ path }, `generated an admin token in ${path} (mode 0600); read it from that file`);
  else {
    if (process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) {
      log.warn({ path }, 'admin token file is readable by group or others; chmod 600 it');
    }
    log.info({ path }, 'admin token from file');
  }
  return { hash: hashToken(token), path, generated };
}
