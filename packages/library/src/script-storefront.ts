/**
 * The storefront `<script>` build: the core script (`window.Cipherstat`, the same data
 * attributes) plus autocapture, Web Vitals and the commerce helpers on
 * `Cipherstat.instance`. `data-auto` switches autocapture on: empty for every part, or a
 * list of parts (`data-auto="pageviews,sources"`; parts: pageviews, sources, errors, vitals):
 *
 *   <script src="cipherstat-storefront.min.js" data-endpoint="…" data-account="…"
 *           data-write-key="…" data-auto></script>
 *
 * Pages set `normalizePath` / `maxPaths` by creating their instance with
 * `Cipherstat.createStorefront({ …, autocapture: { normalizePath } })` instead.
 */
import { instance as core } from './script.js';
import { storefront, type Storefront } from './storefront/index.js';
import type { AutocaptureOptions } from './storefront/autocapture.js';

export { createLibrary, LibraryError } from './script.js';
export { createStorefront } from './storefront/index.js';

const d = (document.currentScript as HTMLScriptElement | null)?.dataset;
const flag = (v?: string) => v != null && v != 'false';
const parts = ['pageviews', 'sources', 'errors', 'vitals'] as const;
const auto = (v?: string): boolean | AutocaptureOptions =>
  flag(v) && (!v || Object.fromEntries(parts.map((p) => [p, v.split(/[\s,]+/).includes(p)])));

export const instance: Storefront | undefined =
  core &&
  storefront(core, {
    autocapture: auto(d!.auto),
    requireConsent: flag(d!.requireConsent),
    respectGlobalPrivacyControl: flag(d!.respectGpc),
    onDrop: flag(d!.debug) ? (reason, info) => console.warn('cipherstat: dropped', reason, info) : undefined,
  });
