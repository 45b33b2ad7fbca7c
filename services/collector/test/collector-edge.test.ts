/**
 * The ingest edge against hostile traffic (issue 10, part 1): configuration that means what
 * it says, the client address behind proxies, admission before work, cheap and limited
 * authentication failures, HTTP server limits. Real server on 127.0.0.1, real chDB. Rate
 * limits run on a frozen clock, so no assertion depends on timing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.js';
import { resolveClient } from '../src/admission.js';
import { createAccount, envelope, points, post, startTestCollector, type TestCollector } from './support/collector.js';

const started: TestCollector[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((c) => c.stop()));
});
async function collector(config: Partial<Config>, now = Date.now()): Promise<TestCollector> {
  const c = await startTestCollector({ config, now: () => now });
  started.push(c);
  return c;
}

describe('configuration booleans are strict', () => {
  it('CIPHERSTAT_TRUST_PROXY=false (and 0, no, off) means no proxy is trusted', () => {
    for (const v of ['false', '0', 'no', 'off', 'FALSE', 'Off']) {
      expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: v }).trustProxy).toEqual({ hops: 0 });
    }
    for (const v of ['true', 'yes', 'on', '1']) expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: v }).trustProxy).toEqual({ hops: 1 });
    expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '2' }).trustProxy).toEqual({ hops: 2 });
    expect(loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '10.0.0.0/8, 192.168.1.7,::1' }).trustProxy).toEqual({ cidrs: ['10.0.0.0/8', '192.168.1.7', '::1'] });
  });

  it('anything else is a startup error naming the variable', () => {
    expect(() => loadConfig({}, { CIPHERSTAT_TRUST_PROXY: 'maybe' })).toThrow(/CIPHERSTAT_TRUST_PROXY/);
    expect(() => loadConfig({}, { CIPHERSTAT_TRUST_PROXY: '10.0.0.0/33' })).toThrow(/CIPHERSTAT_TRUST_PROXY/);
    expect(() => loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'maybe' })).toThrow(/CIPHERSTAT_PROCESS_WORKER: expected one of true\/1\/yes\/on\/false\/0\/no\/off/);
    expect(loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'off' }).processWorker).toBe(false);
    expect(loadConfig({}, { CIPHERSTAT_PROCESS_WORKER: 'yes' }).processWorker).toBe(true);
    expect(loadConfig({}, {}).processWorker).toBe(true);
    expect(() => loadConfig({ port: 'x' }, {})).toThrow(/--port/);
  });
});

describe('the client address behind proxies', () => {
  it('is the rightmost X-Forwarded-For entry that is not a trusted hop', () => {
    const xff = '6.6.6.6, 203.0.113.9, 10.1.2.3';
    expect(resolveClient('127.0.0.1', xff, { hops: 0 })).toBe('127.0.0.1');
    expect(resolveClient('127.0.0.1', xff, { hops: 1 })).toBe('10.1.2.3');
    expect(resolveClient('127.0.0.1', xff, { hops: 2 })).toBe('203.0.113.9');
    expect(resolveClient('127.0.0.1', xff, { hops: 9 })).toBe('6.6.6.6');
    expect(resolveClient('::ffff:127.0.0.1', xff, { cidrs: ['127.0.0.1', '10.0.0.0/8'] })).toBe('203.0.113.9');
    expect(resolveClient('192.0.2.1', xff, { cidrs: ['127.0.0.1', '10.0.0.0/8'] })).toBe('192.0.2.1');
  });

  /** Posts `n` valid batches from this socket address, each with its own spoofed X-Forwarded-For; returns the statuses. */
  async function spoofed(c: TestCollector, n: number, appended?: string): Promise<number[]> {
    const account = await createAccount(c);
    const statuses: number[] = [];
    for (let i = 0; i < n; i++) {
      const xff = `198.51.100.${i}${appended ? `, ${appended}` : ''}`;
      const res = await post(c.url, envelope(account, points(1)).bytes, { 'x-forwarded-for': xff });
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    return statuses;
  }

  it('CIPHERSTAT_TRUST_PROXY=false: a spoofed X-Forwarded-For is ignored, the socket address is limited', async () => {
    const config = loadConfig({ port: '0' }, { CIPHERSTAT_TRUST_PROXY: 'false', CIPHERSTAT_IP_RATE_LIMIT: '2' });
    const c = await collector({ trustProxy: config.trustProxy, ipRateLimit: config.ipRateLimit });
    const statuses = await spoofed(c, 8);
    expect(statuses.slice(0, 4)).toEqual([202, 202, 202, 202]);
    expect(statuses.slice(4)).toEqual([429, 429, 429, 429]);
  });

  it('behind one trusted proxy, the client-written entries left of the one it appended do not bypass the per-address limit', async () => {
    const c = await collector({ trustProxy: { hops: 1 }, ipRateLimit: 2 });
    const statuses = await spoofed(c, 8, '203.0.113.9');
    expect(statuses.slice(0, 4)).toEqual([202, 202, 202, 202]);
    expect(statuses.slice(4)).toEqual([429, 429, 429, 429]);
  });
});
