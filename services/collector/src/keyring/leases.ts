/**
 * Leases: who owns a processing partition or the compactor, with holder, epoch and expiry,
 * kept in the shared keyring directory (`<keyring>/leases/<name>.json`).
 *
 * Why there and not in ClickHouse: a lease needs compare-and-set (take it only if nobody else
 * holds it), and ClickHouse has none — inserts never conflict, and reads from a replica may lag.
 * The keyring directory already gives every process node an atomic, cross-host mutex (the
 * keyring lock, fsutil.ts) on a medium with the semantics the README requires; a lease is one
 * small file read and rewritten under that lock.
 *
 * Rules (the classic lease with a clock-skew allowance):
 * - Taking: under the lock, a lease that is absent, released, or past `expiresAt` plus
 *   LOCK_CLOCK_SKEW_MS is written with the next epoch, this holder and `expiresAt = now + durationMs`.
 *   Epochs are one sequence over every lease of the directory (the next is above every lease
 *   file's): a fence written with it (storage/fences.ts) also fences holders of another
 *   partition count that covered the same accounts.
 * - Renewing: under the lock, only while the file still names this holder and epoch.
 * - Partition counts: `partition-i-of-n` is not taken while a lease `partition-j-of-m` with
 *   m ≠ n is live (held and not past expiry plus allowance): a new partition count starts only
 *   once every node of the old one released its lease (SIGTERM) or stopped renewing.
 * - Holding: a holder counts its lease valid until `durationMs` after it *started* the renewal
 *   that succeeded, on its monotonic clock, so it stops (`validFor` false) at least the
 *   skew allowance before anyone else may take over, whatever the wall clocks say within it.
 */
import { readdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes, toHex } from '@cipherstat/protocol';
import { acquireLock, atomicWrite, ensurePrivateDir, LOCK_CLOCK_SKEW_MS, readWithId, unlinkDurably } from './fsutil.js';
import { KeyringError } from './errors.js';

export interface LeaseRecord {
  name: string;
  /** host/pid/random: unique per process start. */
  holder: string;
  /** Grows at every change of holder (one sequence over all leases): fences the writes of earlier holders. */
  epoch: number;
  /** Wall-clock ms after which (plus the skew allowance) another node may take the lease. */
  expiresAt: number;
  durationMs: number;
}

export type LeaseAttempt = { held: true; lease: LeaseRecord } | { held: false; lease: LeaseRecord };

/** One process's side of one named lease. */
export class Lease {
  readonly holder = `${hostname()}/${process.pid}/${toHex(randomBytes(4))}`;
  private mine: LeaseRecord | undefined;
  /** performance.now() until which this holder may act. */
  private validUntil = 0;
  private readonly path: string;

  constructor(
    private readonly keyringDir: string,
    readonly name: string,
    readonly durationMs: number,
    private readonly now: () => number = Date.now,
  ) {
    if (!/^[a-z0-9-]+$/.test(name)) throw new KeyringError('invalid_argument', `bad lease name ${name}`);
    if (!(durationMs >= 100)) throw new KeyringError('invalid_argument', 'lease duration must be at least 100 ms');
    this.path = join(keyringDir, 'leases', `${name}.json`);
  }

  /** The epoch this process holds, or undefined. */
  get epoch(): number | undefined {
    return this.mine?.epoch;
  }

  /** True while this process holds the lease with at least `marginMs` left (monotonic clock; no I/O). */
  validFor(marginMs = 0): boolean {
    return this.mine !== undefined && performance.now() + marginMs < this.validUntil;
  }

  /** What the file says now (undefined: never taken). */
  read(): LeaseRecord | undefined {
    return readLease(this.path);
  }

  /**
   * Takes the lease when free or expired, renews it when this process holds it; otherwise
   * reports the holder. Loses it (held: false) when the file names another holder or epoch.
   */
  acquireOrRenew(): LeaseAttempt {
    const started = performance.now();
    ensurePrivateDir(join(this.keyringDir, 'leases'));
    const lock = acquireLock(join(this.keyringDir, '.lock'));
    try {
      const t = this.now();
      const seen = this.read();
      const ours = seen !== undefined && this.mine !== undefined && seen.holder === this.holder && seen.epoch === this.mine.epoch;
      const free = seen === undefined || seen.holder === '' || t > seen.expiresAt + LOCK_CLOCK_SKEW_MS;
      if (!ours && !free) {
        this.drop();
        return { held: false, lease: seen! };
      }
      // Partition leases of another partition count exclude this one until released or expired:
      // nodes for 0/2 and 0/3 would process overlapping accounts.
      const other = ours ? undefined : this.otherCount(t);
      if (other) {
        this.drop();
        return { held: false, lease: other };
      }
      const next: LeaseRecord = {
        name: this.name,
        holder: this.holder,
        epoch: ours ? seen!.epoch : this.newestEpoch(seen) + 1,
        expiresAt: t + this.durationMs,
        durationMs: this.durationMs,
      };
      lock.assertHeld();
      atomicWrite(this.path, JSON.stringify(next) + '\n');
      this.mine = next;
      this.validUntil = started + this.durationMs;
      return { held: true, lease: next };
    } finally {
      lock.release();
    }
  }

  /** The highest epoch of any lease in the directory (and of `seen`). */
  private newestEpoch(seen: LeaseRecord | undefined): number {
    let newest = seen?.epoch ?? 0;
    for (const file of readdirSync(join(this.keyringDir, 'leases'))) {
      if (!file.endsWith('.json')) continue;
      newest = Math.max(newest, readLease(join(this.keyringDir, 'leases', file))?.epoch ?? 0);
    }
    return newest;
  }

  /** A live lease `partition-i-of-m` with m other than this lease's count (none for other names). */
  private otherCount(t: number): LeaseRecord | undefined {
    const mine = PARTITION.exec(this.name);
    if (!mine) return undefined;
    for (const file of readdirSync(join(this.keyringDir, 'leases'))) {
      const m = PARTITION.exec(file.replace(/\.json$/, ''));
      if (!m || m[2] === mine[2] || !file.endsWith('.json')) continue;
      const l = readLease(join(this.keyringDir, 'leases', file));
      if (l && l.holder !== '' && t <= l.expiresAt + LOCK_CLOCK_SKEW_MS) return l;
    }
    return undefined;
  }

  /** Gives the lease up at once (a graceful stop): the next holder need not wait for the expiry. */
  release(): void {
    if (!this.mine) return;
    const mine = this.mine;
    this.drop();
    const lock = acquireLock(join(this.keyringDir, '.lock'));
    try {
      const seen = this.read();
      if (seen?.holder === mine.holder && seen.epoch === mine.epoch) {
        lock.assertHeld();
        atomicWrite(this.path, JSON.stringify({ ...seen, holder: '', expiresAt: 0 }) + '\n');
      }
    } finally {
      lock.release();
    }
  }

  private drop(): void {
    this.mine = undefined;
    this.validUntil = 0;
  }
}

const PARTITION = /^partition-(\d+)-of-(\d+)$/;

function readLease(path: string): LeaseRecord | undefined {
  const file = readWithId(path);
  if (!file) return undefined;
  try {
    const r = JSON.parse(file.text) as LeaseRecord;
    if (typeof r.holder === 'string' && Number.isInteger(r.epoch) && Number.isFinite(r.expiresAt)) return r;
  } catch {
    // atomicWrite never leaves a partial file; anything else is not a lease
  }
  return undefined;
}

/** Removes a lease file (tests, an operator clearing a retired partition count). */
export function removeLease(keyringDir: string, name: string): boolean {
  return unlinkDurably(join(keyringDir, 'leases', `${name}.json`));
}
