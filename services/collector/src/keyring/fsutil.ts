/**
 * Small synchronous file helpers for the keyring. Keyring files are tiny and written
 * rarely (admin operations), so sync I/O keeps the crash-safety reasoning simple.
 */
import {
  closeSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  chmodSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes, toHex } from '@cipherstat/protocol';
import { KeyringError } from './errors.js';
import { nameDiskFull } from '../disk.js';

/** Identity of one version of a file: a rename always yields a new inode. */
export interface FileId {
  ino: number;
  mtimeMs: number;
  size: number;
}

export const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code;

const fileId = (st: Stats): FileId => ({ ino: st.ino, mtimeMs: st.mtimeMs, size: st.size });

export const sameFile = (a: FileId, b: FileId): boolean =>
  a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.size === b.size;

/** FileId of `path`, or undefined when it does not exist. */
export function statId(path: string): FileId | undefined {
  try {
    return fileId(statSync(path));
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** Contents and identity read from the same open file, or undefined when absent. */
export function readWithId(path: string): { text: string; id: FileId } | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return { id: fileId(fstatSync(fd)), text: readFileSync(fd, 'utf8') };
  } finally {
    closeSync(fd);
  }
}

/** Creates `dir` (and parents); our own directories are forced to 0700. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (e) {
    if (process.platform !== 'win32') throw e; // directories cannot be fsynced there
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Crash-safe write, mode 0600: temp file in the same directory, fsync, rename (or hard
 * link when `exclusive`), fsync the directory. A reader sees the old file or the new one,
 * never a partial one. With `exclusive`, returns undefined (and writes nothing) when
 * `path` already exists. Returns the identity of the written file.
 */
export function atomicWrite(path: string, data: string | Uint8Array, exclusive = false): FileId | undefined {
  try {
    return writeThenRename(path, data, exclusive);
  } catch (e) {
    throw nameDiskFull(e, path); // ENOSPC alone does not say which file
  }
}

function writeThenRename(path: string, data: string | Uint8Array, exclusive: boolean): FileId | undefined {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${toHex(randomBytes(6))}.tmp`);
  let id: FileId;
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    fchmodSync(fd, 0o600); // the umask could only narrow it; be explicit anyway
    writeFileSync(fd, data);
    fsyncSync(fd);
    id = fileId(fstatSync(fd));
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    if (!exclusive) renameSync(tmp, path);
    else {
      try {
        linkSync(tmp, path);
      } catch (e) {
        if (errno(e) === 'EEXIST') return undefined;
        throw e;
      }
    }
  } finally {
    rmSync(tmp, { force: true }); // no-op after a rename
  }
  fsyncDir(dir);
  return id;
}

/** Unlinks `path` and fsyncs its directory; false when it did not exist. */
export function unlinkDurably(path: string): boolean {
  try {
    rmSync(path);
  } catch (e) {
    if (errno(e) === 'ENOENT') return false;
    throw e;
  }
  fsyncDir(dirname(path));
  return true;
}

/** Removes temp files left by a crash between write and rename. Call under the lock. */
export function removeTempFiles(dir: string): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith('.') && name.endsWith('.tmp')) rmSync(join(dir, name), { force: true });
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepSync = (ms: number): void => void Atomics.wait(sleeper, 0, 0, ms);

/**
 * Cross-process mutex on one host: `path` created with O_EXCL, holding "pid token".
 * All keyring operations are synchronous, so a lock held by a dead process (or left
 * by this very process) is stale and taken over. Returns the release function.
 */
export function acquireLock(path: string, timeoutMs = 10_000): () => void {
  const token = `${process.pid} ${toHex(randomBytes(8))}\n`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeFileSync(fd, token);
      } catch (e) {
        closeSync(fd);
        rmSync(path, { force: true });
        throw nameDiskFull(e, path);
      }
      closeSync(fd);
      return () => {
        try {
          if (readFileSync(path, 'utf8') === token) rmSync(path);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
    if (lockIsStale(path)) {
      rmSync(path, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new KeyringError('keyring_busy', `keyring lock ${path} is held by another process`);
    sleepSync(5);
  }
}

function lockIsStale(path: string): boolean {
  let text: string;
  let age: number;
  try {
    text = readFileSync(path, 'utf8');
    age = Date.now() - statSync(path).mtimeMs;
  } catch {
    return false; // released meanwhile: just retry
  }
  const pid = Number(text.split(' ')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return age > 5_000; // holder crashed before writing its pid
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return errno(e) === 'ESRCH';
  }
}
