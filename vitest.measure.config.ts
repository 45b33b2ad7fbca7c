// `npm run bench compaction`: measurements that drive the collector's classes directly, written
// as vitest files for its module aliases; kept out of `npm test` (vitest.config.ts).
import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

export default defineConfig({ ...base, test: { ...base.test, include: ['services/*/bench/**/*.measure.ts'], testTimeout: 600_000 } });
