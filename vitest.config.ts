import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const src = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    alias: [
      { find: /^@cipherstat\/protocol$/, replacement: src('./packages/protocol/src/index.ts') },
      { find: /^@cipherstat\/protocol\/node$/, replacement: src('./packages/protocol/src/node.ts') },
      { find: /^@cipherstat\/library$/, replacement: src('./packages/library/src/index.ts') },
      { find: /^@cipherstat\/otel$/, replacement: src('./packages/otel/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'services/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // chDB binds one data directory per process: every test file gets its own fork.
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    // Sized for a loaded machine (`npm run test:stress`: every core busy): a test that is slow
    // there is slow, not failing. Speed is measured by `npm run bench`, never by a timeout.
    testTimeout: 600_000,
    hookTimeout: 600_000,
  },
});
