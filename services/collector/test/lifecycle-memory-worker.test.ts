/**
 * Shred forgets everywhere, worker mode: after a shred (and a verify), heap snapshots of the
 * main thread and of the tick worker thread hold none of the account's keys (support/memory.ts).
 * Runs from the compiled files (dist), where the processor computes ticks in its worker.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';
import { auditShred } from './support/memory.js';

const built = existsSync(fileURLToPath(new URL('../dist/process/tick-worker.js', import.meta.url)));
if (!built) console.warn('lifecycle-memory-worker skipped: services/collector/dist is missing (npm run build)');

describe.skipIf(!built)('shred forgets the keys in every thread (worker mode)', () => {
  it('no key of the shredded account in the main or the worker heap; the control account is found', async () => {
    await auditShred('worker');
  });
});
