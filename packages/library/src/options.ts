/**
 * Options: the public type, every default in one place, and the one validator that turns
 * user options into a checked Config (or throws LibraryError 'invalid_option').
 */
import { ACCOUNT_ID_PATTERN, LIMITS } from '@cipherstat/protocol';
import { fromBase64 } from './seal.js';
import { LibraryError } from './errors.js';

/** The collector's transport public key, as served by `GET /v1/collector-key`. */
export interface CollectorKey {
  /** 16 lowercase hex characters. */
  keyId: string;
  /** Standard base64 of the 32-byte X25519 public key. */
  publicKey: string;
}

export type Tags = Record<string, string>;

/**
 * Why points were dropped. Point-level reasons come with `name`, batch-level ones with
 * `batchId`; `count` is always the number of points lost.
 */
export type DropReason =
  | 'invalid_name'
  | 'invalid_value'
  | 'invalid_tags'
  /** Recorded while consent was missing (requireConsent, GPC, or setConsent(false)). */
  | 'no_consent'
  /** Recorded after shutdown() or after the account was deleted (410); or left undelivered by shutdown() where nothing outlives the process (persist: false, Node without persistPath). */
  | 'stopped'
  /** More points waiting than maxBatchSize × maxPersistedBatches (e.g. a tight loop). */
  | 'queue_full'
  /** setConsent(false) dropped queued and persisted batches. */
  | 'consent_withdrawn'
  /** Over maxPersistedBatches / maxPersistedBytes: the oldest batch was dropped. */
  | 'persist_overflow'
  /** The collector refused the batch for good (4xx other than 408/429); see status, code. */
  | 'rejected'
  /** persist: false and maxRetries exhausted. */
  | 'retries_exhausted'
  /** The collector answered 410 (account deleted, for good; a deactivated account only pauses sending). */
  | 'account_gone';

export interface DropInfo {
  count: number;
  name?: string;
  batchId?: string;
  status?: number;
  code?: string;
}

export interface LibraryOptions {
  /** Collector base URL, may carry a path prefix: batches go to `${endpoint}/v1/batches`. */
  endpoint: string;
  accountId: string;
  /** The account public key: standard base64 of 32 bytes. */
  writeKey: string;
  /** Pin the collector key; otherwise it is fetched once from `${endpoint}/v1/collector-key`. */
  collectorKey?: CollectorKey;
  /** ms between recording the first point and sealing the batch. Default 5000. */
  flushInterval?: number;
  /** Points per batch. Default 500, at most 2000. */
  maxBatchSize?: number;
  /** Envelope bytes per batch (estimated before sealing). Default 32768. */
  maxBatchBytes?: number;
  /** Retries per batch before giving up for now. Default 8. */
  maxRetries?: number;
  /** Backoff base (ms): a retry waits random(0, min(retryMaxDelay, base · 2^attempt)). Default 1000. */
  retryBaseDelay?: number;
  /** Backoff cap (ms). Default 60000. */
  retryMaxDelay?: number;
  /** Keep unsent sealed batches across reloads/restarts. Default true (Node: needs persistPath). */
  persist?: boolean;
  /** Node only: JSON file for unsent batches. Default none (memory only). */
  persistPath?: string;
  /** Unsent batches kept (in storage and in memory). Default 50. */
  maxPersistedBatches?: number;
  /** Characters of stored batches kept. Default 1000000. */
  maxPersistedBytes?: number;
  /** Record nothing and send nothing until setConsent(true). Default false. */
  requireConsent?: boolean;
  /** Treat `navigator.globalPrivacyControl === true` as no consent. Default false. */
  respectGlobalPrivacyControl?: boolean;
  /** Keep this fraction of points, 0..1, or per metric name (`'*'` for the rest). Default 1. */
  sampleRate?: number | Record<string, number>;
  /** shutdown() waits at most this long (ms) for delivery. Default 5000. */
  shutdownTimeout?: number;
  /** While the account is deactivated (503 account_deactivated): ask again after Retry-After,
   * at most this long (ms). Default 3600000 (hourly). Nothing queued is dropped meanwhile. */
  recheckInterval?: number;
  onError?: (error: LibraryError) => void;
  onDrop?: (reason: DropReason, info: DropInfo) => void;
}

/** Every default, in one place: numbers as [default, min, max] (integers), then booleans. */
const NUMBERS = {
  flushInterval: [5000, 0, 36e5],
  maxBatchSize: [500, 1, LIMITS.maxPointsPerBatch],
  maxBatchBytes: [32768, 1024, LIMITS.maxEnvelopeBytes],
  maxRetries: [8, 0, 100],
  retryBaseDelay: [1000, 1, 36e5],
  retryMaxDelay: [60000, 1, 36e5],
  maxPersistedBatches: [50, 1, 1e4],
  maxPersistedBytes: [1e6, 1024, 1e9],
  shutdownTimeout: [5000, 0, 36e5],
  recheckInterval: [36e5, 1, 36e5],
} as const;
const BOOLEANS = { persist: true, requireConsent: false, respectGlobalPrivacyControl: false } as const;

export interface Key {
  keyId: string;
  publicKey: Uint8Array;
}

export type Config = { [K in keyof typeof NUMBERS]: number } & { [K in keyof typeof BOOLEANS]: boolean } &
  Pick<LibraryOptions, 'onError' | 'onDrop' | 'persistPath'> & {
    endpoint: string;
    accountId: string;
    writeKey: Uint8Array;
    collectorKey: Key | undefined;
    /** Sampling rate of a metric name, or undefined when everything is kept. */
    rate: ((name: string) => number) | false;
  };

const bytes32 = (v: unknown) => {
  const b = typeof v == 'string' && fromBase64(v);
  return b && b.length == 32 ? b : undefined;
};

/** `{ keyId, publicKey }` from JSON or options → Key, or undefined when malformed. */
export const parseKey = (k: unknown): Key | undefined => {
  const { keyId, publicKey } = (k || {}) as Partial<CollectorKey>;
  const p = bytes32(publicKey);
  return p && /^[0-9a-f]{16}$/.test(keyId as string) ? { keyId: keyId!, publicKey: p } : undefined;
};

const isRate = (r: unknown) => typeof r == 'number' && r >= 0 && r <= 1;

/** Checks options and fills in defaults; throws LibraryError('invalid_option'). */
export function resolve(o: LibraryOptions): Config {
  const bad = (what: string): never => {
    throw new LibraryError('invalid_option', 'invalid option ' + what);
  };
  const c = { ...o } as Record<string, any>;
  let k: string;
  for (k in NUMBERS) {
    const [d, min, max] = NUMBERS[k as keyof typeof NUMBERS];
    const v = (c[k] ??= d);
    if (!Number.isInteger(v) || v < min || v > max) bad(`${k}: ${min}..${max}`);
  }
  for (k in BOOLEANS) if (typeof (c[k] ??= BOOLEANS[k as keyof typeof BOOLEANS]) != 'boolean') bad(k);
  const { endpoint, accountId, collectorKey, sampleRate: sr = 1 } = c as LibraryOptions;
  if (!/^https?:\/\/[^/]/.test(endpoint)) bad('endpoint');
  c.endpoint = endpoint.replace(/\/+$/, '');
  if (typeof accountId != 'string' || !ACCOUNT_ID_PATTERN.test(accountId)) bad('accountId');
  c.writeKey = bytes32(o.writeKey) || bad('writeKey');
  c.collectorKey = collectorKey && (parseKey(collectorKey) || bad('collectorKey'));
  if (!(typeof sr == 'number' ? isRate(sr) : Object.values(sr || bad('sampleRate')).every(isRate))) bad('sampleRate');
  c.rate = typeof sr == 'number' ? sr < 1 && (() => sr) : (name: string) => sr[name] ?? sr['*'] ?? 1;
  for (k of ['onError', 'onDrop']) if (c[k] != null && typeof c[k] != 'function') bad(k);
  return c as Config;
}
