/** Entry of `cipherstat-fallback.min.js`: sets `self.CipherstatFallback` for the core script. */
import { fallback } from './fallback.js';

(self as { CipherstatFallback?: typeof fallback }).CipherstatFallback = fallback;
