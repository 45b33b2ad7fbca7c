// npm run bench [name ...]: runs every benchmark (or the named ones) one after another.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ALL = [
  ['protocol', 'bench/protocol.mjs'],
  ['library', 'packages/library/bench/library.bench.mjs'],
  ['hpke', 'bench/hpke.mjs'],
  ['records', 'bench/records.mjs'],
  ['x25519', 'bench/x25519.mjs'],
  ['ingest', 'bench/ingest.mjs'],
  ['bytes', 'bench/bytes.mjs'],
  ['storefront', 'bench/storefront.mjs'],
  ['tick', 'bench/tick.mjs'],
  ['query', 'bench/query.mjs'],
  ['merge', 'bench/merge.mjs'],
  ['shred', 'bench/shred.mjs'],
  ['abuse', 'bench/abuse.mjs'],
  // Measurements written as vitest files (they drive the collector's classes directly).
  ['compaction', 'services/collector/bench/compaction.measure.ts', ['node_modules/vitest/vitest.mjs', 'run', '--config', 'vitest.measure.config.ts']],
  // Child processes by role on one ClickHouse endpoint (the test harness, so TypeScript through tsx).
  ['cluster', 'services/collector/bench/cluster.ts', ['--import', 'tsx']],
];
const root = fileURLToPath(new URL('..', import.meta.url));
const wanted = process.argv.slice(2);
let failed = 0;
for (const [name, file, command] of ALL) {
  if (wanted.length && !wanted.includes(name)) continue;
  if (!existsSync(root + file)) {
    console.log(`\n== ${name}: ${file} not present, skipped`);
    continue;
  }
  console.log(`\n== ${name} (${file})`);
  const args = command ? [...command, file] : ['--expose-gc', file];
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
