/**
 * Keyed pseudonyms: what ClickHouse filters and groups by instead of names and tag values.
 * pseudonym = first 8 bytes of HMAC-SHA-512(account MAC key, label || 0x00 || text), as a
 * UInt64 (decimal string). Each account has its own random MAC key, so the pseudonyms of
 * two accounts are unlinkable. NUL separates fields unambiguously: tag keys match
 * TAG_KEY_PATTERN and tag values exclude NUL (and lone surrogates) by protocol rule.
 * The HMAC is node:crypto's (byte-identical to the protocol's tweetnacl `hmacSha512`, proven by
 * test/pseudonyms.test.ts); results are cached per MAC key.
 */
import { nodeHmacSha512 } from '@cipherstat/protocol/node';
import { FifoMap, type BoundedMap } from '../fifo-map.js';

export type PseudonymLabel = 'metric' | 'key' | 'value' | 'series';

export interface PseudonymCache {
  /** Shared by many Pseudonyms (bounded memory whatever the number of accounts); entries under `prefix`. */
  cache: BoundedMap<string, string>;
  /** Unique per MAC key and starting with `${accountId}\0` (so an account's entries can be dropped). */
  prefix: string;
  /** Lookups counted here. */
  stats?: { hit: number; miss: number };
}

export class Pseudonyms {
  private readonly hmac: (message: string) => Uint8Array;
  private readonly cache: BoundedMap<string, string>;
  private readonly prefix: string;
  private readonly stats: { hit: number; miss: number } | undefined;
  constructor(macKey: Uint8Array, shared?: PseudonymCache) {
    this.hmac = nodeHmacSha512(macKey);
    this.cache = shared?.cache ?? new FifoMap<string, string>(200_000);
    this.prefix = shared?.prefix ?? '';
    this.stats = shared?.stats;
  }

  of(label: PseudonymLabel, text: string): string {
    const k = `${label}\u0000${text}`;
    let p = this.cache.get(this.prefix + k);
    if (p === undefined) {
      if (this.stats) this.stats.miss++;
      const mac = this.hmac(k); // a string is hashed as UTF-8
      p = new DataView(mac.buffer, mac.byteOffset, 8).getBigUint64(0).toString();
      this.cache.set(this.prefix + k, p);
    } else if (this.stats) this.stats.hit++;
    return p;
  }

  metric(name: string): string {
    return this.of('metric', name);
  }
  tagKey(key: string): string {
    return this.of('key', key);
  }
  tagValue(key: string, value: string): string {
    return this.of('value', `${key}\u0000${value}`);
  }
  /** The whole tag set; tags given sorted by key. */
  series(sorted: [string, string][]): string {
    return this.of('series', sorted.map(([k, v]) => `${k}\u0000${v}`).join('\u0000'));
  }
}
