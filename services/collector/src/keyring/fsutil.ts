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
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { hostname } from 'node:os';
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
  // No exception for a missing file: the tombstone check misses on nearly every call (ingest asks per batch).
  const st = statSync(path, { throwIfNoEntry: false });
  return st && fileId(st);
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

/** Removes temp files left by a crash between write and rename (and locks set aside). Call under the lock. */
export function removeTempFiles(dir: string): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith('.') && (name.endsWith('.tmp') || name.endsWith('.aside'))) rmSync(join(dir, name), { force: true });
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const sleepSync = (ms: number): void => void Atomics.wait(sleeper, 0, 0, ms);

/** How long a lock taken elsewhere is honoured: keyring operations take milliseconds. */
export const LOCK_TTL_MS = 30_000;
/** Clock difference tolerated between hosts sharing a keyring (keep them on NTP). */
export const LOCK_CLOCK_SKEW_MS = 5_000;

/**
 * Where a process runs, as far as PIDs go: host name, boot and PID namespace. Two
 * processes with the same value can check each other's PID; any other pair cannot (another
 * host on a shared filesystem, another container).
 */
let here: string | undefined;
export function pidScope(): string {
  const read = (f: () => string): string => {
    try {
      return f().trim();
    } catch {
      return '';
    }
  };
  here ??= [hostname(), read(() => readFileSync('/proc/sys/kernel/random/boot_id', 'utf8')), read(() => readlinkSync('/proc/self/ns/pid'))].join(' ');
  return here;
}

/** What a lock file holds. */
interface LockRecord {
  scope: string;
  pid: number;
  token: string;
  /** Epoch ms after which a holder outside `scope` is presumed gone. */
  until: number;
}

export interface HeldLock {
  release(): void;
  /** Fencing: throws `keyring_lock_lost` unless the lock file still holds this holder's record. Call before each write. */
  assertHeld(): void;
}

export interface LockOptions {
  timeoutMs?: number;
  ttlMs?: number;
  now?: () => number;
}

/**
 * Cross-process mutex that also holds across hosts sharing the keyring directory: `path`
 * created with O_EXCL, holding a record of its holder (PID scope, PID, token, expiry).
 * A lock whose holder shares our PID scope is stale as soon as that PID is gone; a lock
 * from elsewhere is stale only after its expiry plus the tolerated clock skew (a PID from
 * another host or namespace says nothing here). Staleness never depends on comparing PIDs
 * across scopes. Stale locks are taken over by renaming them aside and checking that what
 * was moved is the lock judged stale (a fresh lock moved by mistake is put back).
 */
export function acquireLock(path: string, options: LockOptions = {}): HeldLock {
  const now = options.now ?? Date.now;
  const ttl = options.ttlMs ?? LOCK_TTL_MS;
  const deadline = now() + (options.timeoutMs ?? 10_000);
  const token = toHex(randomBytes(8));
  for (;;) {
    const record: LockRecord = { scope: pidScope(), pid: process.pid, token, until: now() + ttl };
    const text = `${JSON.stringify(record)}\n`;
    try {
      const fd = openSync(path, 'wx', 0o600);
      try {
        writeFileSync(fd, text);
        fsyncSync(fd);
      } catch (e) {
        closeSync(fd);
        rmSync(path, { force: true });
        throw nameDiskFull(e, path);
      }
      closeSync(fd);
      return {
        release: () => removeIfUnchanged(path, text),
        assertHeld: () => {
          let current = '';
          try {
            current = readFileSync(path, 'utf8');
          } catch {
            // gone: not ours any more
          }
          if (current !== text) {
            throw new KeyringError('keyring_lock_lost', `keyring lock ${path} was taken over while this process held it; nothing more was written`);
          }
        },
      };
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
    const seen = readLock(path);
    if (seen && isStale(seen, now())) {
      removeIfUnchanged(path, seen.text);
      continue;
    }
    if (now() > deadline) {
      const who = seen?.record ? ` (pid ${seen.record.pid} in ${sameScope(seen.record) ? 'this host' : `"${seen.record.scope}"`}, until ${new Date(seen.record.until).toISOString()})` : '';
      throw new KeyringError('keyring_busy', `keyring lock ${path} is held by another process${who}`);
    }
    sleepSync(5);
  }
}

const sameScope = (r: LockRecord): boolean => r.scope === pidScope();

function readLock(path: string): { text: string; ageMs: number; record?: LockRecord } | undefined {
  let text: string;
  let ageMs: number;
  try {
    text = readFileSync(path, 'utf8');
    ageMs = Date.now() - statSync(path).mtimeMs;
  } catch {
    return undefined; // released meanwhile: just retry
  }
  try {
    const r = JSON.parse(text) as LockRecord;
    if (typeof r.scope === 'string' && Number.isInteger(r.pid) && typeof r.token === 'string' && Number.isFinite(r.until)) {
      return { text, ageMs, record: r };
    }
  } catch {
    // a lock written by an older version ("pid token") or cut short by a crash
  }
  return { text, ageMs };
}

function isStale(seen: { text: string; ageMs: number; record?: LockRecord }, t: number): boolean {
  const r = seen.record;
  if (!r) {
    // Older versions wrote "pid token" on one host; an unreadable lock is a crash before its write.
    const pid = Number(seen.text.split(' ')[0]);
    return Number.isInteger(pid) && pid > 0 ? pidGone(pid) : seen.ageMs > 5_000;
  }
  if (sameScope(r)) return pidGone(r.pid);
  return t > r.until + LOCK_CLOCK_SKEW_MS;
}

function pidGone(pid: number): boolean {
  if (pid === process.pid) return true; // keyring operations are synchronous: never our own live lock
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return errno(e) === 'ESRCH';
  }
}

/**
 * Removes the lock at `path` if it still holds `text`: renamed aside first (atomic), then
 * checked, so a lock taken by someone else in between is never deleted — it is linked back.
 */
function removeIfUnchanged(path: string, text: string): void {
  const aside = `${path}.${toHex(randomBytes(6))}.aside`;
  try {
    renameSync(path, aside);
  } catch (e) {
    if (errno(e) === 'ENOENT') return;
    throw e;
  }
  let moved = '';
  try {
    moved = readFileSync(aside, 'utf8');
  } catch {
    // vanished: nothing to put back
  }
  if (moved !== text) {
    try {
      linkSync(aside, path);
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
  }
  rmSync(aside, { force: true });
}
