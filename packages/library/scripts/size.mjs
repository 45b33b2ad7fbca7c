#!/usr/bin/env node
/**
 * Size budgets of the <script> builds: dist/cipherstat.min.js (envelope v2 on WebCrypto, no
 * tweetnacl) must stay ≤ 6,200 bytes after gzip -9 (6,000 until browsers deflated their batches, 6,100 until requests got a timeout and storage failures a report: README "Embed the Library"), dist/cipherstat-storefront.min.js (the
 * core + autocapture, Web Vitals, commerce helpers) ≤ 12,000 bytes. Exits 1 when one is over
 * (or when the file is missing). Also prints the size of dist/cipherstat-fallback.min.js, the chunk the core loads
 * only where WebCrypto lacks X25519 or is missing (no budget: most browsers never load it).
 *
 *   node packages/library/scripts/size.mjs [file]      (after `npx rollup -c`; with a file: that file against the core budget)
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

export const LIMIT = 6_200;
export const FILE = fileURLToPath(new URL('../dist/cipherstat.min.js', import.meta.url));
export const STOREFRONT_LIMIT = 12_000;
export const STOREFRONT = fileURLToPath(new URL('../dist/cipherstat-storefront.min.js', import.meta.url));
export const FALLBACK = fileURLToPath(new URL('../dist/cipherstat-fallback.min.js', import.meta.url));

/** { raw, gzip } bytes of a file. */
export function measure(file = FILE) {
  const bytes = readFileSync(file);
  return { raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2] ?? FILE;
  if (!existsSync(file)) {
    console.error(`size: ${file} is missing; run \`npx rollup -c\` first`);
    process.exit(1);
  }
  const check = (name, f, limit) => {
    const { raw, gzip } = measure(f);
    console.log(`size: ${name} ${raw} B minified, ${gzip} B gzipped (budget ${limit} B, ${gzip <= limit ? `${limit - gzip} B left` : `${gzip - limit} B OVER`})`);
    return gzip <= limit;
  };
  let ok = check('cipherstat.min.js', file, LIMIT);
  if (!process.argv[2]) {
    if (!existsSync(STOREFRONT)) {
      console.error(`size: ${STOREFRONT} is missing; run \`npx rollup -c\` first`);
      process.exit(1);
    }
    ok = check('cipherstat-storefront.min.js', STOREFRONT, STOREFRONT_LIMIT) && ok;
  }
  if (existsSync(FALLBACK)) {
    const f = measure(FALLBACK);
    console.log(`size: cipherstat-fallback.min.js ${f.raw} B minified, ${f.gzip} B gzipped (loaded only where WebCrypto lacks X25519 or is missing)`);
  }
  process.exit(ok ? 0 : 1);
}
