/**
 * The master key (KEK) that wraps every keyring entry at rest, behind a KMS-shaped seam.
 *
 * Sources, in order: CIPHERSTAT_MASTER_KEY (base64 of 32 bytes, or versioned
 * "v2:<base64>,v1:<base64>"), CIPHERSTAT_MASTER_KEY_FILE (a file holding either form),
 * else local files `${dataDir}/master-keys/v<n>.key` generated on first start.
 * The highest version is current; older versions only unwrap.
 *
 * Rotation (see rotateMasterKey in keyring.ts): rotate() adds version n+1, the keyring
 * re-wraps every entry under it, then destroy() removes the old versions, which makes
 * every keyring backup taken before the rotation unreadable. Env/file/KMS sources are
 * rotated outside the process (add a version to the env value, restart, re-wrap).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
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
  /** Creates version n+1 and makes it current (local only). */
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
  env?: Record<string, string | undefined>;
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

/**
 * Local key files, one per version. Re-reads the directory whenever it changed, so a
 * rotation done by another process (the CLI) is seen by a running server. Keyring
 * writes call current() under the keyring lock, which is what makes rotateMasterKey's
 * destroy step safe against a concurrent writer in another process.
 */
class LocalMasterKeys implements ManagedMasterKeys {
  readonly source = 'local' as const;
  generated = false;
  private keys = new Map<number, Uint8Array>();
  private seen: FileId | undefined;

  constructor(readonly location: string) {}

  private refresh(): void {
    const id = statId(this.location);
    if (id && this.seen && sameFile(id, this.seen)) return;
    const keys = new Map<number, Uint8Array>();
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
      keys.set(Number(m[1]), decodeKey(text, join(this.location, name)));
    }
    this.keys = keys;
    this.seen = id;
  }

  private path(version: number): string {
    return join(this.location, `v${version}.key`);
  }

  /** Writes v1 unless some version exists; true when this call created it. */
  init(): boolean {
    this.refresh();
    if (this.keys.size > 0) return false;
    const created = atomicWrite(this.path(1), toBase64(randomBytes(MASTER_KEY_BYTES)) + '\n', true) !== undefined;
    this.seen = undefined;
    this.refresh();
    return created;
  }

  /** Always re-reads the directory (writes are rare): never wraps under a version another process destroyed. */
  current(): { version: number; key: Uint8Array } {
    this.seen = undefined;
    this.refresh();
    const version = highest(this.keys);
    const key = this.keys.get(version);
    if (!key) throw new KeyringError('master_key_missing', `no master key in ${this.location}`);
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

  rotate(): number {
    this.refresh();
    const version = highest(this.keys) + 1;
    // exclusive: if another process created this version at the same moment, it is ours too
    atomicWrite(this.path(version), toBase64(randomBytes(MASTER_KEY_BYTES)) + '\n', true);
    this.seen = undefined;
    this.refresh();
    return version;
  }

  destroy(version: number): boolean {
    this.refresh();
    if (version === highest(this.keys)) {
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

export function loadMasterKeys({ dataDir, env = process.env, log }: LoadOptions): ManagedMasterKeys {
  const inline = env.CIPHERSTAT_MASTER_KEY?.trim();
  const file = env.CIPHERSTAT_MASTER_KEY_FILE?.trim();
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
  ensurePrivateDir(dir);
  const keys = new LocalMasterKeys(dir);
  keys.generated = keys.init();
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
