/**
 * Exactly once when a tick fails in process, ticks computed inline (from the sources): the cases
 * are in support/exactly-once.ts; processor-exactly-once-worker.test.ts runs them with the tick
 * worker thread.
 */
import { exactlyOnceSuites } from './support/exactly-once.js';

exactlyOnceSuites({ fromDist: false });
