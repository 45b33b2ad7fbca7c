/** Loads the fallback (tweetnacl) on demand: npm builds import it as a separate module. */
import { LibraryError } from '../errors.js';
import type { Fallback } from '../fallback.js';

export const loadFallback = (): Promise<Fallback> =>
  import('../fallback.js').then(
    (m) => m.fallback,
    (e) => {
      throw new LibraryError('fallback_failed', String(e));
    },
  );
