/**
 * The keyring lock across hosts and containers: a lock's staleness never depends on
 * comparing PIDs from different PID scopes (host, boot, PID namespace). Holders in separate
 * PID namespaces (`unshare --pid`: each one is PID 1 in its own namespace) contend for one
 * lock file and are never inside together; a lock taken elsewhere is honoured until it
 * expires; an expired holder is fenced before it writes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { Keyring, KeyringError, staticMasterKeys } from '../src/keyring/index.js';
import { acquireLock, LOCK_CLOCK_SKEW_MS, pidScope } from '../src/keyring/fsutil.js';
import { tempDirs } from './support/temp-dirs.js';

const FSUTIL = fileURLToPath(new URL('../dist/keyring/fsutil.js', import.meta.url));

const tempDir = tempDirs('cs-lock-', 'each');

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as KeyringError).code;
  }
  return 'no error';
}

const foreign = (until: number, pid = process.pid) =>
  `${JSON.stringify({ scope: 'other-host 00000000-0000-0000-0000-000000000000 pid:[1]', pid, token: 'ffff', until })}\n`;

describe('keyring lock', () => {
  it('honours a lock taken in another PID scope until it expires, whatever its PID says', () => {
    const dir = tempDir();
    const path = join(dir, '.lock');
    // Our own PID, written by a process elsewhere: on one host that would mean "stale" — not here.
    writeFileSync(path, foreign(Date.now() + 60_000));
    expect(code(() => acquireLock(path, { timeoutMs: 200 }))).toBe('keyring_busy');
    expect(readFileSync(path, 'utf8')).toBe(foreign(JSON.parse(readFileSync(path, 'utf8')).until));

    // Expired (beyond the tolerated clock skew): taken over.
    writeFileSync(path, foreign(Date.now() - LOCK_CLOCK_SKEW_MS - 1_000));
    const held = acquireLock(path, { timeoutMs: 200 });
    expect(JSON.parse(readFileSync(path, 'utf8'))).toMatchObject({ scope: pidScope(), pid: process.pid });
    held.release();
    expect(existsSync(path)).toBe(false);
  });

  it('takes over a lock of a dead process in its own PID scope, in the old and the new format', () => {
    const dir = tempDir();
    const path = join(dir, '.lock');
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    writeFileSync(path, `${dead} 00\n`);
    acquireLock(path, { timeoutMs: 200 }).release();
    writeFileSync(path, `${JSON.stringify({ scope: pidScope(), pid: dead, token: 'ab', until: Date.now() + 60_000 })}\n`);
    acquireLock(path, { timeoutMs: 200 }).release();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('fences a holder whose lock was taken over: it stops before writing and does not remove the new lock', () => {
    const dir = tempDir();
    const k = Keyring.open({ dir, master: staticMasterKeys({ 1: randomBytes(32) }) });
    const path = join(dir, '.lock');
    let t = Date.now();
    const held = acquireLock(path, { ttlMs: 1_000, now: () => t });
    held.assertHeld();
    // Past its expiry a holder outside our scope could take it: the holder must not write any more.
    t += 2_000;
    expect(code(() => held.assertHeld())).toBe('no error'); // same PID scope: liveness is checked by PID, not expiry
    // Someone took it over (as a process on another host would after expiry).
    writeFileSync(path, foreign(Date.now() + 60_000, 4242));
    expect(code(() => held.assertHeld())).toBe('keyring_lock_lost');
    held.release();
    expect(readFileSync(path, 'utf8')).toContain('"pid":4242');
    rmSync(path);
    expect(k.createAccount('acct_fence_0001').version).toBe(1);
  });

  const unshare = spawnSync('unshare', ['--pid', '--fork', 'true']).status === 0;

  it('holders in separate PID namespaces are never inside together', async () => {
    // Needs root (CI runs as root, as the README says). Without it the test cannot show anything.
    expect(unshare, '`unshare --pid --fork` must work (run as root)').toBe(true);
    const dir = tempDir();
    const lock = join(dir, '.lock');
    const inside = join(dir, 'inside');
    const rounds = 150;
    const child = `
      import { openSync, closeSync, rmSync, appendFileSync } from 'node:fs';
      const [fsutil, lock, inside, rounds, log] = process.argv.slice(1);
      const { acquireLock } = await import(fsutil);
      const sleeper = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < Number(rounds); i++) {
        const held = acquireLock(lock, { timeoutMs: 120000 });
        let fd;
        try { fd = openSync(inside, 'wx'); } catch { appendFileSync(log, 'both inside\\n'); }
        if (fd !== undefined) closeSync(fd);
        Atomics.wait(sleeper, 0, 0, 1);
        held.assertHeld();
        if (fd !== undefined) rmSync(inside);
        held.release();
        appendFileSync(log, 'done ' + process.pid + '\\n');
      }`;
    const log = join(dir, 'log');
    writeFileSync(log, '');
    const run = () =>
      new Promise<number>((resolve, reject) => {
        const p = spawn('unshare', ['--pid', '--fork', process.execPath, '--input-type=module', '-e', child, FSUTIL, lock, inside, String(rounds), log], {
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        p.on('error', reject);
        p.on('exit', (c) => resolve(c ?? -1));
      });
    const codes = await Promise.all([run(), run(), run()]);
    expect(codes).toEqual([0, 0, 0]);
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    expect(lines.filter((l) => l === 'both inside')).toEqual([]);
    // Every holder is PID 1 in its own namespace: that is what a PID comparison would have got wrong.
    expect(lines).toHaveLength(3 * rounds);
    expect(new Set(lines)).toEqual(new Set(['done 1']));
  });
});
