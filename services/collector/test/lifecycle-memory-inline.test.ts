/**
 * Shred forgets everywhere, inline mode: after a shred (and a verify), a heap snapshot of the
 * main thread, which processed, queried and verified, holds none of the account's keys
 * (support/memory.ts).
 */
import { describe, it } from 'vitest';
import { auditShred } from './support/memory.js';

describe('shred forgets the keys (inline processing)', () => {
  it('no key of the shredded account in the main thread heap after processing, queries and verify', async () => {
    await auditShred('inline');
  });
});
