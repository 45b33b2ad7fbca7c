/**
 * The `<script>` build: `window.Cipherstat.createLibrary`, and auto-initialisation from
 * the tag's data attributes into `window.Cipherstat.instance`:
 *
 *   <script src="cipherstat.min.js" data-endpoint="https://…" data-account="…"
 *           data-write-key="…" data-require-consent></script>
 *
 * `data-debug` logs every drop and error to the console (with the collector's code).
 */
import { createLibrary } from './library.js';
import type { Library } from './library.js';

export { createLibrary } from './library.js';
export { LibraryError } from './errors.js';

const d = (document.currentScript as HTMLScriptElement | null)?.dataset;
const flag = (v?: string) => v != null && v != 'false';

export const instance: Library | undefined =
  d && d.endpoint
    ? createLibrary({
        endpoint: d.endpoint,
        accountId: d.account!,
        writeKey: d.writeKey!,
        requireConsent: flag(d.requireConsent),
        respectGlobalPrivacyControl: flag(d.respectGpc),
        collectorKey: d.collectorKeyId ? { keyId: d.collectorKeyId, publicKey: d.collectorKey! } : undefined,
        ...(flag(d.debug) && {
          onDrop: (reason, info) => console.warn('cipherstat: dropped', reason, info),
          onError: (e) => console.error('cipherstat:', e.code, e.message, e.collector),
        }),
      })
    : undefined;
