/** Browser platform: fetch, sendBeacon, localStorage, page lifecycle events. */
import type { Stored } from '../persist.js';
import type { Platform } from './types.js';

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
});
