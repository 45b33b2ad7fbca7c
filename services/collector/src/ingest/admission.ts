/**
 * The ingest edge before any work: who is asking (the client address behind trusted
 * proxies) and whether they may (per-address budgets, the global in-flight cap, failed
 * authentication limits). Everything here is in memory only: no address is logged or stored.
 */
import { BlockList, isIP } from 'node:net';
import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { ProxyTrust } from '../config.js';
import { CollectorError } from '../errors.js';
import { RateLimiter } from './rate-limit.js';

/** `::ffff:1.2.3.4` → `1.2.3.4`; `[::1]` → `::1`; anything else trimmed. */
const plain = (a: string): string => {
  const s = a.trim().replace(/^\[(.*)\]$/, '$1');
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(s) ? s.slice(7) : s;
};

/** Whether an address is one of the trusted proxies. */
export function proxyMatcher(trust: ProxyTrust): (address: string) => boolean {
  if (!('cidrs' in trust)) return () => false;
  const list = new BlockList();
  for (const c of trust.cidrs) {
    const [addr, bits] = c.split('/') as [string, string | undefined];
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return (a) => {
    const family = isIP(a);
    return family !== 0 && list.check(a, family === 6 ? 'ipv6' : 'ipv4');
  };
}

/**
 * The client address: the socket peer, unless it is a trusted proxy; then the rightmost
 * `X-Forwarded-For` entry that is not a trusted proxy (`hops`: the entry that many hops in,
 * counting the peer as the first). Entries left of it are written by the client and ignored.
 */
export function resolveClient(peer: string | undefined, forwardedFor: string | undefined, trust: ProxyTrust, trusted = proxyMatcher(trust)): string | undefined {
  if (peer === undefined) return undefined;
  const chain = [plain(peer), ...(forwardedFor ?? '').split(',').map(plain).filter(Boolean).reverse()];
  if ('hops' in trust) return chain[Math.min(trust.hops, chain.length - 1)];
  let i = 0;
  while (i < chain.length - 1 && trusted(chain[i]!)) i++;
  return chain[i];
}

/** The request's client address for `trust` (undefined when not served over a socket, e.g. app.request in tests). */
export function clientAddressOf(trust: ProxyTrust): (c: Context) => string | undefined {
  const trusted = proxyMatcher(trust);
  return (c) => {
    let peer: string | undefined;
    try {
      peer = getConnInfo(c).remote.address;
    } catch {
      return undefined;
    }
    return resolveClient(peer, c.req.header('x-forwarded-for'), trust, trusted);
  };
}

/** The longest text form (base64, with a line break) of an envelope of `bytes` bytes. */
export const textFormBytes = (bytes: number): number => Math.ceil(bytes / 3) * 4 + 2;

/** What one admitted ingest request holds until it is done: its share of the in-flight cap. */
export interface Ticket {
  /** Charges body bytes as they arrive (beyond what the declared length prepaid); throws 429 when over budget. */
  onBytes: (bytes: number) => void;
  /** Returns the in-flight share (idempotent). */
  release: () => void;
}

export interface AdmissionOptions {
  /** Requests per second per address (burst: 2 s worth). */
  requestsPerSecond: number;
  /** Body bytes per second per address (burst: 2 s worth, at least one largest body). */
  bytesPerSecond: number;
  /** The largest body any request may have (sizes the byte burst). */
  maxBodyBytes: number;
  /** Body bytes being read, decoded or opened at once, over all requests. */
  maxInflightBytes: number;
  now?: () => number;
}

/**
 * Admission before work: every ingest request is charged to its address — one request and
 * its declared length — before a byte of its body is read, whatever becomes of it later;
 * a body without a declared length is charged as it arrives. A global cap on the bytes being
 * read, decoded or opened at once answers 503 `ingest_busy` beyond it.
 */
export class Admission {
  private readonly requests: RateLimiter;
  private readonly bytes: RateLimiter;
  private inflight = 0;

  constructor(private readonly o: AdmissionOptions) {
    this.requests = new RateLimiter(o.requestsPerSecond, o.requestsPerSecond * 2, o.now);
    this.bytes = new RateLimiter(o.bytesPerSecond, Math.max(o.bytesPerSecond * 2, o.maxBodyBytes), o.now);
  }

  /** Bytes held by admitted requests right now. */
  get inflightBytes(): number {
    return this.inflight;
  }

  /**
   * Admits one request of `declared` bytes (undefined: unknown, up to `maxBytes`) from
   * `address` (undefined: not over a socket, only the in-flight cap applies), or throws
   * 429 `rate_limited`, 413 `envelope_too_large` or 503 `ingest_busy`.
   */
  admit(address: string | undefined, declared: number | undefined, maxBytes: number): Ticket {
    if (address !== undefined) {
      const wait = this.requests.take(address);
      if (wait) throw new CollectorError(429, 'rate_limited', 'too many requests from this address', wait);
    }
    if (declared !== undefined && declared > maxBytes) throw new CollectorError(413, 'envelope_too_large', `body over ${maxBytes} bytes`);
    if (address !== undefined && declared) {
      const wait = this.bytes.take(address, declared);
      if (wait) throw new CollectorError(429, 'rate_limited', 'too many bytes from this address', wait);
    }
    const share = declared ?? maxBytes;
    if (this.inflight + share > this.o.maxInflightBytes) throw new CollectorError(503, 'ingest_busy', 'too many request bodies in flight; retry shortly', 1);
    this.inflight += share;
    let prepaid = declared ?? 0;
    let released = false;
    return {
      onBytes: (n) => {
        if (prepaid >= n) return void (prepaid -= n);
        const owed = n - prepaid;
        prepaid = 0;
        const wait = address === undefined ? 0 : this.bytes.take(address, owed);
        if (wait) throw new CollectorError(429, 'rate_limited', 'too many bytes from this address', wait);
      },
      release: () => {
        if (!released) (released = true), (this.inflight -= share);
      },
    };
  }
}

/**
 * Failed authentication attempts per address: after `perMinute` failures (refilled at that
 * rate) the address gets 429 `too_many_auth_failures` before its token is even looked at.
 * Admin proofs (`POST /v1/admin-proof`: an answer keyed by the admin token's hash, to anyone)
 * are charged per address to a budget of the same size, and refused to an address over either.
 */
export class AuthFailures {
  private readonly failures: RateLimiter;
  private readonly proofs: RateLimiter;
  constructor(perMinute: number, now?: () => number) {
    this.failures = new RateLimiter(perMinute / 60, perMinute, now);
    this.proofs = new RateLimiter(perMinute / 60, perMinute, now);
  }

  /** Throws 429 while `address` is over its failure budget. */
  check(address: string | undefined): void {
    const wait = address === undefined ? 0 : this.failures.wait(address);
    if (wait) throw new CollectorError(429, 'too_many_auth_failures', 'too many failed authentication attempts from this address', wait);
  }

  /** Charges one failed attempt to `address`. */
  failed(address: string | undefined): void {
    if (address !== undefined) this.failures.take(address);
  }

  /** Charges one admin proof to `address`, or throws 429 (over its failure or its proof budget). */
  proof(address: string | undefined): void {
    this.check(address);
    if (address === undefined) return;
    const wait = this.proofs.wait(address);
    if (wait) throw new CollectorError(429, 'too_many_auth_failures', 'too many admin proofs asked from this address', wait);
    this.proofs.take(address);
  }
}
