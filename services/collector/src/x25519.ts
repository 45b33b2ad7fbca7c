/**
 * The collector's X25519 (both envelope layers, visitor fields, `verify`): libsodium's
 * `crypto_scalarmult` through sodium-native — one native call on the raw key bytes. node:crypto
 * (the protocol's default) imports every key as a KeyObject first: ~0.5 ms the first time a
 * thread sees an account's secret key (most of a storefront's 10,000 accounts are cold in a
 * tick worker) and a JWK import of the sender's ephemeral key per batch, several times the
 * multiplication. The same bytes (RFC 7748, Wycheproof, RFC 9180 and the envelope vectors with
 * both: packages/protocol/test/). node:crypto stays the fallback only for a process where
 * sodium-native does not load (`x25519.name` says which; the start log line names it) — the
 * at-rest records need sodium-native too, so in practice the collector does not start without it.
 */
import { createRequire } from 'node:module';
import type { HpkeOpen, KeyPair } from '@cipherstat/protocol';
import { hpkeOpen as open, hpkeSeal as seal, libsodiumX25519, openssl, type SodiumX25519, type X25519Backend } from '@cipherstat/protocol/node';

function load(): X25519Backend {
  try {
    return libsodiumX25519(createRequire(import.meta.url)('sodium-native') as SodiumX25519);
  } catch {
    return openssl;
  }
}

export const x25519: X25519Backend = load();
/** Raw X25519 (throws on an all-zero result): version 1 envelopes' sealed boxes. */
export const rawX25519 = x25519.dh;
/** HPKE Open (version 2 envelopes, visitor fields) with `x25519`. */
export const hpkeOpen: HpkeOpen = (recipient: KeyPair, info, aad, sealed) => open(recipient, info, aad, sealed, x25519);
/** HPKE Seal with a fresh ephemeral key, with `x25519`. */
export const hpkeSeal = (recipientPublicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array => seal(recipientPublicKey, info, aad, plaintext, undefined, x25519);
