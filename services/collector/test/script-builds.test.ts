/**
 * The script's content-named paths outlive an upgrade: shops paste `<script src="/cipherstat.<hash>.min.js"
 * integrity=…>` once, and browsers and CDNs cache it for a year. Every content-named build a
 * collector serves is kept in `<dataDir>/scripts/`; a later version on the same data directory
 * serves every build kept there whose bytes match its name. Real collector on 127.0.0.1.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { startTestCollector, type TestCollector } from './support/collector.js';

const started: TestCollector[] = [];
afterAll(async () => {
  await Promise.all(started.splice(0).map((c) => c.stop()));
});

const nameOf = (prefix: string, bytes: Buffer) => `${prefix}.${createHash('sha256').update(bytes).digest('hex').slice(0, 16)}.min.js`;

it('a build served once stays served under its content name by later starts on the same data directory; a file whose bytes do not match its name is not served', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cipherstat-test-')); // ours: a test collector given none removes its own at stop
  const first = await startTestCollector({ dataDir });
  started.push(first);
  const current = first.services.script!;
  const kept = readdirSync(join(dataDir, 'scripts')).sort();
  expect(kept).toEqual([current.storefrontTag!.immutablePath.slice(1), current.immutablePath.slice(1)].sort());
  expect(readFileSync(join(dataDir, 'scripts', current.immutablePath.slice(1))).equals(Buffer.from(current.bytes))).toBe(true);
  await first.stop();
  started.pop();

  // What an earlier version left there (the same way it keeps its own), and a file that lies about its content.
  const earlier = Buffer.from('/* an earlier build */ window.Cipherstat = {};\n');
  const earlierName = nameOf('cipherstat', earlier);
  writeFileSync(join(dataDir, 'scripts', earlierName), earlier);
  const forged = `cipherstat-storefront.${'0'.repeat(16)}.min.js`;
  writeFileSync(join(dataDir, 'scripts', forged), 'alert(1)');

  // And the current build cannot be written this time (a directory where its file goes): the
  // earlier builds are served all the same.
  rmSync(join(dataDir, 'scripts', current.immutablePath.slice(1)));
  mkdirSync(join(dataDir, 'scripts', current.immutablePath.slice(1), 'in-the-way'), { recursive: true });

  const next = await startTestCollector({ dataDir });
  started.push(next);
  const old = await fetch(`${next.url}/${earlierName}`);
  expect(old.status).toBe(200);
  expect(old.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
  expect(old.headers.get('access-control-allow-origin')).toBe('*');
  expect(old.headers.get('content-type')).toMatch(/^text\/javascript/);
  expect(Buffer.from(await old.arrayBuffer()).equals(earlier)).toBe(true);
  expect((await fetch(`${next.url}/${forged}`)).status).toBe(404);
  expect(next.logs.some((l) => l.includes(forged) && l.includes('does not hold what its name says'))).toBe(true);
  expect(next.logs.some((l) => l.includes('keeping the script build'))).toBe(true);
  // the current build, as before
  const now = await fetch(`${next.url}${current.immutablePath}`);
  expect(Buffer.from(await now.arrayBuffer()).equals(Buffer.from(current.bytes))).toBe(true);
  await next.stop();
  started.pop();
  rmSync(dataDir, { recursive: true, force: true });
});
