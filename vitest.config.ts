import { defineConfig } from 'vitest/config';
import { fileURLToPath } from 'node:url';

const src = (p: string) => fileURLToPath(new URL(p, import.meta.url));

export default defineConfig({
  resolve: {
    alias: [
      { find: /^@cipherstat\/protocol$/, replacement: src('./packages/protocol/src/index.ts') },
      { find: /^@cipherstat\/protocol\/node$/, replacement: src('./packages/protocol/src/node.ts') },
      { find: /^@cipherstat\/library$/, replacement: src('./packages/library/src/index.ts') },
    ],
  },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'services/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    // chDB binds one data directory per process: every test file gets its own fork.
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
