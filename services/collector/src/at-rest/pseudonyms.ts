/**
 * Keyed pseudonyms: what ClickHouse filters and groups by instead of names and tag values.
 * pseudonym = first 8 bytes of HMAC-SHA-512(account MAC key, label || 0x00 || text), as a
 * UInt64 (decimal string). Each account has its own random MAC key, so the pseudonyms of
 * two accounts are unlinkable. NUL separates fields unambiguously: tag keys match
 * TAG_KEY_PATTERN and tag values exclude NUL (and lone surrogates) by protocol rule.
 * The HMAC is libsodium's `crypto_auth` (HMAC-SHA-512-256: the first 32 bytes of HMAC-SHA-512
 * under a 32-byte key) through sodium-native, one native call on the caller's key buffer and a
 * reused message buffer — createHmac built an Hmac object per pseudonym (~2.5x the time, and
 * garbage: the tick worker's largest self time after the collector's own code on a storefront);
 * byte-identical to the protocol's tweetnacl `hmacSha512` and node:crypto's (test/pseudonyms.test.ts).
 * The key is not copied (createSecretKey kept OpenSSL's copy until collected): a key buffer the
 * keyring zeroed (shred, wipe) refuses to compute rather than give pseudonyms of the zero key.
 * Results are cached per MAC key.
 */
import { createRequire } from 'node:module';
import { isZero } from '@cipherstat/protocol';
import { FifoMap, type BoundedMap } from '../fifo-map.js';

/** The sodium-native function used here (the package ships no types). */
interface Sodium {
  crypto_auth(out: Uint8Array, message: Uint8Array, key: Uint8Array): void;
}
const sodium = createRequire(import.meta.url)('sodium-native') as Sodium;
const MAC_KEY_BYTES = 32;
const mac = new Uint8Array(32);
let scratch = Buffer.allocUnsafe(1024);

/** The first 8 bytes of HMAC-SHA-512(key, UTF-8 of `message`), as a UInt64 in decimal. */
function pseudonymOf(key: Uint8Array, message: string): string {
  if (message.length * 3 > scratch.length) scratch = Buffer.allocUnsafe(message.length * 3);
  const n = scratch.write(message, 0, 'utf8'); // lone surrogates as U+FFFD, like TextEncoder
  sodium.crypto_auth(mac, scratch.subarray(0, n), key);
  scratch.fill(0, 0, n);
  const p = new DataView(mac.buffer, 0, 8).getBigUint64(0).toString();
  mac.fill(0);
  return p;
}

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
  private readonly cache: BoundedMap<string, string>;
  private readonly prefix: string;
  private readonly stats: { hit: number; miss: number } | undefined;
  constructor(
    private readonly macKey: Uint8Array,
    shared?: PseudonymCache,
  ) {
    if (macKey.length !== MAC_KEY_BYTES) throw new Error('a MAC key is 32 bytes');
    this.cache = shared?.cache ?? new FifoMap<string, string>(200_000);
    this.prefix = shared?.prefix ?? '';
    this.stats = shared?.stats;
  }

  of(label: PseudonymLabel, text: string): string {
    const k = `${label}\u0000${text}`;
    let p = this.cache.get(this.prefix + k);
    if (p === undefined) {
      if (this.stats) this.stats.miss++;
      if (isZero(this.macKey)) throw new Error('refusing pseudonyms under a destroyed (all-zero) MAC key');
      p = pseudonymOf(this.macKey, k);
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
