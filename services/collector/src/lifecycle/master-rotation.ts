/**
 * Scheduled master key (KEK) rotation and where its last run is recorded.
 *
 * A keyring backup is sealed under the master key version current when it was taken.
 * Rotating makes a new version, re-wraps every live entry under it and destroys every
 * version no file uses any more: from then on every earlier backup is noise. Rotating every
 * `rotationDays` (default 30) bounds how long any backup, and so any shredded account's
 * wrapped keys inside it, stays readable.
 *
 * The last rotation is recorded in `<keyring>/master-rotation.json` (time and version; no
 * secret, no account id), written atomically, so the schedule survives restarts. A local
 * rotation is recorded as pending before anything is wrapped under the new version and as
 * done after the old versions are destroyed: an interrupted one is resumed by the next
 * lifecycle sweep (at start and every minute) or `cipherstat keyring rotate-master`, and shown
 * until then by /metrics (cipherstat_master_key_rotation_incomplete), `verify` and
 * `cipherstat keyring check`.
 */
import { CollectorError } from '../errors.js';
import { readRotationRecord, rotateMasterKey, writeRotationRecord, type Keyring, type ManagedMasterKeys, type RotationRecord } from '../keyring/index.js';

export const DEFAULT_MASTER_ROTATION_DAYS = 30;
const DAY = 86_400_000;

export type RotationState = RotationRecord;

export interface MasterRotationReport {
  version: number;
  /** local: rotated here; otherwise the key lives outside (env, file, KMS) and was only re-wrapped to. */
  source: ManagedMasterKeys['source'];
  rewrapped: number;
  /** Versions destroyed: every backup sealed under one of them is unreadable from now on. */
  destroyed: number[];
  rotatedAt: string;
  nextRotationDue: string;
  note?: string;
}

export const readRotationState = readRotationRecord;
export const writeRotationState = writeRotationRecord;

/** A local rotation that started and has not finished: old versions (and old backups) still readable. */
export function rotationPending(keyringDir: string): RotationRecord['pending'] {
  return readRotationRecord(keyringDir)?.pending;
}

/**
 * When the current master key version became current. A version nobody recorded yet
 * (first start, or a rotation made outside this code) is recorded as current from `now`.
 */
export function lastRotation(keyringDir: string, master: ManagedMasterKeys, now: number): RotationState {
  const state = readRotationState(keyringDir);
  if (state?.pending) return state; // finished (and recorded) by rotateMaster, never here
  const version = master.current().version;
  if (state && state.masterKeyVersion === version) return state;
  const fresh = { rotatedAt: now, masterKeyVersion: version };
  writeRotationState(keyringDir, fresh);
  return fresh;
}

/** Due after `rotationDays`, or at once when a rotation was interrupted (it is resumed). */
export function rotationDue(keyringDir: string, master: ManagedMasterKeys, now: number, rotationDays: number): boolean {
  const last = lastRotation(keyringDir, master, now);
  return last.pending !== undefined || now - last.rotatedAt >= rotationDays * DAY;
}

/**
 * Rotates the master key, destroys every unused old version, records the time. A master key
 * configured outside (env, file, KMS) cannot be rotated here: the operator adds a version
 * there and restarts; this then re-wraps every entry under it (and records the time), and
 * the operator removes the old version from the configuration.
 */
export function rotateMaster(
  keyring: Keyring,
  master: ManagedMasterKeys,
  { now, rotationDays = DEFAULT_MASTER_ROTATION_DAYS }: { now: number; rotationDays?: number },
): MasterRotationReport {
  const times = { rotatedAt: new Date(now).toISOString(), nextRotationDue: new Date(now + rotationDays * DAY).toISOString() };
  if (master.source !== 'local') {
    const before = readRotationState(keyring.dir);
    const r = keyring.rewrapAll();
    if (before?.masterKeyVersion === r.masterKeyVersion) {
      throw new CollectorError(
        409,
        'master_key_external',
        `the master key comes from ${master.location}: add a new version there, restart, then run this to re-wrap the keyring`,
      );
    }
    writeRotationState(keyring.dir, { rotatedAt: now, masterKeyVersion: r.masterKeyVersion });
    const old = master.versions().filter((v) => v !== r.masterKeyVersion && !r.versionsInUse.includes(v));
    return {
      version: r.masterKeyVersion,
      source: master.source,
      rewrapped: r.rewrapped,
      destroyed: [],
      ...times,
      note: old.length ? `remove master key version(s) ${old.join(', ')} from ${master.location}: until then old backups stay readable` : undefined,
    };
  }
  const r = rotateMasterKey(keyring, master, { destroyOld: true });
  writeRotationState(keyring.dir, { rotatedAt: now, masterKeyVersion: r.version });
  return { ...r, source: master.source, ...times };
}
