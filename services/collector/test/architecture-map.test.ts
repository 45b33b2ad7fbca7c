/**
 * ARCHITECTURE.md's map matches the tree: every path it names exists, every folder of the
 * collector's src/ and every file at its root is on it, and a folder whose files it lists has
 * all of them listed.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SRC = 'services/collector/src';

/** The paths the map names (relative to the repository), and the folders whose files it lists. */
function mapPaths(): { paths: string[]; listed: Map<string, string[]> } {
  const text = readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8');
  const block = /## Map\n\n```\n([\s\S]*?)\n```/.exec(text)?.[1];
  if (!block) throw new Error('ARCHITECTURE.md has no map');
  const paths: string[] = [];
  const listed = new Map<string, string[]>();
  let top = '';
  let folder = '';
  for (const line of block.split('\n')) {
    const indent = line.length - line.trimStart().length;
    const token = line.trimStart().split(/\s{2,}/)[0]!;
    if (indent === 0) {
      top = token;
      paths.push(top);
    } else if (indent === 2) {
      const [first, ...rest] = token.split(', ');
      const path = `${top}/${first}`;
      paths.push(path);
      const dir = path.endsWith('/') ? path.slice(0, -1) : path.slice(0, path.lastIndexOf('/'));
      for (const name of rest) paths.push(`${dir}/${name}`);
      folder = path.endsWith('/') ? dir : '';
    } else if (indent === 4 && folder) {
      const path = `${folder}/${token}`;
      paths.push(path);
      listed.set(folder, [...(listed.get(folder) ?? []), token]);
    }
  }
  return { paths, listed };
}

it('names only paths that exist', () => {
  const missing = mapPaths().paths.filter((p) => !existsSync(join(ROOT, p)));
  expect(missing).toEqual([]);
});

it("names every folder of the collector's src/ and every file at its root", () => {
  const { paths } = mapPaths();
  const named = new Set(paths.map((p) => p.replace(/\/$/, '')));
  const entries = readdirSync(join(ROOT, SRC));
  const folders = entries.filter((e) => statSync(join(ROOT, SRC, e)).isDirectory());
  const files = entries.filter((e) => e.endsWith('.ts'));
  expect(folders.length).toBeGreaterThan(5);
  expect(folders.filter((f) => !named.has(`${SRC}/${f}`))).toEqual([]);
  expect(files.filter((f) => !named.has(`${SRC}/${f}`))).toEqual([]);
});

it('lists every file of a folder whose files it lists', () => {
  const { listed } = mapPaths();
  expect(listed.size).toBeGreaterThan(0);
  for (const [folder, names] of listed) {
    const files = readdirSync(join(ROOT, folder)).filter((f) => f.endsWith('.ts'));
    expect(files.filter((f) => !names.includes(f)), folder).toEqual([]);
  }
});
