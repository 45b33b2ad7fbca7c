/**
 * Disk-full errors, named: which file or directory could not be written and how much space its
 * file system has left (Node's `ENOSPC: no space left on device, write` names neither).
 */
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';

/** ENOSPC/EDQUOT from Node, NOT_ENOUGH_SPACE (243) or errno 28 from ClickHouse. */
export function isDiskFull(e: unknown): boolean {
  const err = e as { code?: unknown; clickhouseCode?: unknown; message?: unknown } | null;
  if (err?.code === 'ENOSPC' || err?.code === 'EDQUOT' || err?.clickhouseCode === 243) return true;
  return /NOT_ENOUGH_SPACE|No space left on device|errno: 28\b/.test(String(err?.message ?? ''));
}

/** Bytes available to this process on the file system holding `path` (its nearest existing parent). */
export function freeBytes(path: string): number | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      const s = statfsSync(p);
      return s.bavail * s.bsize;
    } catch {
      if (dirname(p) === p) return undefined;
    }
  }
}

/** `disk full: cannot write <path> (<n> bytes free)`. */
export function diskFullMessage(path: string): string {
  const free = freeBytes(path);
  return `disk full: cannot write ${path} (${free === undefined ? 'free space unknown' : `${free} bytes free`})`;
}

/** When `e` is a disk-full error, its message names `path` and the free space; returns `e`. */
export function nameDiskFull(e: unknown, path: string): unknown {
  if (e instanceof Error && isDiskFull(e) && !e.message.startsWith('disk full:')) e.message = `${diskFullMessage(path)}: ${e.message}`;
  return e;
}
