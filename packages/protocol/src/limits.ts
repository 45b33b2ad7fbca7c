import type { ErrorCode } from './errors.js';

/** Limits shared by the Library (drops early, with a reason) and the collector (enforces). */
export const LIMITS = {
  maxEnvelopeBytes: 1024 * 1024,
  /** A deflated inner plaintext (envelope v2 flag 0x01) inflates to at most this: what an uncompressed envelope could carry. */
  maxInflatedBytes: 1024 * 1024,
  maxHeaderBytes: 1024,
  maxPointsPerBatch: 2000,
  maxNameLength: 128,
  maxTagKeyLength: 64,
  maxTagValueLength: 256,
  maxTagsPerPoint: 16,
  maxSdkLength: 64,
  /** How old a batch or point may be when it reaches the collector (offline queues). */
  maxPastMs: 30 * 24 * 3600 * 1000,
  /** Clock skew tolerated for timestamps ahead of the collector's clock. */
  maxFutureMs: 5 * 60 * 1000,
  /**
   * How far ahead of the collector's clock a batch's header time (`t`) may be. A header time
   * more than maxFutureMs ahead can only be a sender whose clock runs fast (a batch cannot be
   * made after it arrives): the collector reads its points in the sender's frame and moves them
   * back by that much (docs/protocol.md, "A sender's clock ahead").
   */
  maxClockAheadMs: 30 * 24 * 3600 * 1000,
} as const;

export type PointKind = 'counter' | 'gauge' | 'histogram';
export const POINT_KINDS: readonly PointKind[] = ['counter', 'gauge', 'histogram'];

export interface Point {
  /** Unique within its batch; (account id, batch id, point id) identifies a point forever. */
  id: number;
  kind: PointKind;
  name: string;
  value: number;
  /** Epoch milliseconds. */
  time: number;
  tags: Record<string, string>;
}

export const NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_.:/-]*$/;
export const TAG_KEY_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]*$/;
/**
 * Tag values: any Unicode text except NUL and lone surrogates (which UTF-8 cannot carry:
 * two different strings would encode, and so pseudonymize, the same).
 */
export const TAG_VALUE_PATTERN = /^(?:[^\u0000\ud800-\udfff]|[\ud800-\udbff][\udc00-\udfff])*$/;
export const ACCOUNT_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
export const BATCH_ID_PATTERN = /^[0-9a-f]{32}$/;

export const validName = (name: unknown): name is string =>
  typeof name === 'string' && name.length <= LIMITS.maxNameLength && NAME_PATTERN.test(name);

/** Checks tags; returns an error code or null. */
export function tagsError(tags: unknown): ErrorCode | null {
  if (tags === null || typeof tags !== 'object' || Array.isArray(tags)) return 'invalid_tags';
  let n = 0;
  for (const key in tags) {
    if (!Object.prototype.hasOwnProperty.call(tags, key)) continue;
    const value = (tags as Record<string, unknown>)[key];
    if (++n > LIMITS.maxTagsPerPoint) return 'invalid_tags';
    if (key.length > LIMITS.maxTagKeyLength || !TAG_KEY_PATTERN.test(key)) return 'invalid_tags';
    if (typeof value !== 'string' || value.length > LIMITS.maxTagValueLength || !TAG_VALUE_PATTERN.test(value)) return 'invalid_tags';
  }
  return null;
}

/** Checks one point against the limits at time `now`; returns an error code or null. */
export function pointError(p: Point, now: number): ErrorCode | null {
  if (!POINT_KINDS.includes(p.kind)) return 'invalid_kind';
  if (!validName(p.name)) return 'invalid_name';
  if (typeof p.value !== 'number' || !Number.isFinite(p.value)) return 'invalid_value';
  if (!Number.isSafeInteger(p.time) || p.time < now - LIMITS.maxPastMs || p.time > now + LIMITS.maxFutureMs) {
    return 'invalid_timestamp';
  }
  return tagsError(p.tags);
}
