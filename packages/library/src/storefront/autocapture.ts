/**
 * Autocapture (browser only, opt-in): page views with their path, navigations of
 * single-page apps (History API), where a visit came from, uncaught errors, Core Web
 * Vitals. Nothing is stored on the device; everything goes through the Library's
 * `count`/`observe`, so sampling, batching, sealing and consent apply as to any point.
 */
import type { Library } from '../library.js';
import { pathBound, type NormalizePath } from './paths.js';
import { vitals } from './vitals.js';

export interface AutocaptureOptions {
  /** `page.views` {path, nav: load|spa}: one per page load and per History API navigation
   * to another path. Default true. */
  pageviews?: boolean;
  /** `referrals` {referrer, utm_source, utm_medium, utm_campaign}: once per visit, on a page
   * load reached from another site or carrying utm parameters. Default true. */
  sources?: boolean;
  /** `page.errors` {type: error|rejection}: uncaught errors and unhandled rejections, counted
   * only (no message, no stack). Default true. */
  errors?: boolean;
  /** `vitals.lcp|inp|cls|fcp|ttfb` {path}: histograms, once per page. Default true. */
  vitals?: boolean;
  /** The path to record for a URL (default: identifier-like segments become `:id`). */
  normalizePath?: NormalizePath;
  /** Distinct paths recorded by one page at most; the rest count as `(other)`. Default 100. */
  maxPaths?: number;
}

/** Metric names autocapture records. */
export const AUTO_METRICS = {
  pageviews: 'page.views',
  sources: 'referrals',
  errors: 'page.errors',
  vitals: 'vitals.', // + lcp, inp, cls, fcp, ttfb
} as const;

/** Longest referrer host or utm value recorded (characters). */
const MAX_SOURCE_LENGTH = 100;

/**
 * Starts capturing into `lib`; returns the function that stops it. Sources and Web Vitals
 * are recorded at most once per page, however often capture is stopped and started.
 */
export function autocaptureOnce(lib: Library, o: AutocaptureOptions = {}) {
  const path = pathBound(o.normalizePath, o.maxPaths);
  const on = (part: keyof typeof AUTO_METRICS) => o[part] !== false;
  const landingPath = location.pathname;
  const landing = path(new URL(location.href));
  let loaded = false;
  let sourced = false;
  let vitalsOn = false;
  let last = landingPath;

  return function start(): () => void {
    const a = new AbortController();
    const signal = a.signal;
    const view = (nav: 'load' | 'spa') => {
      last = location.pathname;
      lib.count(AUTO_METRICS.pageviews, 1, { path: nav == 'load' ? landing : path(new URL(location.href)), nav });
    };
    if (on('pageviews')) {
      if (!loaded) (loaded = true), view(location.pathname == landingPath ? 'load' : 'spa');
      const h = history;
      const methods = ['pushState', 'replaceState'] as const;
      const originals = methods.map((m) => h[m]);
      const changed = () => location.pathname != last && view('spa');
      const wrappers = methods.map(
        (m, i) =>
          (h[m] = function (this: History, ...args: Parameters<History['pushState']>) {
            const r = originals[i]!.apply(this, args);
            if (!signal.aborted) changed();
            return r;
          }),
      );
      addEventListener('popstate', changed, { signal });
      // put the originals back, unless another script wrapped ours meanwhile (ours then stays, inert)
      signal.addEventListener('abort', () => methods.forEach((m, i) => h[m] == wrappers[i] && (h[m] = originals[i]!)));
    }
    if (on('sources') && !sourced) {
      sourced = true;
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
      const tags: Record<string, string> = {};
      const cut = (v: string) => v.trim().slice(0, MAX_SOURCE_LENGTH);
      try {
        const ref = document.referrer && new URL(document.referrer);
        if (ref && ref.host != location.host) tags.referrer = cut(ref.hostname.toLowerCase());
      } catch {}
      const q = new URLSearchParams(location.search);
      for (const k of ['utm_source', 'utm_medium', 'utm_campaign']) {
        const v = q.get(k);
        if (v && cut(v)) tags[k] = cut(v);
      }
      // a reload or a step back is not a new visit
      if ((!nav || nav.type == 'navigate') && Object.keys(tags).length) lib.count(AUTO_METRICS.sources, 1, tags);
    }
    if (on('errors')) {
      addEventListener('error', (e) => e instanceof ErrorEvent && lib.count(AUTO_METRICS.errors, 1, { type: 'error' }), { signal });
      addEventListener('unhandledrejection', () => lib.count(AUTO_METRICS.errors, 1, { type: 'rejection' }), { signal });
    }
    if (on('vitals') && !vitalsOn) {
      vitalsOn = true;
      vitals((name, value) => lib.observe(AUTO_METRICS.vitals + name, value, { path: landing }));
    }
    return () => a.abort();
  };
}
