/** Browser platform: fetch, sendBeacon, localStorage, page lifecycle events, CompressionStream. */
import { concat } from '@cipherstat/protocol';
import type { Stored } from '../persist.js';
import type { Platform } from './types.js';
import { LibraryError } from '../errors.js';

export const platform = (): Platform => ({
  fetch: (url, init) => fetch(url, init),
  beacon: (url, text) => navigator.sendBeacon(url, new Blob([text], { type: 'text/plain' })),
  store(c) {
    const k = 'cipherstat:' + c.accountId;
    // localStorage may be missing, blocked or full: fall back to memory for this page
    let mem: Stored | null = null;
    let broken = false;
    // The text last read or written here: parsed again only when another tab changed it.
    let text: string | null = null;
    return {
      read() {
        if (broken) return mem;
        const t = localStorage.getItem(k);
        return t == text ? mem : (mem = JSON.parse((text = t)!));
      },
      write(v) {
        mem = v;
        try {
          v ? localStorage.setItem(k, (text = JSON.stringify(v))) : (localStorage.removeItem(k), (text = null));
        } catch {
          // Said once: from now on this page's batches live in memory only (lost if it goes offline).
          if (!broken) {
            try {
              c.onError?.(new LibraryError('persist_failed'));
            } catch {}
          }
          broken = true;
        }
      },
    };
  },
  listen(hide, online) {
    const a = new AbortController();
    const o = { signal: a.signal };
    addEventListener('pagehide', hide, o);
    addEventListener('online', online, o);
    document.addEventListener('visibilitychange', () => document.hidden && hide(), o);
    return () => a.abort();
  },
  timer: (fn, ms) => setTimeout(fn, ms),
  offline: () => navigator.onLine === false,
  gpc: (navigator as { globalPrivacyControl?: boolean }).globalPrivacyControl === true,
  /**
   * Deflate-raw through CompressionStream, written and read through the stream's own writer and
   * reader: their promises settle as microtasks, so a batch cut at pagehide is still deflated
   * (and sealed, WebCrypto) while the page goes. Reading it as `new Response(stream)` instead
   * depends on loading tasks Chromium no longer runs for a page being unloaded: that lost the
   * pagehide batches (test/browser-v2.test.ts › "a batch cut at pagehide"). Where CompressionStream or
   * 'deflate-raw' is missing this rejects, and the batch goes uncompressed (flags 0).
   */
  async deflate(plain) {
    const c = new CompressionStream('deflate-raw');
    const w = c.writable.getWriter();
    const r = c.readable.getReader();
    w.write(plain as Uint8Array<ArrayBuffer>);
    w.close();
    for (let x, out: Uint8Array = new Uint8Array(); ; out = concat(out, x.value)) if ((x = await r.read()).done) return out;
  },

});
