/**
 * The master key (KEK) that wraps every keyring entry at rest, behind a KMS-shaped seam.
 *
 * Sources, in order: CIPHERSTAT_MASTER_KEY (base64 of 32 bytes, or versioned
 * "v2:<base64>,v1:<base64>"), CIPHERSTAT_MASTER_KEY_FILE (a file holding either form),
 * else local files `${dataDir}/master-keys/v<n>.key`, generated only when the keyring is new
 * (no entries at all). For local files the current version is the one recorded in
 * `<keyring>/master-rotation.json` (a rotation in progress makes its target current); older
 * versions only unwrap; a version file no recorded rotation made is ignored with a warning,
 * never adopted. For env/file sources the highest version is current.
 *
 * Rotation (see rotateMasterKey in keyring.ts): rotate() adds version n+1, the keyring
 * re-wraps every entry under it, then destroy() removes the old versions, which makes
 * every keyring backup taken before the rotation unreadable. Env/file/KMS sources are
 * rotated outside the process (add a version to the env value, restart, re-wrap).
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fromBase64, randomBytes, toBase64 } from '@cipherstat/protocol';
import { KeyringError } from './errors.js';
import { atomicWrite, ensurePrivateDir, errno, sameFile, statId, unlinkDurably, type FileId } from './fsutil.js';

export const MASTER_KEY_BYTES = 32;

export interface MasterKeyProvider {
  current(): { version: number; key: Uint8Array };
  get(version: number): Uint8Array | undefined;
}

export interface ManagedMasterKeys extends MasterKeyProvider {
  /** env: CIPHERSTAT_MASTER_KEY; file: CIPHERSTAT_MASTER_KEY_FILE; local: generated files in the data dir; memory: staticMasterKeys. */
  readonly source: 'env' | 'file' | 'local' | 'memory';
  /** Env var name, key file path or key directory (never key bytes). */
  readonly location: string;
  /** True when this call generated the first local key. */
  readonly generated: boolean;
  versions(): number[];
  /** Version files present but not part of any recorded rotation: ignored, never current (local only). */
  ignoredVersions(): number[];
  /**
   * Creates a new version and records the rotation to it as in progress, which makes it
   * current (local only). A rotation already in progress is resumed: its version is returned.
   */
  rotate(): number;
  /** Removes an old version for good (local only); the current one is refused. */
  destroy(version: number): boolean;
}

/** Structural subset of a pino logger. */
export interface KeyringLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface LoadOptions {
  dataDir: string;
  /** CIPHERSTAT_MASTER_KEY (config.ts `loadSecrets`). */
  masterKey?: string;
  /** CIPHERSTAT_MASTER_KEY_FILE (config.ts `loadSecrets`). */
  masterKeyFile?: string;
  log: KeyringLog;
}

function decodeKey(text: string, where: string): Uint8Array {
  const key = fromBase64(text.trim());
  if (!key || key.length !== MASTER_KEY_BYTES) {
    throw new KeyringError('master_key_invalid', `${where}: expected base64 of ${MASTER_KEY_BYTES} bytes`);
  }
  return key;
}

/** Parses "<base64>" (version 1) or "v2:<base64>,v1:<base64>". Error messages never echo the value. */
export function parseMasterKeys(text: string, where: string): Map<number, Uint8Array> {
  const keys = new Map<number, Uint8Array>();
  const value = text.trim();
  if (!value.includes(':')) {
    keys.set(1, decodeKey(value, where));
    return keys;
  }
  for (const part of value.split(',')) {
    const m = /^v([1-9][0-9]{0,8}):(.*)$/.exec(part.trim());
    if (!m) throw new KeyringError('master_key_invalid', `${where}: expected "v<n>:<base64>" entries separated by commas`);
    const version = Number(m[1]);
    if (keys.has(version)) throw new KeyringError('master_key_invalid', `${where}: version ${version} given twice`);
    keys.set(version, decodeKey(m[2]!, `${where} v${version}`));
  }
  return keys;
}

function highest(keys: Map<number, Uint8Array>): number {
  let max = 0;
  for (const v of keys.keys()) max = Math.max(max, v);
  return max;
}

/** Fixed keys from configuration (or a test, or a KMS adapter that fetched them). */
class FixedMasterKeys implements ManagedMasterKeys {
  readonly generated = false;

  constructor(
    readonly source: 'env' | 'file' | 'memory',
    readonly location: string,
    private readonly keys: Map<number, Uint8Array>,
  ) {
    if (keys.size === 0) throw new KeyringError('master_key_config', `${location}: no master key`);
  }

  current(): { version: number; key: Uint8Array } {
    const version = highest(this.keys);
    return { version, key: this.keys.get(version)! };
  }

  get(version: number): Uint8Array | undefined {
    return this.keys.get(version);
  }

  versions(): number[] {
    return [...this.keys.keys()].sort((a, b) => a - b);
  }

  ignoredVersions(): number[] {
    return [];
  }

  rotate(): number {
    throw new KeyringError('master_key_readonly', `master key from ${this.location} is rotated where it is configured`);
  }

  destroy(): boolean {
    throw new KeyringError('master_key_readonly', `master key from ${this.location} is destroyed where it is configured`);
  }
}

/** An in-memory provider: for tests and KMS adapters. */
export function staticMasterKeys(keys: Map<number, Uint8Array> | Record<number, Uint8Array>): ManagedMasterKeys {
  const map = keys instanceof Map ? new Map(keys) : new Map(Object.entries(keys).map(([v, k]) => [Number(v), k] as const));
  for (const [v, k] of map) {
    if (!Number.isInteger(v) || v < 1 || k.length !== MASTER_KEY_BYTES) {
      throw new KeyringError('master_key_invalid', `master key v${v}: expected a positive version and ${MASTER_KEY_BYTES} bytes`);
    }
  }
  return new FixedMasterKeys('memory', 'memory', map);
}

const KEY_FILE = /^v([1-9][0-9]{0,8})\.key$/;

/** `<keyring>/master-rotation.json`: the current master key version and a rotation in progress (no secret). */
export interface RotationRecord {
  /** When `masterKeyVersion` became current (the service clock). */
  rotatedAt: number;
  masterKeyVersion: number;
  /** A rotation that started and has not finished (re-wrap, destroy): its version is current. */
  pending?: { version: number; startedAt: number };
}

const ROTATION_RECORD = 'master-rotation.json';

export function readRotationRecord(keyringDir: string): RotationRecord | undefined {
  let text: string;
  try {
    text = readFileSync(join(keyringDir, ROTATION_RECORD), 'utf8');
  } catch (e) {
    if (errno(e) === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const j = JSON.parse(text) as Partial<RotationRecord>;
    if (typeof j.rotatedAt !== 'number' || typeof j.masterKeyVersion !== 'number') return undefined;
    const p = j.pending;
    const pending = p && typeof p.version === 'number' && typeof p.startedAt === 'number' ? { version: p.version, startedAt: p.startedAt } : undefined;
    return { rotatedAt: j.rotatedAt, masterKeyVersion: j.masterKeyVersion, ...(pending ? { pending } : {}) };
  } catch {
    return undefined; // unreadable: treated as absent
  }
}

export function writeRotationRecord(keyringDir: string, record: RotationRecord): void {
  atomicWrite(join(keyringDir, ROTATION_RECORD), JSON.stringify({ format: 1, ...record }) + '\n');
}

/** The master key version an existing entry is wrapped under (its outer JSON), or undefined. */
function wrappedUnder(path: string): number | undefined {
  try {
    const v = (JSON.parse(readFileSync(path, 'utf8')) as { masterKeyVersion?: unknown }).masterKeyVersion;
    return typeof v === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}

/** What an existing keyring holds: entries mean it is not new, whatever else is missing. */
function keyringEntries(keyringDir: string): { transport: boolean; accounts: number; tombstones: number } {
  const count = (d: string) => {
    try {
      return readdirSync(join(keyringDir, d)).filter((n) => n.endsWith('.json') && !n.startsWith('.')).length;
    } catch (e) {
      if (errno(e) === 'ENOENT') return 0;
      throw e;
    }
  };
  return { transport: existsSync(join(keyringDir, 'transport.json')), accounts: count('accounts'), tombstones: count('tombstones') };
}

/**
 * Local key files, one per version. Re-reads the directory whenever it changed, so a
 * rotation done by another process (the CLI) is seen by a running server. Keyring
 * writes call current() under the keyring lock, which is what makes rotateMasterKey's
 * destroy step safe against a concurrent writer in another process.
 *
 * Current: the version recorded in `<keyring>/master-rotation.json` (the target of a
 * rotation in progress), else (a keyring from before the record) the version transport.json
 * is wrapped under, else (a new keyring) the only file. Versions above the recorded one that
 * no rotation recorded are ignored: never current, never used to unwrap, never destroyed by a
 * rotation (one that moves past such a file leaves it as an old version, destroyed by the next).
 */
class LocalMasterKeys implements ManagedMasterKeys {
  readonly source = 'local' as const;
  generated = false;
  private keys = new Map<number, Uint8Array>();
  private ignored: number[] = [];
  private currentVersion = 0;
  private seen: FileId | undefined;
  private seenRecord: FileId | undefined;

  constructor(
    readonly location: string,
    private readonly keyringDir: string,
  ) {}

  private refresh(): void {
    const id = statId(this.location);
    const recordId = statId(join(this.keyringDir, ROTATION_RECORD));
    if (id && this.seen && sameFile(id, this.seen) && (recordId === this.seenRecord || (recordId && this.seenRecord && sameFile(recordId, this.seenRecord)))) return;
    const files = new Map<number, Uint8Array>();
    for (const name of readdirSync(this.location)) {
      const m = KEY_FILE.exec(name);
      if (!m) continue;
      let text: string;
      try {
        text = readFileSync(join(this.location, name), 'utf8');
      } catch (e) {
        if (errno(e) === 'ENOENT') continue; // destroyed meanwhile
        throw e;
      }
      files.set(Number(m[1]), decodeKey(text, join(this.location, name)));
    }
    const record = readRotationRecord(this.keyringDir);
    const settled = record?.masterKeyVersion ?? wrappedUnder(join(this.keyringDir, 'transport.json')) ?? highest(files);
    const current = record?.pending?.version ?? settled;
    this.ignored = [...files.keys()].filter((v) => v > settled && v !== current).sort((a, b) => a - b);
    for (const v of this.ignored) files.delete(v);
    this.keys = files;
    this.currentVersion = current;
    this.seen = id;
    this.seenRecord = recordId;
  }

  private path(version: number): string {
    return join(this.location, `v${version}.key`);
  }

  /** Writes v1 and records it as current unless some version exists; true when this call created it. */
  init(): boolean {
    this.refresh();
    if (this.keys.size > 0 || this.ignored.length > 0) return false;
    const created = atomicWrite(this.path(1), toBase64(randomBytes(MASTER_KEY_BYTES)) + '\n', true) !== undefined;
    if (created) writeRotationRecord(this.keyringDir, { rotatedAt: Date.now(), masterKeyVersion: 1 });
    this.seen = undefined;
    this.refresh();
    return created;
  }

  /** Always re-reads the directory (writes are rare): never wraps under a version another process destroyed. */
  current(): { version: number; key: Uint8Array } {
    this.seen = undefined;
    this.refresh();
    const version = this.currentVersion;
    const key = this.keys.get(version);
    if (!key) {
      throw new KeyringError(
        'master_key_missing',
        `master key v${version} (current according to ${join(this.keyringDir, ROTATION_RECORD)}) is missing: restore ${this.path(version)} from your master key backup`,
      );
    }
    return { version, key };
  }

  get(version: number): Uint8Array | undefined {
    this.refresh();
    if (!this.keys.has(version)) {
      this.seen = undefined; // coarse directory mtimes could hide a fresh rotation
      this.refresh();
    }
    return this.keys.get(version);
  }

  versions(): number[] {
    this.refresh();
    return [...this.keys.keys()].sort((a, b) => a - b);
  }

  ignoredVersions(): number[] {
    this.refresh();
    return [...this.ignored];
  }

  rotate(): number {
    this.seen = undefined;
    this.refresh();
    const record = readRotationRecord(this.keyringDir);
    if (record?.pending) {
      // Resume: the version was recorded before anything was wrapped under it.
      const { version } = record.pending;
      if (!this.keys.has(version)) atomicWrite(this.path(version), toBase64(randomBytes(MASTER_KEY_BYTES)) + '\n', true);
      this.seen = undefined;
      return version;
    }
    // Above every file, ignored ones included: a stray file is never taken for the new key.
    const version = Math.max(this.currentVersion, ...this.ignored) + 1;
    if (!atomicWrite(this.path(version), toBase64(randomBytes(MASTER_KEY_BYTES)) + '\n', true)) {
      throw new KeyringError('keyring_busy', `${this.path(version)} appeared during the rotation: another rotation is running`);
    }
    writeRotationRecord(this.keyringDir, {
      rotatedAt: record?.rotatedAt ?? Date.now(),
      masterKeyVersion: record?.masterKeyVersion ?? this.currentVersion,
      pending: { version, startedAt: Date.now() },
    });
    this.seen = undefined;
    this.refresh();
    return version;
  }

  destroy(version: number): boolean {
    this.refresh();
    if (version === this.currentVersion) {
      throw new KeyringError('master_key_in_use', `master key v${version} is current; rotate first`);
    }
    const key = this.keys.get(version);
    const removed = unlinkDurably(this.path(version));
    key?.fill(0);
    this.keys.delete(version);
    this.seen = undefined;
    return removed;
  }
}

export function loadMasterKeys({ dataDir, masterKey, masterKeyFile, log }: LoadOptions): ManagedMasterKeys {
  const inline = masterKey?.trim();
  const file = masterKeyFile?.trim();
  if (inline && file) {
    throw new KeyringError('master_key_config', 'set CIPHERSTAT_MASTER_KEY or CIPHERSTAT_MASTER_KEY_FILE, not both');
  }
  if (inline) {
    const keys = new FixedMasterKeys('env', 'CIPHERSTAT_MASTER_KEY', parseMasterKeys(inline, 'CIPHERSTAT_MASTER_KEY'));
    log.info({ source: 'env', versions: keys.versions() }, 'master key loaded from CIPHERSTAT_MASTER_KEY');
    return keys;
  }
  if (file) {
    const path = resolve(file);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new KeyringError('master_key_config', `cannot read CIPHERSTAT_MASTER_KEY_FILE ${path}: ${errno(e) ?? 'error'}`, { cause: e });
    }
    if (process.platform !== 'win32' && (statSync(path).mode & 0o077) !== 0) {
      log.warn({ path }, 'master key file is readable by group or others; chmod 600 it');
    }
    const keys = new FixedMasterKeys('file', path, parseMasterKeys(text, path));
    log.info({ source: 'file', path, versions: keys.versions() }, 'master key loaded from CIPHERSTAT_MASTER_KEY_FILE');
    return keys;
  }
  const dir = resolve(dataDir, 'master-keys');
  const keyringDir = resolve(dataDir, 'keyring');
  const entries = keyringEntries(keyringDir);
  const existing = entries.transport || entries.accounts > 0 || entries.tombstones > 0;
  const files = existsSync(dir) ? readdirSync(dir).filter((n) => KEY_FILE.test(n)) : [];
  if (existing && files.length === 0) {
    // Never mint a master key over a keyring that has entries: they could not be opened, and
    // the new key would stay on disk and fail every later start the same way.
    const needed = wrappedUnder(join(keyringDir, 'transport.json')) ?? readRotationRecord(keyringDir)?.masterKeyVersion ?? 1;
    throw new KeyringError(
      'keyring_incomplete',
      `master key missing: ${dir} holds no master key file, but the keyring ${keyringDir} has entries ` +
        `(transport.json${entries.transport ? '' : ' missing'}, ${entries.accounts} account(s), ${entries.tombstones} tombstone(s)) wrapped under master key v${needed}. ` +
        `Restore ${join(dir, `v${needed}.key`)} from your master key backup (or set CIPHERSTAT_MASTER_KEY / CIPHERSTAT_MASTER_KEY_FILE to it). Nothing was written.`,
    );
  }
  if (!existing) {
    ensurePrivateDir(dir);
    ensurePrivateDir(keyringDir);
  }
  const keys = new LocalMasterKeys(dir, keyringDir);
  keys.generated = existing ? false : keys.init();
  keys.current(); // the current version must be here: refused (naming the file to restore) otherwise
  for (const v of keys.ignoredVersions()) {
    log.warn(
      { path: join(dir, `v${v}.key`), current: keys.current().version },
      `master key file v${v}.key is not part of any recorded rotation: ignored (never current, never used). Remove it; rotate with \`cipherstat keyring rotate-master\``,
    );
  }
  if (keys.generated) {
    log.warn(
      { path: dir, keyring: resolve(dataDir, 'keyring') },
      `!!! GENERATED A NEW MASTER KEY in ${dir} (mode 0600). It decrypts the keyring: back it up SEPARATELY ` +
        'from the keyring and the data (anyone holding both can read everything; losing it loses everything). ' +
        'In production, set CIPHERSTAT_MASTER_KEY / CIPHERSTAT_MASTER_KEY_FILE from a KMS or secret manager instead.',
    );
  } else {
    log.warn({ path: dir, versions: keys.versions() }, 'master key is a local file in the data directory; use a KMS in production');
  }
  return keys;
}
