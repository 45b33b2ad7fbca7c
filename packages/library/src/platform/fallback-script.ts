/**
 * The `<script>` build's loader of the fallback: `cipherstat-fallback.min.js`, fetched from the
 * same directory (so the same origin) as the core script, only when the platform needs it, with
 * Subresource Integrity: its SHA-256 is fixed into the core when both are built, so a chunk
 * changed on the way or on the server is refused by the browser and never runs. A chunk that
 * does not load (refused, network, CSP) rejects with `fallback_failed`: no batch is sent
 * unsealed, the batch is dropped and reported, the next batch tries again.
 */
import { LibraryError } from '../errors.js';
import type { Fallback } from '../fallback.js';

/** `sha256-…` of dist/cipherstat-fallback.min.js, written in by the build (rollup.config.mjs). */
declare const __FALLBACK_INTEGRITY__: string;

const src = (document.currentScript as HTMLScriptElement | null)?.src || location.href;

export const loadFallback = (): Promise<Fallback> =>
  new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.integrity = __FALLBACK_INTEGRITY__; // the chunk runs only if its bytes are the ones built with this script
    s.crossOrigin = ''; // anonymous: SRI on a cross-origin script needs CORS (the collector sends it)
    s.src = new URL('cipherstat-fallback.min.js', src) as unknown as string; // stringified by the setter
    s.onload = () => resolve((self as unknown as { CipherstatFallback: Fallback }).CipherstatFallback);
    s.onerror = () => reject(new LibraryError('fallback_failed'));
    document.head.append(s);
  });
