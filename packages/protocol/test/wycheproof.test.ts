import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { naclX25519, sharedKey, fromHex, toHex, type X25519 } from '@cipherstat/protocol';
import { openssl } from '@cipherstat/protocol/node';
import { libsodium } from './support/libsodium.js';

interface Case { tcId: number; comment: string; flags: string[]; public: string; private: string; shared: string; result: string }
const file = JSON.parse(readFileSync(new URL('./data/wycheproof/x25519_test.json', import.meta.url), 'utf8'));
const cases: Case[] = file.testGroups.flatMap((g: { tests: Case[] }) => g.tests);
const hex = (s: string) => fromHex(s)!;
const refused = (c: Case) => c.flags.includes('LowOrderPublic') || c.flags.includes('ZeroSharedSecret');

describe('Wycheproof x25519_test.json', () => {
  it('is run in full', () => {
    expect(cases.length).toBe(file.numberOfTests);
    expect(cases.length).toBe(518);
  });

  // node:crypto (OpenSSL, the Node entry's default) and libsodium (sodium-native, what the collector uses)
  for (const [name, impl] of [['tweetnacl', naclX25519], ['node:crypto', openssl.dh], ['libsodium', libsodium.dh]] as [string, X25519][]) {
    it(`${name}: every valid case computes the expected secret; every low-order / zero-secret case is refused`, () => {
      let computed = 0;
      let rejected = 0;
      for (const c of cases) {
        const key = sharedKey(hex(c.private), hex(c.public), impl);
        if (refused(c)) {
          expect(key, `tcId ${c.tcId} ${c.comment}`).toBeNull();
          rejected++;
          continue;
        }
        expect(key, `tcId ${c.tcId}`).not.toBeNull();
        // The wrapper hashes the raw secret (HSalsa20) into a box key; compare the raw X25519 output.
        let raw: Uint8Array;
        try {
          raw = impl(hex(c.private), hex(c.public));
        } catch (e) {
          throw new Error(`tcId ${c.tcId} (${c.comment}) threw: ${String(e)}`);
        }
        expect(toHex(raw), `tcId ${c.tcId} ${c.comment}`).toBe(c.shared);
        computed++;
      }
      expect(computed + rejected).toBe(518);
      expect(rejected).toBeGreaterThan(0);
    });
  }
});
