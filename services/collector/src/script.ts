/**
 * The Library's `<script>` build, served by the collector so a shop needs nothing else:
 * `GET /cipherstat.min.js` (cached 5 minutes: always the current build) and
 * `GET /cipherstat.<hash>.min.js` (named by its content: cached for a year, immutable), both
 * with `Access-Control-Allow-Origin: *` so a tag with `integrity` and `crossorigin` loads it
 * from any shop. `GET /cipherstat-fallback.min.js` (cached 5 minutes) is the chunk the script
 * fetches from the same origin only where WebCrypto lacks X25519 or is missing (tweetnacl).
 * `GET /cipherstat-storefront.min.js` (cached 5 minutes) is the storefront build (the core
 * plus autocapture, Web Vitals and the commerce helpers; it uses the same fallback chunk).
 * `npm run build` copies both into `dist/script/`.
 *
 * A content-named path is cached for a year and pasted into shops' pages, so it must outlive an
 * upgrade: every content-named build a collector serves is kept in `<dataDir>/scripts/`, and
 * every build kept there is served under its name (checked against its bytes) by later versions.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hono } from 'hono';

/** `services/collector/dist/script/cipherstat.min.js`, from src/ (tests) and dist/ (builds). */
export const DEFAULT_SCRIPT_FILE = fileURLToPath(new URL('../dist/script/cipherstat.min.js', import.meta.url));

export interface ScriptBuild {
  bytes: Uint8Array;
  /** `/cipherstat.<16 hex of its SHA-256>.min.js` */
  immutablePath: string;
  /** Subresource Integrity: `sha384-…` */
  integrity: string;
  /** `cipherstat-fallback.min.js` beside it, when built. */
  fallback?: Uint8Array;
  /** `cipherstat-storefront.min.js` beside it, when built. */
  storefront?: Uint8Array;
  /** The storefront build's content-named path (`/cipherstat-storefront.<16 hex>.min.js`) and integrity, when built. */
  storefrontTag?: { immutablePath: string; integrity: string };
  /** Earlier builds kept in the data directory, by content-named path, not the current ones (`keepBuilds`). */
  earlier?: Map<string, Uint8Array>;
}

const KEPT_NAME = /^(cipherstat(?:-storefront)?)\.[0-9a-f]{16}\.min\.js$/;

/**
 * Keeps this build's content-named files in `dir` and adds to it every other build kept there, by
 * path, whose bytes match its name (a file that does not is never served under it). Failures (a
 * read-only directory) are reported through `warn`; the current build is served all the same.
 */
export function keepBuilds(script: ScriptBuild | undefined, dir: string, warn: (message: string) => void = () => {}): ScriptBuild | undefined {
  const earlier = new Map<string, Uint8Array>();
  const current: [string, Uint8Array | undefined][] = [
    [script?.immutablePath ?? '', script?.bytes],
    [script?.storefrontTag?.immutablePath ?? '', script?.storefront],
  ];
  for (const [path, bytes] of current) {
    if (!bytes) continue;
    const file = join(dir, path.slice(1));
    try {
      if (existsSync(file) && readFileSync(file).equals(bytes)) continue; // (a file cut short by a crash is written again)
      mkdirSync(dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      const fd = openSync(tmp, 'w', 0o644);
      try {
        writeSync(fd, bytes);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, file);
    } catch (e) {
      warn(`keeping the script build ${file}: ${(e as Error).message}`);
    }
  }
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch (e) {
    warn(`earlier script builds in ${dir}: ${(e as Error).message}`);
  }
  for (const name of names) {
    const m = KEPT_NAME.exec(name);
    if (!m || current.some(([path]) => path === `/${name}`)) continue; // (the current builds: served as such)
    try {
      const bytes = readFileSync(join(dir, name));
      if (named(m[1]!, bytes).immutablePath === `/${name}`) earlier.set(`/${name}`, bytes);
      else warn(`${join(dir, name)} does not hold what its name says: not served`);
    } catch (e) {
      warn(`earlier script build ${join(dir, name)}: ${(e as Error).message}`);
    }
  }
  return script && { ...script, earlier };
}

const named = (prefix: string, bytes: Uint8Array) => ({
  immutablePath: `/${prefix}.${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.min.js`,
  integrity: `sha384-${createHash('sha384').update(bytes).digest('base64')}`,
});

/** The build, or undefined when it was not built (the routes then answer 404 script_not_built). */
export function loadScript(file = DEFAULT_SCRIPT_FILE): ScriptBuild | undefined {
  if (!existsSync(file)) return undefined;
  const bytes = readFileSync(file);
  const beside = (name: string) => {
    const f = file.replace(/cipherstat\.min\.js$/, name);
    return f !== file && existsSync(f) ? readFileSync(f) : undefined;
  };
  const storefront = beside('cipherstat-storefront.min.js');
  return {
    bytes,
    ...named('cipherstat', bytes),
    fallback: beside('cipherstat-fallback.min.js'),
    storefront,
    ...(storefront ? { storefrontTag: named('cipherstat-storefront', storefront) } : {}),
  };
}

/**
 * The script tag for an account: the collector serves the script and receives the data. Given
 * the storefront build's path and integrity as `script`, `autocapture` adds `data-auto` (page
 * views, sources, errors, Web Vitals; README "Storefront analytics").
 */
export function scriptSnippet(o: {
  url: string;
  script: Pick<ScriptBuild, 'immutablePath' | 'integrity'>;
  accountId: string;
  writeKey: string;
  collectorKey: { keyId: string; publicKey: string };
  autocapture?: boolean;
}): string {
  return [
    `<script src="${o.url}${o.script.immutablePath}" integrity="${o.script.integrity}" crossorigin="anonymous"`,
    `        data-endpoint="${o.url}" data-account="${o.accountId}" data-write-key="${o.writeKey}"`,
    `        data-collector-key-id="${o.collectorKey.keyId}" data-collector-key="${o.collectorKey.publicKey}"${o.autocapture ? ' data-auto' : ''}></script>`,
  ].join('\n');
}

export function registerScriptRoutes(app: Hono, script: ScriptBuild | undefined): void {
  const serve = (cacheControl: string, part: 'bytes' | 'fallback' | 'storefront' | (() => Uint8Array) = 'bytes') => () => {
    const bytes = typeof part === 'function' ? part() : script?.[part];
    if (!bytes) {
      return Response.json({ error: { code: 'script_not_built', message: 'the script build is missing: run `npm run build`' } }, { status: 404 });
    }
    return new Response(bytes as Uint8Array<ArrayBuffer>, {
      headers: {
        'content-type': 'text/javascript; charset=utf-8',
        'cache-control': cacheControl,
        'access-control-allow-origin': '*',
        'cross-origin-resource-policy': 'cross-origin',
        'x-content-type-options': 'nosniff',
      },
    });
  };
  app.get('/cipherstat.min.js', serve('public, max-age=300'));
  app.get('/cipherstat-fallback.min.js', serve('public, max-age=300', 'fallback'));
  app.get('/cipherstat-storefront.min.js', serve('public, max-age=300', 'storefront'));
  if (script) app.get(script.immutablePath, serve('public, max-age=31536000, immutable'));
  if (script?.storefrontTag) app.get(script.storefrontTag.immutablePath, serve('public, max-age=31536000, immutable', 'storefront'));
  for (const [path, bytes] of script?.earlier ?? []) app.get(path, serve('public, max-age=31536000, immutable', () => bytes));
}
