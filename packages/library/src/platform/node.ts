/**
 * Node platform: global fetch, a JSON file for unsent batches (atomic: temp file, fsync,
 * rename), flush on `beforeExit`, timers that never keep the process alive on their own.
 */
import { randomBytes } from 'node:crypto';
import { deflateRaw, hpkeSeal } from '@cipherstat/protocol/node';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { LibraryError } from '../errors.js';
import type { Config } from '../options.js';
import type { Store, Stored } from '../persist.js';
import type { Platform } from './types.js';

export const platform = (): Platform => ({
  fetch: (url, init) => fetch(url, init),
  store: (c) => (c.persistPath ? fileStore(c.persistPath, c.onError) : undefined),
  listen(hide) {
    process.on('beforeExit', hide);
    return () => void process.off('beforeExit', hide);
  },
  timer(fn, ms, keep) {
    const t = setTimeout(fn, ms);
    if (!keep) t.unref();
    return t;
  },
  offline: () => false,
  gpc: false,
  hpke: (pk, info, aad, plain) => hpkeSeal(pk, info, aad, plain),
  deflate: deflateRaw,
});

/**
 * The file holds one JSON value. It is read once; writes are coalesced (only the latest
 * value is written) and serialized; a write still pending at `exit` is done synchronously.
 */
export function fileStore(path: string, onError?: Config['onError']): Store {
  let value: Stored | null = null;
  try {
    value = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code != 'ENOENT') report(e);
  }
  let dirty = false;
  let writing: Promise<void> | undefined;
  // Private (0600), exclusive (never follows a planted file or link), unpredictable name.
  const tmp = `${path}.${randomBytes(8).toString('hex')}.tmp`;

  function report(e: unknown) {
    try {
      onError?.(new LibraryError('persist_failed', `${path}: ${(e as Error).message}`));
    } catch {}
  }
  async function writeLoop() {
    while (dirty) {
      dirty = false;
      const text = value && JSON.stringify(value);
      try {
        if (text == null) await rm(path, { force: true });
        else {
          const f = await open(tmp, 'wx', 0o600);
          try {
            await f.writeFile(text);
            await f.sync();
          } finally {
            await f.close();
          }
          await rename(tmp, path);
        }
      } catch (e) {
        await rm(tmp, { force: true }).catch(() => {}); // a write that failed half-way (ENOSPC) must not block the next ones (open 'wx')
        report(e);
      }
    }
    writing = undefined;
    process.off('exit', writeNow);
  }
  function writeNow() {
    if (!dirty && !writing) return;
    try {
      if (value == null) rmSync(path, { force: true });
      else {
        const t = tmp + '.exit';
        const fd = openSync(t, 'wx', 0o600);
        writeSync(fd, JSON.stringify(value));
        fsyncSync(fd);
        closeSync(fd);
        renameSync(t, path);
      }
    } catch (e) {
      report(e);
    }
  }
  return {
    read: () => value,
    write(v) {
      value = v;
      dirty = true;
      if (!writing) {
        process.on('exit', writeNow);
        writing = writeLoop();
      }
    },
    settle: async () => {
      while (writing) await writing;
    },
  };
}
