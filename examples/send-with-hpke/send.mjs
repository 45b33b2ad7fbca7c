// Seals and sends one batch to a Cipherstat collector as envelope v2 (docs/protocol.md,
// "Version 2 (HPKE)") with nothing but a stock HPKE library (@hpke/core) and fetch.
//
//   node examples/send-with-hpke/send.mjs <endpoint> <account id> <write key (base64)>
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';

const [endpoint, accountId, writeKey] = process.argv.slice(2);
const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes128Gcm() });
const text = (s) => new TextEncoder().encode(s);
const base64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};
// HPKE base mode, single shot: enc || ciphertext
async function seal(publicKey, info, aad, plaintext) {
  const recipientPublicKey = await suite.kem.importKey('raw', publicKey.buffer, true);
  const { enc, ct } = await suite.seal({ recipientPublicKey, info: text(info) }, plaintext, aad);
  return concat(new Uint8Array(enc), new Uint8Array(ct));
}

// 1. the inner layer, sealed to the account's write key
const batchId = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
const now = Date.now();
const points = [
  [0, 0, 0, 1, 0, { country: 'DE' }], // [id, kind (0 counter), name index, value, ms after t, tags]
  [1, 2, 1, 812.5, 0], // a histogram observation
];
const inner = await seal(base64(writeKey), 'cipherstat envelope v2 inner', text(`${accountId}/${batchId}`),
  text(JSON.stringify({ a: accountId, b: batchId, t: now, m: ['orders', 'page.load_ms'], p: points })));

// 2. the header and the outer plaintext: u16be(header length) || header || inner layer
const header = text(JSON.stringify({ a: accountId, b: batchId, t: now, s: 'example-hpke/1.0', n: points.length }));
const outerPlaintext = concat(new Uint8Array([header.length >> 8, header.length & 0xff]), header, inner);

// 3. the collector's key, the 12-byte prefix (also the outer layer's AAD), the outer layer
const key = await (await fetch(`${endpoint}/v1/collector-key`)).json();
const prefix = concat(text('CS'), new Uint8Array([2, 0]), Uint8Array.from(key.keyId.match(/../g), (h) => parseInt(h, 16)));
const envelope = concat(prefix, await seal(base64(key.publicKey), 'cipherstat envelope v2 outer', prefix, outerPlaintext));

// 4. send it; on a network error or a 5xx, resend these same bytes
const res = await fetch(`${endpoint}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: envelope });
console.log(res.status, JSON.stringify(await res.json()));
