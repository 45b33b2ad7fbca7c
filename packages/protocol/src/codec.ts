/** Byte/text conversions that work the same in browsers and Node (no Buffer). */

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

export const utf8 = (text: string): Uint8Array => encoder.encode(text);
/** Throws TypeError on invalid UTF-8. */
export const fromUtf8 = (bytes: Uint8Array): string => decoder.decode(bytes);

export function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as number[]);
  }
  return btoa(s);
}

/** Which char codes are in the standard base64 alphabet (no padding). Pure: dropped from bundles that never decode. */
const ALPHABET = /* @__PURE__ */ (() => {
  const a = new Uint8Array(128);
  for (const ch of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') a[ch.charCodeAt(0)] = 1;
  return a;
})();

/**
 * The length of the bytes `text` decodes to when it is strict standard base64 (padding
 * required, no whitespace), else -1. One pass over the text: linear in its length.
 */
export function base64DecodedLength(text: string): number {
  const n = text.length;
  if (n % 4 !== 0) return -1;
  const pad = n === 0 || text.charCodeAt(n - 1) !== 61 ? 0 : text.charCodeAt(n - 2) === 61 ? 2 : 1;
  for (let i = 0; i < n - pad; i++) if (ALPHABET[text.charCodeAt(i)] !== 1) return -1;
  return (n / 4) * 3 - pad;
}

/** Strict standard base64 (padding required, no whitespace); null when malformed. */
export function fromBase64(text: string): Uint8Array | null {
  if (base64DecodedLength(text) < 0) return null;
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function toHex(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += (bytes[i]! < 16 ? '0' : '') + bytes[i]!.toString(16);
  return s;
}

export function fromHex(text: string): Uint8Array | null {
  if (text.length % 2 !== 0 || !/^[0-9a-f]*$/.test(text)) return null;
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return out;
}
