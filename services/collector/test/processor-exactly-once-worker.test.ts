/**
 * Exactly once when a tick fails in process, ticks computed in the tick worker thread (the built
 * collector, services/collector/dist, built by `npm test`'s pretest): the cases of
 * support/exactly-once.ts, as processor-exactly-once.test.ts runs them inline.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';
import { exactlyOnceSuites } from './support/exactly-once.js';

const built = existsSync(fileURLToPath(new URL('../dist/process/tick-worker.js', import.meta.url)));
if (built) exactlyOnceSuites({ fromDist: true });
else describe.skip('exactly once with the tick worker (services/collector/dist is missing: run `npm run build`)', () => {});
