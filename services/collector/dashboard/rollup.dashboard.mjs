// Dashboard bundle: dashboard/app.ts (+ uPlot) → dist/dashboard/assets/app-[hash].js, uPlot's CSS
// and style.css → assets/app-[hash].css, index.html with the hashed names filled in. The
// collector serves dist/dashboard at / and /assets/* under a strict CSP (no inline code).
// Spread into the root rollup.config.mjs: `...dashboard`.
import { nodeResolve } from '@rollup/plugin-node-resolve';
import terser from '@rollup/plugin-terser';
import typescript from '@rollup/plugin-typescript';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = here('../dist/dashboard');
const require = createRequire(import.meta.url);

/** Emits the CSS bundle, the favicon and index.html (pointing at the hashed file names). */
function dashboardAssets() {
  const refs = {};
  return {
    name: 'cipherstat-dashboard-assets',
    buildStart() {
      const uplotCss = require.resolve('uplot/dist/uPlot.min.css');
      for (const f of [uplotCss, here('style.css'), here('index.html'), here('favicon.svg')]) this.addWatchFile(f);
      const css = `${readFileSync(uplotCss, 'utf8')}\n${readFileSync(here('style.css'), 'utf8')}`;
      refs.css = this.emitFile({ type: 'asset', name: 'app.css', source: css });
      refs.icon = this.emitFile({ type: 'asset', name: 'favicon.svg', source: readFileSync(here('favicon.svg')) });
    },
    generateBundle(_options, bundle) {
      const entry = Object.values(bundle).find((f) => f.type === 'chunk' && f.isEntry);
      if (!entry) this.error('no entry chunk');
      const replacements = {
        '/assets/app.js': `/${entry.fileName}`,
        '/assets/app.css': `/${this.getFileName(refs.css)}`,
        '/assets/favicon.svg': `/${this.getFileName(refs.icon)}`,
      };
      let html = readFileSync(here('index.html'), 'utf8');
      for (const [from, to] of Object.entries(replacements)) {
        if (!html.includes(`"${from}"`)) this.error(`index.html does not reference ${from}`);
        html = html.replace(`"${from}"`, `"${to}"`);
      }
      if (/<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=/i.test(html)) this.error('index.html must not contain inline script, style attributes or event handlers (CSP)');
      this.emitFile({ type: 'asset', fileName: 'index.html', source: html });
    },
  };
}

/** Removes the previous build once, so stale hashed assets are not served forever. */
function clean() {
  return {
    name: 'cipherstat-dashboard-clean',
    buildStart() {
      if (!this.meta.watchMode) rmSync(out, { recursive: true, force: true });
    },
  };
}

export default [
  {
    input: here('app.ts'),
    output: {
      dir: out,
      format: 'es',
      entryFileNames: 'assets/app-[hash].js',
      chunkFileNames: 'assets/[name]-[hash].js',
      assetFileNames: 'assets/[name]-[hash][extname]',
      sourcemap: true,
    },
    plugins: [
      clean(),
      nodeResolve({ browser: true }),
      typescript({ tsconfig: here('tsconfig.json'), noEmit: false, outDir: out, sourceMap: true, inlineSources: false }),
      terser({ format: { comments: false } }),
      dashboardAssets(),
    ],
  },
];
