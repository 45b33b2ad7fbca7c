import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isLibraryError, LibraryError } from '../src/errors.js';
import { resolve, type LibraryOptions } from '../src/options.js';
import { SDK } from '../src/version.js';

const KEY = Buffer.alloc(32, 7).toString('base64');
const ok: LibraryOptions = { endpoint: 'https://c.example/', accountId: 'acct_12345678', writeKey: KEY };

const throws = (o: Record<string, unknown>) => {
  try {
    resolve({ ...ok, ...o } as LibraryOptions);
  } catch (e) {
    expect(isLibraryError(e)).toBe(true);
    expect(e).toBeInstanceOf(LibraryError);
    expect((e as LibraryError).name).toBe('LibraryError');
    expect((e as LibraryError).code).toBe('invalid_option');
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(o)}`);
};

describe('options', () => {
  it('fills every default and strips trailing slashes from the endpoint', () => {
    const c = resolve(ok);
    expect(c).toMatchObject({
      endpoint: 'https://c.example',
      flushInterval: 5000,
      maxBatchSize: 500,
      maxBatchBytes: 32768,
      maxRetries: 8,
      retryBaseDelay: 1000,
      retryMaxDelay: 60000,
      persist: true,
      maxPersistedBatches: 50,
      maxPersistedBytes: 1e6,
      requireConsent: false,
      respectGlobalPrivacyControl: false,
      shutdownTimeout: 5000,
      collectorKey: undefined,
      rate: false,
    });
    expect(c.writeKey).toEqual(new Uint8Array(32).fill(7));
    expect(resolve({ ...ok, endpoint: 'http://127.0.0.1:8787/prefix//' }).endpoint).toBe('http://127.0.0.1:8787/prefix');
    expect(resolve({ ...ok, flushInterval: undefined }).flushInterval).toBe(5000);
  });

  it('throws LibraryError for a bad option, naming it', () => {
    expect(() => resolve(undefined as unknown as LibraryOptions)).toThrow(LibraryError);
    expect(throws({ endpoint: 'c.example' })).toMatch(/endpoint/);
    expect(throws({ endpoint: undefined })).toMatch(/endpoint/);
    expect(throws({ accountId: 'short' })).toMatch(/accountId/);
    expect(throws({ accountId: undefined })).toMatch(/accountId/);
    expect(throws({ writeKey: 'AAAA' })).toMatch(/writeKey/);
    expect(throws({ writeKey: Buffer.alloc(31).toString('base64') })).toMatch(/writeKey/);
    expect(throws({ collectorKey: { keyId: 'xyz', publicKey: KEY } })).toMatch(/collectorKey/);
    expect(throws({ collectorKey: { keyId: '0123456789abcdef', publicKey: 'nope' } })).toMatch(/collectorKey/);
    expect(throws({ flushInterval: -1 })).toMatch(/flushInterval: 0\.\.3600000/);
    expect(throws({ flushInterval: 1.5 })).toMatch(/flushInterval/);
    expect(throws({ flushInterval: '100' })).toMatch(/flushInterval/);
    expect(throws({ maxBatchSize: 0 })).toMatch(/maxBatchSize/);
    expect(throws({ maxBatchSize: 2001 })).toMatch(/maxBatchSize: 1\.\.2000/);
    expect(throws({ maxBatchBytes: 100 })).toMatch(/maxBatchBytes/);
    expect(throws({ maxRetries: -1 })).toMatch(/maxRetries/);
    expect(throws({ retryBaseDelay: 0 })).toMatch(/retryBaseDelay/);
    expect(throws({ maxPersistedBatches: 0 })).toMatch(/maxPersistedBatches/);
    expect(throws({ persist: 'yes' })).toMatch(/persist/);
    expect(throws({ requireConsent: 1 })).toMatch(/requireConsent/);
    expect(throws({ respectGlobalPrivacyControl: 'false' })).toMatch(/respectGlobalPrivacyControl/);
    expect(throws({ sampleRate: 1.5 })).toMatch(/sampleRate/);
    expect(throws({ sampleRate: { a: -0.1 } })).toMatch(/sampleRate/);
    expect(throws({ sampleRate: null })).toMatch(/sampleRate/);
    expect(throws({ onDrop: 'log' })).toMatch(/onDrop/);
    expect(throws({ onError: {} })).toMatch(/onError/);
  });

  it('sampleRate: a number or a per-metric map with "*"', () => {
    expect(resolve({ ...ok, sampleRate: 1 }).rate).toBe(false);
    const half = resolve({ ...ok, sampleRate: 0.5 }).rate as (n: string) => number;
    expect(half('x')).toBe(0.5);
    const map = resolve({ ...ok, sampleRate: { 'page.view': 0.1, '*': 0.5 } }).rate as (n: string) => number;
    expect([map('page.view'), map('other')]).toEqual([0.1, 0.5]);
    const some = resolve({ ...ok, sampleRate: { a: 0 } }).rate as (n: string) => number;
    expect([some('a'), some('b')]).toEqual([0, 1]);
  });

  it('the SDK version matches package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    expect(SDK).toBe(`js/${pkg.version}`);
  });
});
