/**
 * The ingest edge before any work: who is asking (the client address behind trusted
 * proxies) and whether they may (per-address budgets, the global in-flight cap, failed
 * authentication limits). Everything here is in memory only: no address is logged or stored.
 */
import { BlockList, isIP } from 'node:net';
import type { Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { ProxyTrust } from './config.js';

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
