/**
 * Transport: one POST of one envelope, its outcome classified, and the retry schedule.
 * Never throws: network failures come back as status 0.
 */
import type { Platform } from './platform/types.js';

/** Bodies up to this size go with `keepalive: true` (browsers cap keepalive bodies at 64 KiB). */
export const KEEPALIVE_MAX = 60 * 1024;
/** A request (a batch's POST, the key request) not answered within this long (ms) is abandoned and retried: a stalled connection never stops delivery. */
export const REQUEST_TIMEOUT = 6e4;
/** The signal that abandons a request after the platform's timeout (where AbortSignal.timeout exists). */
export const deadline = (p: Platform) => AbortSignal.timeout?.(p.timeout || REQUEST_TIMEOUT);
/** Longest Retry-After honoured (ms); a larger value is clamped. */
export const RETRY_AFTER_MAX = 36e5;

export interface Outcome {
  /** HTTP status, 0 on a network failure. */
  status: number;
  /** `error.code` of the collector's JSON error body (every 4xx, and 503). */
  code?: string;
  /** Retry-After in ms (429 and 503 only). */
  after?: number;
}

/** Full jitter: random(0, min(cap, base · 2^attempt)). */
export const backoff = (attempt: number, base: number, cap: number, random = Math.random) =>
  random() * Math.min(cap, base * 2 ** attempt);

/**
 * A Retry-After honoured with jitter: after + random(0, max(1 s, after / 2)). Never earlier
 * than asked, and clients refused together (an overloaded collector) come back spread out.
 */
export const jittered = (after: number, random = Math.random) => after + random() * Math.max(1000, after / 2);

/** Retry-After (delta-seconds or HTTP date) → ms from `now`, clamped to 0..RETRY_AFTER_MAX. */
export function retryAfter(value: string | null | undefined, now: number): number | undefined {
  if (!value) return;
  const v = value.trim();
  const ms = /^\d+$/.test(v) ? +v * 1000 : /[a-z]/i.test(v) ? Math.max(0, Date.parse(v) - now) : NaN;
  return ms >= 0 ? Math.min(ms, RETRY_AFTER_MAX) : undefined;
}

/** POSTs the binary envelope; `Content-Type: application/octet-stream`. */
export async function post(p: Platform, url: string, body: Uint8Array): Promise<Outcome> {
  try {
    const res = await p.fetch(url, {
      method: 'POST',
      body: body as Uint8Array<ArrayBuffer>,
      keepalive: body.length <= KEEPALIVE_MAX,
      headers: { 'content-type': 'application/octet-stream' },
      signal: deadline(p),
    });
    const status = res.status;
    const out: Outcome = { status };
    if (status == 429 || status == 503) out.after = retryAfter(res.headers.get('retry-after'), Date.now());
    if ((status >= 400 && status < 500) || status == 503) out.code = await res.json().then((j) => j.error.code, () => undefined);
    else res.body?.cancel().catch(() => {}); // lets Node reuse the connection
    return out;
  } catch {
    return { status: 0 };
  }
}

/** 4xx other than 408 and 429: the batch will never be accepted. */
export const permanent = (status: number) => status >= 400 && status < 500 && status != 408 && status != 429;
