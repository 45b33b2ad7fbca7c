/**
 * The sealed visitor field of a stored batch (README "Unique visitors"): a browser batch's daily
 * visitor hash (ingest/visitors.ts), 8 bytes, sealed by ingest to the account's public key with
 * HPKE (the inner layer's suite), bound to the account and batch. Only the process role, holding
 * the account's secret key, opens it; after a shred nothing does.
 *
 * Format version 1: `hpkeSeal(accountPublicKey, "cipherstat visitor v1", "<accountId>/<batchId>", hash)`.
 * A later format takes a new info string, so a field of one version never opens as another.
 */
import { utf8, type KeyPair } from '@cipherstat/protocol';
import { hpkeOpen, hpkeSeal } from '../x25519.js';

const INFO_VISITOR = utf8('cipherstat visitor v1');
const aad = (accountId: string, batchId: string): Uint8Array => utf8(`${accountId}/${batchId}`);
/** Bytes of a visitor hash (64 bits: the distinct sketch's input). */
export const VISITOR_HASH_BYTES = 8;

export function sealVisitor(accountPublicKey: Uint8Array, accountId: string, batchId: string, hash: Uint8Array): Uint8Array {
  return hpkeSeal(accountPublicKey, INFO_VISITOR, aad(accountId, batchId), hash);
}

/** The visitor hash, opened with the first of `pairs` that opens it, or null (none does, or not a hash). */
export function openVisitor(pairs: readonly KeyPair[], accountId: string, batchId: string, sealed: Uint8Array): Uint8Array | null {
  const a = aad(accountId, batchId);
  for (const pair of pairs) {
    const o = hpkeOpen(pair, INFO_VISITOR, a, sealed);
    if (o.ok) return o.value.length === VISITOR_HASH_BYTES ? o.value : null;
  }
  return null;
}
