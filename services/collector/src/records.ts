/**
 * What the collector encrypts at rest under an account's data key: rollup aggregates and
 * dictionary entries. secretbox has no associated data, so each plaintext starts with an
 * 8-byte tag of the row's identity; opening checks it, so a ciphertext moved to another row
 * (another account, bucket, series or pseudonym) is refused like a tampered one.
 *
 * A rollup's identity includes the tag key and value pseudonyms stored beside it (in their
 * stored order): the query engine groups and filters by those columns, so storage rewriting
 * a row's `tag_values` (moving its numbers to another group) must make the row fail to open.
 */
import * as nodeCrypto from 'node:crypto';
import { concat, equalBytes, fromUtf8, secretOpen, secretSeal, utf8 } from '@cipherstat/protocol';
import { nodeSha512 } from '@cipherstat/protocol/node';
import type { DictKind, RollupLevel } from './storage/types.js';

export interface RollupIdentity {
  accountId: string;
  level: RollupLevel;
  bucket: number;
  metric: string;
  series: string;
  /** Tag key pseudonyms as stored (`tag_keys`), in order. */
  tagKeys: readonly string[];
  /** Tag key=value pseudonyms as stored (`tag_values`), in order. */
  tagValues: readonly string[];
}

const TAG = 8;
// One-shot hash (Node ≥ 20.12): no Hash object per row, the query engine's hot loop.
const oneShot = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'buffer') => Buffer }).hash;
const tag = oneShot ? (text: string): Uint8Array => oneShot('sha512', text, 'buffer').subarray(0, TAG) : (text: string) => nodeSha512(text).subarray(0, TAG);
/** Pseudonyms are decimal strings: joined with ',' they are unambiguous. */
export const joinPseudonyms = (list: readonly string[]): string => list.join(',');
const rollupTagText = (id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>, keys: string, values: string) =>
  `rollup\u0000${id.accountId}\u0000${id.level}\u0000${id.bucket}\u0000${id.metric}\u0000${id.series}\u0000${keys}\u0000${values}`;
const rollupTag = (id: RollupIdentity) => tag(rollupTagText(id, joinPseudonyms(id.tagKeys), joinPseudonyms(id.tagValues)));
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

/**
 * openRollup with the tag pseudonym lists already joined by ',' (what the query engine
 * selects with `arrayStringConcat(tag_keys, ',')`): no arrays per row in the hot loop.
 */
export const openRollupJoined = (
  dataKey: Uint8Array,
  id: Omit<RollupIdentity, 'tagKeys' | 'tagValues'>,
  tagKeys: string,
  tagValues: string,
  sealed: Uint8Array,
): Uint8Array | null => open(dataKey, tag(rollupTagText(id, tagKeys, tagValues)), sealed);

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
