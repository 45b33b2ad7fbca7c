#!/usr/bin/env node
// The `cipherstat` bin. It is committed (not built) so that npm can link it on the first
// `npm install` of a fresh clone, before `prepare` has built dist/cli.js.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('cipherstat: the collector is not built yet (dist/cli.js is missing); run `npm run build` in the repository first');
  process.exit(1);
}
await import(cli.href);
