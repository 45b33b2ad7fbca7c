/** Loads and runs the envelope vector files (v1: 001-035, v2: 036 on); shared by the protocol's and the collector's tests. */
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FLAG_DEFLATE, fromBase64, openEnvelope, openInner, publicKeyOf, type Point, type KeyPair, type HpkeOpen } from '@cipherstat/protocol';
import { hpkeOpen, inflateRaw, type X25519Backend } from '@cipherstat/protocol/node';

export const VECTORS_DIR = fileURLToPath(new URL('../../vectors/', import.meta.url));

export interface Vector {
  file: string;
  description: string;
  expect: string;
  now: number;
  collectorKeys: Map<string, KeyPair>;
  account: { id: string; keys: KeyPair };
  envelope: Uint8Array;
  points?: Point[];
  rejects?: { index: number; code: string }[];
}

const b64 = (s: string): Uint8Array => {
  const bytes = fromBase64(s);
  if (!bytes) throw new Error(`bad base64 in vector: ${s.slice(0, 20)}`);
  return bytes;
};
const pair = (secretKey: Uint8Array): KeyPair => ({ secretKey, publicKey: publicKeyOf(secretKey) });

export function loadVectors(): Vector[] {
  return readdirSync(VECTORS_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const v = JSON.parse(readFileSync(VECTORS_DIR + file, 'utf8'));
      let envelope = b64(v.envelope);
      if (v.envelope_padded_to) {
        const padded = new Uint8Array(v.envelope_padded_to);
        padded.set(envelope);
        envelope = padded;
      }
      return {
        file,
        description: v.description,
        expect: v.expect,
        now: v.now,
        collectorKeys: new Map(v.collector_keys.map((k: { key_id: string; secret_key: string }) => [k.key_id, pair(b64(k.secret_key))])),
        account: { id: v.account.id, keys: pair(b64(v.account.secret_key)) },
        envelope,
        points: v.points,
        rejects: v.rejects,
      };
    });
}

/** The versions a reader of this vector reads: 001-035 are cases for a version-1 reader, 036 on for a reader of 1 and 2. */
export const readerVersions = (v: Pick<Vector, 'file'>): number[] => (v.file < '036' ? [1] : [1, 2]);
/** The version 2 flags a reader of this vector reads: 064 on are cases for a reader of FLAG_DEFLATE (042: one that reads none). */
export const readerFlags = (v: Pick<Vector, 'file'>): number => (v.file < '064' ? 0 : FLAG_DEFLATE);

/**
 * Runs one vector through both layers, as docs/protocol.md §Test vectors describes: X25519
 * through `backend` (libsodium or node:crypto) for both versions, or without one tweetnacl for
 * version 1 and the default backend for version 2.
 */
export function runVector(v: Vector, backend?: X25519Backend): { outcome: string; points?: Point[]; rejects?: { index: number; code: string }[] } {
  const x25519 = backend?.dh;
  const hpke: HpkeOpen = backend ? (k, info, aad, sealed) => hpkeOpen(k, info, aad, sealed, backend) : hpkeOpen;
  const outer = openEnvelope(v.envelope, { keys: (id) => v.collectorKeys.get(id), now: v.now, x25519, hpke, versions: readerVersions(v), flags: readerFlags(v) });
  if (!outer.ok) return { outcome: outer.code };
  const { header, inner, version, flags } = outer.value;
  const opened = openInner(inner, { account: v.account.keys, accountId: header.accountId, batchId: header.batchId, count: header.count, now: v.now, x25519, version, hpke, flags, inflate: inflateRaw });
  if (!opened.ok) return { outcome: opened.code };
  const { points, rejects } = opened.value;
  return { outcome: rejects[0]?.code ?? 'ok', points, rejects };
}
