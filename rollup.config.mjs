// Root rollup config: an array of builds, one section per package. `npm run build` runs it.
import alias from '@rollup/plugin-alias';
import commonjs from '@rollup/plugin-commonjs';
import { nodeResolve } from '@rollup/plugin-node-resolve';
import replace from '@rollup/plugin-replace';
import terser from '@rollup/plugin-terser';
import typescript from '@rollup/plugin-typescript';
import { dts } from 'rollup-plugin-dts';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import dashboard from './services/collector/dashboard/rollup.dashboard.mjs';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));

// ---------------------------------------------------------------------------------------
// @cipherstat/library
//   dist/index.js + dist/index.cjs                 npm (Node and browsers), tweetnacl external
//   dist/index.d.ts + dist/index.d.cts             one self-contained declaration file each for
//                                                  import and require (no @cipherstat/protocol)
//   dist/browser.js                                npm `browser` condition: no Node code; imports
//                                                  ./fallback.js dynamically, only when needed
//   dist/fallback.js                               tweetnacl (v1, X25519 fallback): imported by
//                                                  browser.js, so bundlers make it a separate chunk
//   dist/cipherstat.min.js                         <script> tag, window.Cipherstat: envelope v2 on
//                                                  WebCrypto, no tweetnacl
//   dist/cipherstat-fallback.min.js                loaded by cipherstat.min.js from its own origin
//                                                  only where WebCrypto lacks X25519 or is missing,
//                                                  checked by its SHA-256 (SRI) fixed in the core
//   dist/cipherstat-storefront.min.js              the core script + autocapture, Web Vitals and
//                                                  commerce helpers (same fallback chunk)
// @cipherstat/protocol is bundled in (only what the Library uses).
// ---------------------------------------------------------------------------------------
const lib = (p) => here(`./packages/library/${p}`);
/** A <script> build: the Library's dist file and the same bytes in the collector's package, which serves them at /<name>. */
const scriptOutputs = (name, global) =>
  [lib(`dist/${name}`), here(`./services/collector/dist/script/${name}`)].map((file) => ({ file, format: 'iife', ...(global && { name: global }) }));

// The Library bundles @cipherstat/protocol from its compiled dist (JS and .d.ts).
// `npm run build` compiles it first; a bare `npx rollup -c` does it here when it is
// missing or older than its sources.
const protocolTypes = here('./packages/protocol/dist/index.d.ts');
const protocolBuilt = here('./packages/protocol/tsconfig.tsbuildinfo');
const protocolSrc = here('./packages/protocol/src');
const mtime = (f) => statSync(f).mtimeMs;
if (!existsSync(protocolTypes) || !existsSync(protocolBuilt) || readdirSync(protocolSrc).some((f) => mtime(`${protocolSrc}/${f}`) > mtime(protocolBuilt))) {
  execFileSync(process.execPath, [createRequire(import.meta.url).resolve('typescript/bin/tsc'), '-b', here('./packages/protocol')], { stdio: 'inherit' });
}

/**
 * The fallback chunk carries tweetnacl's nacl-fast.js minus the API the Library never calls:
 * nacl.box.* and nacl.sign.* (Ed25519) are unexported and `nacl.lowlevel` keeps only
 * crypto_core_hsalsa20, so terser drops that code. The code that stays is
 * byte-for-byte upstream. Each cut asserts its anchors: if tweetnacl's source ever differs
 * from 1.0.3, the build fails instead of guessing.
 */
const naclSubset = () => ({
  name: 'nacl-subset',
  transform(code, id) {
    if (!/tweetnacl[\\/]nacl(-fast)?\.js$/.test(id)) return null;
    const cut = (text, from, to, replacement) => {
      const a = text.indexOf(from);
      const b = text.indexOf(to, a);
      if (a < 0 || b < 0 || text.indexOf(from, a + 1) >= 0) throw new Error(`nacl-subset: anchor ${JSON.stringify(from)} not found once in ${id}`);
      return text.slice(0, a) + replacement + text.slice(b);
    };
    code = cut(code, 'nacl.lowlevel = {', '\n/* High-level API */', 'nacl.lowlevel = { crypto_core_hsalsa20: crypto_core_hsalsa20 };\n');
    code = cut(code, 'nacl.box = function(', 'nacl.hash = function(', '');
    return { code, map: null };
  },
});

const libraryPlugins = ({ browser = false, declarations = false, target = 'ES2022', subset = false, script = false, fast = false } = {}) => [
  alias({
    entries: [
      // browser builds never see the Node platform
      ...(browser ? [{ find: /^\.\/platform\/index\.js$/, replacement: lib('src/platform/browser.ts') }] : []),
      // the <script> build fetches the fallback as a second script from its own origin
      ...(script ? [{ find: /^\.\/platform\/fallback\.js$/, replacement: lib('src/platform/fallback-script.ts') }] : []),
      // tweetnacl's small build (nacl-fast is ~2x bigger), except in the fallback chunk: there its
      // X25519 runs on the page's main thread for every batch, ~5x faster in nacl-fast
      ...(browser ? [{ find: /^tweetnacl$/, replacement: here(`./node_modules/tweetnacl/${fast ? 'nacl-fast' : 'nacl'}.js`) }] : []),
    ],
  }),
  nodeResolve({ browser }),
  ...(browser
    ? [
        // tweetnacl's Node branch (`require('crypto')`) is dead in browsers
        replace({ include: /tweetnacl/, preventAssignment: true, values: { "typeof require !== 'undefined'": 'false' } }),
        ...(subset ? [naclSubset()] : []),
        commonjs(),
      ]
    : []),
  typescript({
    tsconfig: lib('tsconfig.json'),
    include: ['packages/library/src/**/*.ts'],
    exclude: [],
    filterRoot: here('.'),
    compilerOptions: {
      noEmit: false,
      target,
      module: 'ESNext',
      moduleResolution: 'Bundler',
      paths: { '@cipherstat/protocol': [protocolTypes] },
      sourceMap: false,
      declaration: declarations,
      ...(declarations ? { declarationDir: lib('dist/types'), rootDir: lib('src') } : {}),
    },
    noEmitOnError: true,
  }),
];

/** Deletes dist/types/ once its declarations are bundled (they are not part of the package). */
const removeTypesDir = () => ({
  name: 'remove-types-dir',
  writeBundle() {
    rmSync(lib('dist/types'), { recursive: true, force: true });
  },
});

/** Unused protocol/library modules (and their top-level constants) may be dropped. */
const treeshake = { moduleSideEffects: (id) => !/packages[\\/](protocol[\\/]dist|library[\\/]src)[\\/](?!script\.ts|script-storefront\.ts|fallback-script\.ts)/.test(id), propertyReadSideEffects: false };
/** The core script: tweetnacl's module (imported by protocol code the core does not use) is left out unless used. */
const coreTreeshake = { ...treeshake, moduleSideEffects: (id) => !/tweetnacl/.test(id) && treeshake.moduleSideEffects(id) };
const fallbackModule = lib('src/fallback.ts');
/** `sha256-…` of the built fallback chunk, for the core script's Subresource Integrity check. */
const fallbackIntegrity = () => 'sha256-' + createHash('sha256').update(readFileSync(lib('dist/cipherstat-fallback.min.js'))).digest('base64');
const terserScript = () =>
  terser({
    ecma: 2021,
    // not `toplevel`: it would drop the `var Cipherstat` that the IIFE assigns
    compress: { passes: 3, unsafe_proto: true, unsafe: true, unsafe_arrows: true, unsafe_methods: true, pure_getters: true, pure_new: true, hoist_funs: true },
    // internal fields are spelled `_name`; nothing public or stored starts with `_`
    mangle: { properties: { regex: /^_[a-z]/i } },
    format: { comments: false },
  });

/** The <script> builds (core, storefront): they load the fallback chunk with its integrity, from the chunk built before them (rollup builds this array in order). */
const scriptPlugins = () => [
  // ES2021 (logical assignment): older than what the script already needs (addEventListener's `signal`)
  ...libraryPlugins({ browser: true, target: 'ES2021', script: true }),
  replace({ include: /fallback-script\.ts$/, preventAssignment: true, values: { __FALLBACK_INTEGRITY__: () => JSON.stringify(fallbackIntegrity()) } }),
  terserScript(),
];

const library = [
  {
    input: lib('src/index.ts'),
    external: ['tweetnacl', /^node:/],
    treeshake,
    plugins: libraryPlugins({ declarations: true }),
    // Node: the fallback (never needed with Node 20's WebCrypto X25519) stays in the same file
    output: [
      { file: lib('dist/index.js'), format: 'es', inlineDynamicImports: true },
      { file: lib('dist/index.cjs'), format: 'cjs', interop: 'default', inlineDynamicImports: true },
    ],
  },
  {
    input: lib('src/index.ts'),
    // bundlers split the fallback off: browser.js imports it dynamically, only when needed
    external: ['tweetnacl', fallbackModule],
    treeshake: coreTreeshake,
    plugins: libraryPlugins({ browser: true }),
    output: { file: lib('dist/browser.js'), format: 'es', paths: { [fallbackModule]: './fallback.js' } },
  },
  {
    input: fallbackModule,
    external: ['tweetnacl'],
    treeshake,
    plugins: libraryPlugins({ browser: true }),
    output: { file: lib('dist/fallback.js'), format: 'es' },
  },
  // built before the scripts that load it, which carry its SHA-256 (Subresource Integrity)
  {
    input: lib('src/fallback-script.ts'),
    treeshake,
    plugins: [...libraryPlugins({ browser: true, target: 'ES2021', subset: true, fast: true }), terserScript()],
    output: scriptOutputs('cipherstat-fallback.min.js'),
  },
  {
    input: lib('src/script.ts'),
    treeshake: coreTreeshake,
    plugins: scriptPlugins(),
    output: scriptOutputs('cipherstat.min.js', 'Cipherstat'), // the collector's package is self-contained
  },
  {
    input: lib('src/script-storefront.ts'),
    treeshake: coreTreeshake,
    plugins: scriptPlugins(),
    output: scriptOutputs('cipherstat-storefront.min.js', 'Cipherstat'),
  },
  {
    // the per-module declarations tsc wrote, bundled into one file per module system
    input: lib('dist/types/index.d.ts'),
    plugins: [dts({ respectExternal: true, compilerOptions: { paths: { '@cipherstat/protocol': [protocolTypes] } } }), removeTypesDir()],
    output: [
      { file: lib('dist/index.d.ts'), format: 'es' },
      { file: lib('dist/index.d.cts'), format: 'es' },
    ],
  },
];

// ---------------------------------------------------------------------------------------
// @cipherstat/otel
//   dist/index.js + dist/index.cjs                 Node (ESM and CJS); @cipherstat/library and
//                                                  @opentelemetry/* stay external (dependencies)
//   dist/index.d.ts + dist/index.d.cts             one declaration file each
// ---------------------------------------------------------------------------------------
const otel = (p) => here(`./packages/otel/${p}`);
const otelExternal = (id) => !id.startsWith('.') && !id.startsWith('/') && !id.startsWith('\0');
const otelBuild = [
  {
    input: otel('src/index.ts'),
    external: otelExternal,
    plugins: [
      typescript({
        tsconfig: otel('tsconfig.json'),
        include: ['packages/otel/src/**/*.ts'],
        exclude: [],
        filterRoot: here('.'),
        compilerOptions: {
          noEmit: false,
          module: 'ESNext',
          moduleResolution: 'Bundler',
          paths: {},
          sourceMap: false,
          declaration: true,
          declarationDir: otel('dist/types'),
          rootDir: otel('src'),
        },
        noEmitOnError: true,
      }),
    ],
    output: [
      { file: otel('dist/index.js'), format: 'es' },
      { file: otel('dist/index.cjs'), format: 'cjs' },
    ],
  },
  {
    input: otel('dist/types/index.d.ts'),
    external: otelExternal,
    plugins: [dts(), { name: 'remove-otel-types-dir', writeBundle: () => rmSync(otel('dist/types'), { recursive: true, force: true }) }],
    output: [
      { file: otel('dist/index.d.ts'), format: 'es' },
      { file: otel('dist/index.d.cts'), format: 'es' },
    ],
  },
];

// ---------------------------------------------------------------------------------------
// @cipherstat/collector dashboard: services/collector/dashboard/rollup.dashboard.mjs → services/collector/dist/dashboard/
// ---------------------------------------------------------------------------------------

export default [...library, ...otelBuild, ...dashboard];
