/**
 * What the collector encrypts at rest under an account's data key: rollup aggregates and
 * dictionary entries. secretbox has no associated data, so each plaintext starts with an
 * 8-byte tag of the row's identity; opening checks it, so a ciphertext moved to another row
 * (another account, bucket, series or pseudonym) is refused like a tampered one.
 */
import { concat, equalBytes, fromUtf8, secretOpen, secretSeal, utf8 } from '@cipherstat/protocol';
import { nodeSha512 } from '@cipherstat/protocol/node';
import type { DictKind, RollupLevel } from './storage/types.js';

export interface RollupIdentity {
  accountId: string;
  level: RollupLevel;
  bucket: number;
  metric: string;
  series: string;
}

const TAG = 8;
const tag = (text: string) => nodeSha512(text).subarray(0, TAG);
const rollupTag = (id: RollupIdentity) => tag(`rollup\u0000${id.accountId}\u0000${id.level}\u0000${id.bucket}\u0000${id.metric}\u0000${id.series}`);
const dictTag = (accountId: string, kind: DictKind, pseudonym: string) => tag(`dict\u0000${accountId}\u0000${kind}\u0000${pseudonym}`);

function open(dataKey: Uint8Array, expected: Uint8Array, sealed: Uint8Array): Uint8Array | null {
  const plain = secretOpen(dataKey, sealed);
  if (!plain || plain.length < TAG || !equalBytes(plain.subarray(0, TAG), expected)) return null;
  return plain.subarray(TAG);
}

export const sealRollup = (dataKey: Uint8Array, id: RollupIdentity, aggregate: Uint8Array): Uint8Array =>
  secretSeal(dataKey, concat(rollupTag(id), aggregate));

export const openRollup = (dataKey: Uint8Array, id: RollupIdentity, sealed: Uint8Array): Uint8Array | null =>
  open(dataKey, rollupTag(id), sealed);

/** Dictionary plaintext: the metric name (with its kind), the tag key, or the tag key and value. */
export interface DictEntry {
  text: string;
  /** metric kind for kind 0, tag key for kind 2 */
  extra?: string;
}

export const sealDict = (dataKey: Uint8Array, accountId: string, kind: DictKind, pseudonym: string, entry: DictEntry): Uint8Array =>
  secretSeal(dataKey, concat(dictTag(accountId, kind, pseudonym), utf8(JSON.stringify(entry))));

export function openDict(dataKey: Uint8Array, accountId: string, kind: DictKind, pseudonym: string, sealed: Uint8Array): DictEntry | null {
  const plain = open(dataKey, dictTag(accountId, kind, pseudonym), sealed);
  if (!plain) return null;
  try {
    return JSON.parse(fromUtf8(plain)) as DictEntry;
  } catch {
    return null;
  }
}
