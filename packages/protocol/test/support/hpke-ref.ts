/** @hpke/core (the independent HPKE implementation, a dev dependency) in the shape of envelope v2's layers. */
import { CipherSuite, DhkemX25519HkdfSha256, HkdfSha256, Aes128Gcm } from '@hpke/core';
import { concat } from '@cipherstat/protocol';

const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });

/** Single-shot open of `enc || ct` with a raw X25519 secret key. */
export async function refOpen(secretKey: Uint8Array, info: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  const recipientKey = await suite.kem.importKey('raw', secretKey.slice().buffer, false);
  return new Uint8Array(await suite.open({ recipientKey, enc: sealed.slice(0, 32).buffer, info }, sealed.slice(32), aad));
}

/** Single-shot seal to a raw X25519 public key → `enc || ct`. */
export async function refSeal(publicKey: Uint8Array, info: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
  const recipientPublicKey = await suite.kem.importKey('raw', publicKey.slice().buffer, true);
  const { ct, enc } = await suite.seal({ recipientPublicKey, info }, plaintext, aad);
  return concat(new Uint8Array(enc), new Uint8Array(ct));
}
