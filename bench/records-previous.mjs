// The at-rest record implementation before sodium-native, as it was in
// services/collector/src/at-rest/records.ts (commit badd7c2): XChaCha20-Poly1305 as HChaCha20
// from @noble/ciphers for the subkey and a node:crypto ChaCha20-Poly1305 cipher object per record
// with (0^4 | nonce[16..24]). Format 1 only (`0x01 | nonce | ciphertext | tag`). The baseline of
// `bench records` and the other side of test/records.test.ts's cross-implementation checks.
import * as nodeCrypto from 'node:crypto';
import { hchacha } from '@noble/ciphers/chacha.js';

const SIGMA = new Uint32Array(new TextEncoder().encode('expand 32-byte k').buffer);
const keyWords = new Uint32Array(8);
const nonceWords = new Uint32Array(4);
const subkeyWords = new Uint32Array(8);
const subkey = new Uint8Array(subkeyWords.buffer);
const iv = new Uint8Array(12);
function xchacha(make, key, nonce) {
  new Uint8Array(keyWords.buffer).set(key);
  new Uint8Array(nonceWords.buffer).set(nonce.subarray(0, 16));
  hchacha(SIGMA, keyWords, nonceWords, subkeyWords);
  iv.set(nonce.subarray(16, 24), 4);
  const c = make(subkey, iv);
  keyWords.fill(0);
  subkeyWords.fill(0);
  return c;
}
let adScratch = Buffer.allocUnsafe(1024);
function adBytes(ad) {
  if (ad.length * 3 > adScratch.length) adScratch = Buffer.allocUnsafe(ad.length * 3);
  return adScratch.subarray(0, adScratch.write(ad, 0, 'utf8'));
}
const cipher = (k, n) => nodeCrypto.createCipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
const decipher = (k, n) => nodeCrypto.createDecipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
const pool = new Uint8Array(4096);
let poolAt = pool.length;
function fillNonce(into) {
  if (poolAt + 24 > pool.length) {
    nodeCrypto.randomFillSync(pool);
    poolAt = 0;
  }
  into.set(pool.subarray(poolAt, poolAt + 24));
  pool.fill(0, poolAt, poolAt + 24);
  poolAt += 24;
  return into;
}
export function previousSeal(key, ad, plain, nonce) {
  const out = new Uint8Array(41 + plain.length);
  out[0] = 1;
  if (nonce) out.set(nonce, 1);
  else fillNonce(out.subarray(1, 25));
  nonce = out.subarray(1, 25);
  const c = xchacha(cipher, key, nonce);
  c.setAAD(adBytes(ad), { plaintextLength: plain.length });
  const body = c.update(plain);
  c.final();
  out.set(body, 25);
  out.set(c.getAuthTag(), 25 + plain.length);
  return out;
}
export function previousOpen(key, ad, sealed) {
  const d = xchacha(decipher, key, sealed.subarray(1, 25));
  d.setAAD(adBytes(ad), { plaintextLength: sealed.length - 41 });
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  const plain = d.update(sealed.subarray(25, sealed.length - 16));
  try {
    d.final();
  } catch {
    return null;
  }
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.byteLength);
}

