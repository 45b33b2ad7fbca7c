/**
 * The storefront Library: the core plus autocapture (opt-in), Web Vitals and the commerce
 * helpers. Autocapture starts only once consent is there (at once without requireConsent /
 * GPC, else at setConsent(true)) and stops when it is withdrawn.
 */
import { createLibrary, type Library } from '../library.js';
import type { LibraryOptions } from '../options.js';
import { autocaptureOnce, type AutocaptureOptions } from './autocapture.js';
import { commerce, type Commerce } from './commerce.js';

export interface StorefrontOptions extends LibraryOptions {
  /** Browser only: `true` for every part, or an object switching each. Default false. */
  autocapture?: boolean | AutocaptureOptions;
}

export type Storefront = Library & Commerce;

/** Adds the commerce helpers and autocapture to a Library (the script build's instance too). */
export function storefront(lib: Library, o: Pick<StorefrontOptions, 'autocapture' | 'requireConsent' | 'respectGlobalPrivacyControl' | 'onDrop'>): Storefront {
  const s = Object.assign(lib, commerce(lib, o.onDrop));
  const auto = o.autocapture;
  if (!auto || typeof document == 'undefined') return s;
  const start = autocaptureOnce(lib, auto === true ? {} : auto);
  let stop: (() => void) | undefined;
  const set = lib.setConsent;
  s.setConsent = (granted) => {
    set(granted);
    if (!granted) stop?.(), (stop = undefined);
    else stop ||= start();
  };
  const gpc = o.respectGlobalPrivacyControl && (navigator as { globalPrivacyControl?: boolean }).globalPrivacyControl === true;
  if (!o.requireConsent && !gpc) stop = start();
  const shutdown = lib.shutdown;
  s.shutdown = () => (stop?.(), (stop = undefined), shutdown());
  return s;
}

/** createLibrary with the commerce helpers and, in browsers, autocapture. */
export const createStorefront = (o: StorefrontOptions): Storefront => storefront(createLibrary(o), o);
