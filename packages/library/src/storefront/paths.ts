/**
 * What a page view records as its path: the URL's path only (never the query string or the
 * fragment), identifiers replaced (`/order/8812` → `/order/:id`) or the page's own
 * `normalizePath`, and at most `maxPaths` distinct values per page: the rest count as
 * `(other)`.
 */
export const OVERFLOW = '(other)';
/** Longest path recorded (characters); longer ones are cut. */
export const MAX_PATH_LENGTH = 200;

/** A segment that looks like an identifier: digits, a UUID, or 16+ hex digits. */
const ID = /^(?:\d+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{16,})$/i;

/** The default normalisation: identifier-like segments become `:id`. */
export const defaultNormalizePath = (path: string): string =>
  path
    .split('/')
    .map((s) => (ID.test(s) ? ':id' : s))
    .join('/');

export type NormalizePath = (path: string, url: URL) => string;

/** The path to record for a URL; each call with a new value counts against `max`. */
export function pathBound(normalize: NormalizePath = defaultNormalizePath, max = 100) {
  const seen = new Set<string>();
  return (url: URL): string => {
    let p: unknown;
    try {
      p = normalize(url.pathname, url);
    } catch {}
    const path = typeof p == 'string' && p ? p.slice(0, MAX_PATH_LENGTH) : OVERFLOW;
    if (seen.has(path)) return path;
    if (seen.size >= max) return OVERFLOW;
    seen.add(path);
    return path;
  };
}
