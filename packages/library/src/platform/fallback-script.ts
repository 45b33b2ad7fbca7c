/**
 * The `<script>` build's loader of the fallback: `cipherstat-fallback.min.js`, fetched from the
 * same directory (so the same origin) as the core script, only when the platform needs it.
 */
import type { Fallback } from '../fallback.js';

const src = (document.currentScript as HTMLScriptElement | null)?.src || location.href;

export const loadFallback = (): Promise<Fallback> =>
  new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = new URL('cipherstat-fallback.min.js', src).href;
    s.onload = () => ((self as { CipherstatFallback?: Fallback }).CipherstatFallback ? resolve((self as unknown as { CipherstatFallback: Fallback }).CipherstatFallback) : reject());
    s.onerror = reject;
    document.head.append(s);
  });
