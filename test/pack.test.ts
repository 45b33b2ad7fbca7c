/**
 * Each package as npm would publish it: `npm pack`ed, installed into an empty project where
 * no other Cipherstat package is published (only the tarballs given), then used through an
 * ESM import, a CJS require and TypeScript (`module: nodenext`, both module systems).
 * `@arethetypeswrong/cli` and `publint` check the tarballs' package metadata.
 *
 * Installs use npm's cache first (`--prefer-offline`); the registry is only asked for what
 * the cache lacks (tweetnacl, the collector's dependencies).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules/typescript/bin/tsc');
const BIN = (name: string) => join(ROOT, 'node_modules/.bin', name);
let dir: string;
const tgz: Record<string, string> = {};

const run = (cmd: string, args: string[], cwd: string) =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });

/** An empty project with the given tarballs installed (and nothing else from this repo). */
function project(name: string, tarballs: string[]): string {
  const p = join(dir, name);
  mkdirSync(p);
  writeFileSync(join(p, 'package.json'), JSON.stringify({ name: `pack-test-${name}`, private: true }));
  run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', ...tarballs], p);
  return p;
}

/** Type-checks `files` as a consumer would, with Node16 module resolution, strict. */
function typecheck(p: string, files: Record<string, string>): void {
  for (const [f, text] of Object.entries(files)) writeFileSync(join(p, f), text);
  const compilerOptions = { noEmit: true, strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022', 'dom'], types: [] };
  writeFileSync(join(p, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: Object.keys(files) }));
  try {
    run(process.execPath, [TSC, '-p', 'tsconfig.json'], p);
  } catch (e: any) {
    throw new Error(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cipherstat-pack-'));
  const packs = join(dir, 'packs');
  mkdirSync(packs);
  run('npm', ['pack', '--silent', '--pack-destination', packs, '-w', 'packages/protocol', '-w', 'packages/library', '-w', 'packages/otel', '-w', 'services/collector'], ROOT);
  for (const f of readdirSync(packs)) tgz[f.replace(/^cipherstat-|-\d.*$/g, '')] = join(packs, f);
  expect(Object.keys(tgz).sort()).toEqual(['collector', 'library', 'otel', 'protocol']);
}, 120_000);
afterAll(() => dir && rmSync(dir, { recursive: true, force: true }));

it('@cipherstat/library installs alone and works from ESM, CJS and TypeScript (both module systems)', () => {
  const p = project('library', [tgz.library!]);
  const use = (load: string) => `${load}
const bad = (() => { try { lib.createLibrary({ endpoint: 'not a url', accountId: 'acct_12345678', writeKey: 'x' }); } catch (e) { return e; } })();
const key = Buffer.alloc(32, 7).toString('base64');
const drops = [];
const m = lib.createLibrary({ endpoint: 'http://127.0.0.1:9', accountId: 'acct_12345678', writeKey: key, persist: false, requireConsent: true, onDrop: (r) => drops.push(r) });
m.count('orders', 1);
console.log(JSON.stringify({ code: lib.isLibraryError(bad) && bad.code, drops }));`;
  writeFileSync(join(p, 'esm.mjs'), use(`import * as lib from '@cipherstat/library';`));
  writeFileSync(join(p, 'cjs.cjs'), use(`const lib = require('@cipherstat/library');`));
  const expected = { code: 'invalid_option', drops: ['no_consent'] };
  expect(JSON.parse(run(process.execPath, ['esm.mjs'], p))).toEqual(expected);
  expect(JSON.parse(run(process.execPath, ['cjs.cjs'], p))).toEqual(expected);
  const ts = (load: string) => `${load}
const options: LibraryOptions = { endpoint: 'https://metrics.example', accountId: 'acct_12345678', writeKey: 'k', onDrop: (reason: DropReason, info) => console.log(reason, info.code) };
const m: Library = createLibrary(options);
m.count('orders', 1, { country: 'DE' });
// @ts-expect-error tags are strings
m.count('orders', 1, { country: 1 });
`;
  typecheck(p, {
    'use.mts': ts(`import { createLibrary, type Library, type LibraryOptions, type DropReason } from '@cipherstat/library';`),
    'use.cts': ts(`import { createLibrary, type Library, type LibraryOptions, type DropReason } from '@cipherstat/library';`),
  });
  // nothing but the Library and its one runtime dependency
  expect(readdirSync(join(p, 'node_modules')).filter((n) => !n.startsWith('.')).sort()).toEqual(['@cipherstat', 'tweetnacl']);
  expect(readdirSync(join(p, 'node_modules/@cipherstat'))).toEqual(['library']);
});

it('@cipherstat/protocol installs alone and works from ESM, CJS (require of ESM, Node ≥ 20.19) and TypeScript', () => {
  const p = project('protocol', [tgz.protocol!]);
  const use = (load: string) => `${load}
console.log(JSON.stringify({ id: p.ACCOUNT_ID_PATTERN.test('acct_12345678'), b64: p.toBase64(new Uint8Array([1, 2, 3])) }));`;
  writeFileSync(join(p, 'esm.mjs'), use(`import * as p from '@cipherstat/protocol';`));
  writeFileSync(join(p, 'cjs.cjs'), use(`const p = require('@cipherstat/protocol');`));
  expect(JSON.parse(run(process.execPath, ['esm.mjs'], p))).toEqual({ id: true, b64: 'AQID' });
  expect(JSON.parse(run(process.execPath, ['cjs.cjs'], p))).toEqual({ id: true, b64: 'AQID' });
  typecheck(p, { 'use.mts': `import { toBase64 } from '@cipherstat/protocol';\nconst s: string = toBase64(new Uint8Array(1));\nconsole.log(s);\n` });
});

it('@cipherstat/collector installs beside the protocol tarball only, and its `cipherstat` bin runs', () => {
  const p = project('collector', [tgz.protocol!, tgz.collector!]);
  expect(run('npx', ['--no-install', 'cipherstat', 'help'], p)).toMatch(/cipherstat — /);
  // the script builds travel with the collector, for GET /cipherstat.min.js, /cipherstat-storefront.min.js (and their fallback chunk)
  expect(readdirSync(join(p, 'node_modules/@cipherstat/collector/dist/script')).sort()).toEqual(['cipherstat-fallback.min.js', 'cipherstat-storefront.min.js', 'cipherstat.min.js']);
  expect(run(process.execPath, ['--input-type=module', '-e', `await import('@cipherstat/collector'); console.log('ok')`], p).trim()).toBe('ok');
});

it('@cipherstat/otel installs beside the Library tarball (OpenTelemetry from the registry) and works from ESM, CJS and TypeScript', () => {
  const p = project('otel', [tgz.library!, tgz.otel!, '@opentelemetry/sdk-metrics@2.12.1', '@opentelemetry/api@1.9.1']);
  const use = (load: string) => `${load}
const key = Buffer.alloc(32, 7).toString('base64');
const e = new otel.CipherstatMetricExporter({ endpoint: 'http://127.0.0.1:9', accountId: 'acct_12345678', writeKey: key, persist: false });
const bad = (() => { try { new otel.CipherstatMetricExporter({ endpoint: 'http://127.0.0.1:9', accountId: 'acct_12345678', writeKey: key, maxTags: 17 }); } catch (x) { return x.message; } })();
console.log(JSON.stringify({ temporality: e.selectAggregationTemporality(sdk.InstrumentType.COUNTER) === sdk.AggregationTemporality.DELTA, bad }));
e.shutdown();`;
  writeFileSync(join(p, 'esm.mjs'), use(`import * as otel from '@cipherstat/otel';\nimport * as sdk from '@opentelemetry/sdk-metrics';`));
  writeFileSync(join(p, 'cjs.cjs'), use(`const otel = require('@cipherstat/otel');\nconst sdk = require('@opentelemetry/sdk-metrics');`));
  const expected = { temporality: true, bad: '@cipherstat/otel: invalid option maxTags: 0..16' };
  expect(JSON.parse(run(process.execPath, ['esm.mjs'], p))).toEqual(expected);
  expect(JSON.parse(run(process.execPath, ['cjs.cjs'], p))).toEqual(expected);
  const ts = (load: string) => `${load}
const options: CipherstatExporterOptions = { endpoint: 'https://metrics.example', accountId: 'acct_12345678', writeKey: 'k', temporality: 'cumulative' };
const exporter: PushMetricExporter = new CipherstatMetricExporter(options);
new MeterProvider({ readers: [new PeriodicExportingMetricReader({ exporter })] });
// @ts-expect-error temporality is 'delta' or 'cumulative'
new CipherstatMetricExporter({ ...options, temporality: 'sometimes' });
`;
  const imports = `import { CipherstatMetricExporter, type CipherstatExporterOptions } from '@cipherstat/otel';
import { MeterProvider, PeriodicExportingMetricReader, type PushMetricExporter } from '@opentelemetry/sdk-metrics';`;
  typecheck(p, { 'use.mts': ts(imports), 'use.cts': ts(imports) });
});

it('attw and publint find no problem in any tarball', () => {
  const attw = (file: string, ...extra: string[]) => run(BIN('attw'), [file, '--format', 'ascii', ...extra], dir);
  // the Library ships ESM and CJS; the protocol and the collector are ESM only (Node's require(esm) loads them)
  attw(tgz.library!, '--exclude-entrypoints', 'cipherstat.min.js', 'cipherstat-fallback.min.js', 'cipherstat-storefront.min.js');
  attw(tgz.otel!);
  attw(tgz.protocol!, '--profile', 'esm-only');
  attw(tgz.collector!, '--profile', 'esm-only');
  for (const f of Object.values(tgz)) expect(run(BIN('publint'), [f, '--strict'], dir)).not.toMatch(/Warnings|Errors/);
});
