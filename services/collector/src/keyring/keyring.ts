/**
 * The keyring: its own store (never ClickHouse), one directory, every secret wrapped
 * under the master key (KEK).
 *
 *   <dir>/transport.json            collector transport key pairs (wrapped)
 *   <dir>/accounts/<accountId>.json one account's key versions (wrapped)
 *   <dir>/tombstones/<accountId>.json  sticky deletion markers (not secret, not wrapped)
 *   <dir>/.lock                     cross-process mutex for every mutation
 *
 * A wrapped file is JSON { format, kind, id, masterKeyVersion, sealed } where
 * sealed = secretSeal(KEK[v], JSON { kind, id, body }). NaCl secretbox is not
 * key-committing and files can be swapped, so kind and id are bound inside the
 * plaintext and checked against the file's location after opening.
 *
 * Caches and other processes: unwrapped keys are cached; after `cacheTtlMs` (default
 * 250 ms, at most 1 s) a lookup re-checks. So a shred by another process is honoured here
 * at most `cacheTtlMs` after it returned; in this process it is immediate. A positive
 * tombstone answer is cached forever (tombstones are sticky). The re-check is one pair of
 * stat calls for the whole keyring, not per account: every change a keyring makes — a
 * tombstone, an entry written, replaced or removed — creates, renames or unlinks a file in
 * `tombstones/` or `accounts/`, which changes that directory's mtime. While both directories
 * are as they were when an entry was last checked on its own (tombstone present? account file
 * same inode/mtime/size?), the entry needs no stat of its own (`directories()`: a storefront's
 * 10,000 accounts cost two stats per 250 ms instead of two per account).
 *
 * All I/O is synchronous: files are tiny, mutations are rare admin operations, and the
 * hot paths (accountKeys, transportKey) are served from memory.
 */
import { accessSync, constants, readFileSync, readdirSync, renameSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  ACCOUNT_ID_PATTERN,
  equalBytes,
  fromBase64,
  fromUtf8,
  keyPair,
  randomBytes,
  secretOpen,
  secretSeal,
  toBase64,
  toHex,
  utf8,
  type KeyPair,
} from '@cipherstat/protocol';
import { destroyKeys } from '@cipherstat/protocol/node';
import { KeyringError } from './errors.js';
import {
  acquireLock,
  type HeldLock,
  atomicWrite,
  ensurePrivateDir,
  errno,
  readWithId,
  removeTempFiles,
  sameFile,
  statId,
  unlinkDurably,
  type FileId,
} from './fsutil.js';
import type { ManagedMasterKeys, MasterKeyProvider } from './master-key.js';
import { FifoMap } from '../fifo-map.js';

export const DEFAULT_TRANSPORT_OVERLAP_MS = 7 * 24 * 60 * 60 * 1000;
export const DEFAULT_CACHE_TTL_MS = 250;
/** Accounts whose unwrapped keys stay in memory (~0.5 KB each). */
const ACCOUNT_CACHE_MAX = 50_000;
const FORMAT = 1;
const KEY_BYTES = 32;

export interface AccountKeys {
  version: number;
  /** The write key: public half of the account X25519 pair. */
  publicKey: Uint8Array;
  secretKey: Uint8Array;
  /** Encrypts everything stored for the account. */
  dataKey: Uint8Array;
  /** Keys the HMAC pseudonyms of names and tag values. */
  macKey: Uint8Array;
  createdAt: number;
}

export interface TransportKey extends KeyPair {
  /** 16 lowercase hex chars. */
  keyId: string;
  createdAt: number;
  /** null for the current key; for a previous key, the end of its overlap window. */
  acceptUntil: number | null;
}

export interface Tombstone {
  accountId: string;
  tombstonedAt: number;
}

export interface ShredReport extends Tombstone {
  /** What was removed: the account file, its key versions, the in-memory cache. */
  destroyed: string[];
}

export interface KeyringOptions {
  dir: string;
  master: MasterKeyProvider;
  now?: () => number;
  /** How long cached keys are trusted before re-checking the files (0..1000, default 250). */
  cacheTtlMs?: number;
  /**
   * transport.json: `require` (default) refuses a keyring that has entries but no (readable)
   * transport.json; a new keyring (no entries at all) gets one. `create` makes one when it is
   * missing (an explicit command). `optional` opens without it (restore, check).
   */
  transport?: 'require' | 'create' | 'optional';
  /**
   * An ingest node's keyring: transport keys only. Refuses to open (`keyring_has_accounts`)
   * when an account entry in the directory can be read, never reads one, never writes
   * (no lock either: the directory may be read-only), and answers every account key lookup
   * or change with `transport_only`. Written by `exportTransport`.
   */
  transportOnly?: boolean;
}

/** What `cipherstat keyring check` and the start-up check find. */
export interface KeyringCheck {
  dir: string;
  /** Entries tried: transport.json and every account file without a tombstone. */
  entries: number;
  /** Every entry that cannot be read: file (relative to the keyring), account (if any), code, reason. */
  problems: { file: string; accountId?: string; code: string; reason: string }[];
}

export interface RotateDataKeysOptions {
  /** Drop every older version from the entry (old data/MAC keys become unrecoverable). */
  destroyOld?: boolean;
  /** Also issue a new account key pair (a new write key: every SDK config must change). */
  rotateKeyPair?: boolean;
}

export interface RestoreReport {
  restored: string[];
  skipped: { accountId: string; reason: 'tombstoned' | 'exists' }[];
  tombstonesApplied: string[];
  transportKeysAdded: number;
}

type EntryKind = 'transport' | 'account' | 'backup';
type Json = Record<string, unknown>;

interface Cached<T> {
  value: T;
  file: FileId;
  checkedAt: number;
  masterKeyVersion: number;
  /** The directories' stamp (`Keyring.directories()`) under which the file was last checked on its own. */
  dirs?: number;
}

/**
 * A directory stamp is trusted only once its newest mtime is this much older than the moment
 * it was taken: file times tick at the filesystem's granularity (a jiffy on ext4 or tmpfs, 1 s
 * on ext3 or HFS+, 2 s on FAT), and a change within the tick of the previous one would leave
 * the mtime as it was. Until then (and for this long after any change) every lookup checks its
 * account's files itself. File times and this process's clock are taken to be the same clock
 * (a local filesystem).
 */
const SETTLED_MS = 5000;

// ---------------------------------------------------------------- serialization

const corrupt = (where: string, what: string) => new KeyringError('corrupt_entry', `${where}: ${what}`);

function keyField(j: Json, name: string, where: string): Uint8Array {
  const v = j[name];
  const bytes = typeof v === 'string' ? fromBase64(v) : null;
  if (!bytes || bytes.length !== KEY_BYTES) throw corrupt(where, `bad ${name}`);
  return bytes;
}

function numField(j: Json, name: string, where: string): number {
  const v = j[name];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw corrupt(where, `bad ${name}`);
  return v;
}

function list(v: unknown, where: string): Json[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'object' && x !== null)) throw corrupt(where, 'expected a list');
  return v as Json[];
}

const accountToJson = (k: AccountKeys) => ({
  version: k.version,
  publicKey: toBase64(k.publicKey),
  secretKey: toBase64(k.secretKey),
  dataKey: toBase64(k.dataKey),
  macKey: toBase64(k.macKey),
  createdAt: k.createdAt,
});

function accountFromJson(j: Json, where: string): AccountKeys {
  return {
    version: numField(j, 'version', where),
    publicKey: keyField(j, 'publicKey', where),
    secretKey: keyField(j, 'secretKey', where),
    dataKey: keyField(j, 'dataKey', where),
    macKey: keyField(j, 'macKey', where),
    createdAt: numField(j, 'createdAt', where),
  };
}

function parseAccountVersions(v: unknown, where: string): AccountKeys[] {
  const versions = list(v, where).map((j) => accountFromJson(j, where));
  if (versions.length === 0) throw corrupt(where, 'no key versions');
  return versions;
}

const transportToJson = (k: TransportKey) => ({
  keyId: k.keyId,
  publicKey: toBase64(k.publicKey),
  secretKey: toBase64(k.secretKey),
  createdAt: k.createdAt,
  acceptUntil: k.acceptUntil,
});

function transportFromJson(j: Json, where: string): TransportKey {
  if (typeof j.keyId !== 'string' || !/^[0-9a-f]{16}$/.test(j.keyId)) throw corrupt(where, 'bad keyId');
  if (j.acceptUntil !== null) numField(j, 'acceptUntil', where);
  return {
    keyId: j.keyId,
    publicKey: keyField(j, 'publicKey', where),
    secretKey: keyField(j, 'secretKey', where),
    createdAt: numField(j, 'createdAt', where),
    acceptUntil: j.acceptUntil as number | null,
  };
}

function parseTransportKeys(v: unknown, where: string): TransportKey[] {
  const keys = list(v, where).map((j) => transportFromJson(j, where));
  if (keys.filter((k) => k.acceptUntil === null).length !== 1) throw corrupt(where, 'needs exactly one current key');
  return keys;
}

function newTransportKey(createdAt: number): TransportKey {
  return { keyId: toHex(randomBytes(8)), ...keyPair(), createdAt, acceptUntil: null };
}

/** Every key independently random: nothing is derived from anything else. */
function newAccountVersion(version: number, createdAt: number, pair: KeyPair = keyPair()): AccountKeys {
  return { version, ...pair, dataKey: randomBytes(KEY_BYTES), macKey: randomBytes(KEY_BYTES), createdAt };
}

function checkAccountId(accountId: string): void {
  if (typeof accountId !== 'string' || !ACCOUNT_ID_PATTERN.test(accountId)) {
    throw new KeyringError('invalid_account_id', 'account id must match ' + String(ACCOUNT_ID_PATTERN));
  }
}

// ---------------------------------------------------------------- keyring

export class Keyring {
  readonly dir: string;
  private readonly accountsDir: string;
  private readonly tombstonesDir: string;
  private readonly transportPath: string;
  private readonly lockPath: string;
  private held: HeldLock | undefined;
  /** Unwrapped account keys, bounded whatever the number of accounts (a miss re-reads and unwraps the file). */
  private readonly accounts = new FifoMap<string, Cached<AccountKeys[]>>(ACCOUNT_CACHE_MAX);
  /** accountKeys() answered from memory (hit) or by reading and unwrapping the file (miss). */
  readonly stats = { hit: 0, miss: 0 };
  private readonly tombstoned = new Set<string>();
  private transport: Cached<TransportKey[]> | undefined;
  /** The last stat of `tombstones/` and `accounts/`: when (this.now()), what, and its stamp number. */
  private dirs: { at: number; tombstones?: FileId; accounts?: FileId; settled: boolean; stamp: number } = { at: -Infinity, settled: false, stamp: 0 };

  private constructor(
    dir: string,
    private readonly master: MasterKeyProvider,
    private readonly now: () => number,
    private readonly ttl: number,
    private readonly transportOnly = false,
  ) {
    this.dir = dir;
    this.accountsDir = join(dir, 'accounts');
    this.tombstonesDir = join(dir, 'tombstones');
    this.transportPath = join(dir, 'transport.json');
    this.lockPath = join(dir, '.lock');
  }

  /** Opens (creating on first use) the keyring in `dir`; fails with unwrap_failed under a wrong master key. */
  static open({ dir, master, now = Date.now, cacheTtlMs = DEFAULT_CACHE_TTL_MS, transport = 'require', transportOnly = false }: KeyringOptions): Keyring {
    if (!(cacheTtlMs >= 0 && cacheTtlMs <= 1000)) throw new KeyringError('invalid_argument', 'cacheTtlMs must be within 0..1000');
    const k = new Keyring(resolve(dir), master, now, cacheTtlMs, transportOnly);
    if (transportOnly) return k.openTransportOnly();
    for (const d of [k.dir, k.accountsDir, k.tombstonesDir]) ensurePrivateDir(d);
    k.locked(() => {
      for (const d of [k.dir, k.accountsDir, k.tombstonesDir]) removeTempFiles(d);
      if (statId(k.transportPath) || transport === 'optional') return; // optional: a restore brings the backup's
      const accounts = k.liveAccountFiles().length;
      const tombstones = k.listTombstones().length;
      // A collector key is minted only for a new keyring or on request: clients pin its id.
      if ((accounts === 0 && tombstones === 0) || transport === 'create') k.writeTransport([newTransportKey(k.now())], true);
      else {
        throw new KeyringError(
          'keyring_incomplete',
          `${k.transportPath} is missing, but the keyring holds ${accounts} account(s) and ${tombstones} tombstone(s). ` +
            'Restore it from a keyring backup (`cipherstat keyring restore FILE`); without a backup, `cipherstat keyring new-transport-key` issues a new collector key ' +
            '(clients pinned to the old key id get 400 unknown_key_id until they fetch the new one). Nothing was written.',
          { file: k.transportPath, reason: 'missing' },
        );
      }
    });
    if (transport !== 'optional') k.checkTransport();
    return k;
  }

  /** `transportOnly`: refuse readable account entries (without reading them), then read transport.json. */
  private openTransportOnly(): Keyring {
    const readable = readableEntries(this.accountsDir);
    if (readable.length > 0) {
      throw new KeyringError(
        'keyring_has_accounts',
        `an ingest-only node holds transport keys only, but it can read ${readable.length} account entr${readable.length === 1 ? 'y' : 'ies'} in ${this.accountsDir} ` +
          `(${readable.slice(0, 3).join(', ')}${readable.length > 3 ? ', …' : ''}). Give it the keyring \`cipherstat keyring export-transport --out DIR\` writes ` +
          '(and its data directory DIR), not the full keyring. Nothing was read.',
        { file: join(this.accountsDir, readable[0]!), reason: 'account entries readable' },
      );
    }
    if (!statId(this.transportPath)) {
      throw new KeyringError(
        'keyring_incomplete',
        `${this.transportPath} is missing: write this ingest node's keyring with \`cipherstat keyring export-transport --out DIR\` on a node that holds the full keyring.`,
        { file: this.transportPath, reason: 'missing' },
      );
    }
    this.transportKeys(); // unwrap_failed / master_key_missing name the file
    return this;
  }

  /**
   * Writes a transport-only keyring into `dir` (an ingest node's `<data dir>/keyring`): the
   * current transport key and the previous ones still accepted, wrapped under `master` (the
   * ingest nodes' own master key), nothing else. Refuses an existing transport.json there.
   */
  exportTransport(dir: string, master: MasterKeyProvider): { dir: string; keyIds: string[]; masterKeyVersion: number } {
    this.assertFull();
    const target = new Keyring(resolve(dir), master, this.now, this.ttl, true);
    if (readableEntries(target.accountsDir).length > 0) throw new KeyringError('invalid_argument', `${target.accountsDir} holds account entries: choose an empty directory`);
    ensurePrivateDir(target.dir);
    const keys = this.acceptedTransportKeys();
    const { text, version } = target.wrap('transport', 'collector', { keys: keys.map(transportToJson) });
    if (!atomicWrite(target.transportPath, text, true)) throw new KeyringError('invalid_argument', `${target.transportPath} exists: export into an empty directory`);
    return { dir: target.dir, keyIds: keys.map((k) => k.keyId), masterKeyVersion: version };
  }

  /** Account keys and every change need the full keyring: a transport-only one refuses. */
  private assertFull(): void {
    if (this.transportOnly) {
      throw new KeyringError('transport_only', `${this.dir} is a transport-only keyring (an ingest node's): it holds no account keys and is never written`);
    }
  }

  /** Reads transport.json, or refuses with what is wrong and what to restore. */
  private checkTransport(): void {
    try {
      this.transportKeys();
    } catch (e) {
      if (!(e instanceof KeyringError)) throw e;
      const where = (this.master as { location?: string }).location ?? 'the configured master key';
      let advice: string;
      if (e.code === 'master_key_missing') advice = `restore that master key version (${where}) from your master key backup`;
      else if (e.code === 'unwrap_failed' && !this.someAccountOpens()) {
        advice = `the master key (${where}) is not the one this keyring was written with: restore the right one from your master key backup`;
      } else advice = 'transport.json is damaged: restore it from a keyring backup (`cipherstat keyring restore FILE`)';
      throw new KeyringError('keyring_incomplete', `${e.message}; ${advice}. Nothing was written.`, { cause: e, file: this.transportPath, reason: e.message.replace(/^transport\.json: /, '') });
    }
  }

  /** True when some account entry unwraps (so the master key is right); false when none does or there are none. What it unwraps is zeroed. */
  private someAccountOpens(): boolean {
    for (const id of this.listAccounts().slice(0, 20)) {
      try {
        const loaded = this.readAccount(id);
        if (loaded) {
          destroyVersions(loaded.value, []);
          return true;
        }
      } catch {
        // try the next one
      }
    }
    return false;
  }

  /**
   * Unwraps transport.json and every account entry without a tombstone; lists each one that
   * cannot be read, with the file and the reason. Reads only (what it unwraps stays in the
   * bounded account key cache).
   */
  check(): KeyringCheck {
    this.assertFull();
    const problems: KeyringCheck['problems'] = [];
    const report = (file: string, e: unknown, accountId?: string) => {
      const code = e instanceof KeyringError ? e.code : 'io_error';
      const reason = (e instanceof Error ? e.message : String(e)).replace(/^[^:]*\.json: /, '');
      problems.push({ file, ...(accountId ? { accountId } : {}), code, reason });
    };
    let entries = 1;
    if (!statId(this.transportPath)) problems.push({ file: 'transport.json', code: 'corrupt_entry', reason: 'missing' });
    else {
      try {
        this.readTransport();
      } catch (e) {
        report('transport.json', e);
      }
    }
    // What it unwraps is kept in the bounded cache (as accountKeys() would, under the directory
    // stamp taken before any file was read), so a process's first batch of each account does
    // not read and unwrap its file again; the rest (cache full, or already cached) is zeroed.
    const stamp = this.directories(this.now());
    for (const id of this.listAccounts()) {
      entries++;
      try {
        const loaded = this.readAccount(id);
        if (loaded && !this.accounts.has(id) && this.accounts.size < ACCOUNT_CACHE_MAX) {
          loaded.dirs = stamp;
          this.accounts.set(id, loaded);
        } else if (loaded) destroyVersions(loaded.value, []);
      } catch (e) {
        report(`accounts/${id}.json`, e, id);
      }
    }
    return { dir: this.dir, entries, problems };
  }

  // ---------------------------------------------------------------- transport keys

  currentTransportKey(): TransportKey {
    return this.transportKeys().find((k) => k.acceptUntil === null)!;
  }

  /** The current key first, then previous keys still inside their overlap window, newest first. */
  acceptedTransportKeys(): TransportKey[] {
    const t = this.now();
    const keys = this.transportKeys();
    const previous = keys.filter((k) => k.acceptUntil !== null && k.acceptUntil > t).sort((a, b) => b.createdAt - a.createdAt);
    return [keys.find((k) => k.acceptUntil === null)!, ...previous];
  }

  /** The accepted key with this id, or undefined (unknown or past its overlap window). */
  transportKey(keyId: string): TransportKey | undefined {
    const t = this.now();
    for (const k of this.transportKeys()) {
      if (k.keyId === keyId && (k.acceptUntil === null || k.acceptUntil > t)) return k;
    }
    return undefined;
  }

  /** New current key; the old one stays accepted for `overlapMs`. Expired keys are destroyed. */
  rotateTransportKey({ overlapMs = DEFAULT_TRANSPORT_OVERLAP_MS }: { overlapMs?: number } = {}): TransportKey {
    if (!(overlapMs >= 0 && Number.isFinite(overlapMs))) throw new KeyringError('invalid_argument', 'overlapMs must be >= 0');
    return this.locked(() => {
      const t = this.now();
      const kept = this.readTransport()
        .value.filter((k) => k.acceptUntil === null || k.acceptUntil > t)
        .map((k) => (k.acceptUntil === null ? { ...k, acceptUntil: t + overlapMs } : k));
      const next = newTransportKey(t);
      this.writeTransport([...kept, next]);
      return next;
    });
  }

  // ---------------------------------------------------------------- accounts

  createAccount(accountId: string): AccountKeys {
    checkAccountId(accountId);
    return this.locked(() => {
      if (this.tombstoneExists(accountId)) throw tombstonedError(accountId);
      const keys = newAccountVersion(1, this.now());
      if (!this.writeAccount(accountId, [keys], true)) {
        throw new KeyringError('account_exists', `account ${accountId} already has keys`);
      }
      return keys;
    });
  }

  /** All key versions, oldest first; undefined when the account has none or is tombstoned. */
  accountKeys(accountId: string): AccountKeys[] | undefined {
    checkAccountId(accountId);
    this.assertFull();
    const t = this.now();
    const cached = this.accounts.get(accountId);
    if (cached && this.fresh(cached, t)) {
      this.stats.hit++;
      return [...cached.value];
    }
    const stamp = this.directories(t);
    if (cached && stamp !== undefined && cached.dirs === stamp) {
      // Nothing was created, renamed or removed in either directory since the entry's own check.
      this.stats.hit++;
      cached.checkedAt = this.dirs.at; // trusted from what the directories showed then, not from now
      return [...cached.value];
    }
    this.accounts.delete(accountId);
    const id = this.tombstoneExists(accountId) ? undefined : statId(this.accountPath(accountId));
    if (!id) {
      if (cached) destroyVersions(cached.value, []); // shredded, here or by another process
      return undefined;
    }
    if (cached && sameFile(cached.file, id)) {
      this.stats.hit++;
      cached.checkedAt = t;
      cached.dirs = stamp;
      this.accounts.set(accountId, cached);
      return [...cached.value];
    }
    this.stats.miss++;
    const loaded = this.readAccount(accountId);
    if (cached) {
      destroyVersions(cached.value, loaded?.value ?? []); // another process wiped or shredded
      if (loaded) loaded.value = keepHeld(loaded.value, cached.value);
    }
    if (!loaded) return undefined;
    loaded.dirs = stamp;
    this.accounts.set(accountId, loaded);
    return [...loaded.value];
  }

  /**
   * The keys of an account the service knows of: undefined only when it is tombstoned
   * (deleted). An entry missing without a tombstone, or one that cannot be read (truncated,
   * garbled, wrapped under a master key version that is not available), throws
   * `account_key_unavailable` naming the file and the reason: only a tombstone means deleted.
   */
  requireAccountKeys(accountId: string): AccountKeys[] | undefined {
    let keys: AccountKeys[] | undefined;
    try {
      keys = this.accountKeys(accountId);
    } catch (e) {
      if (!(e instanceof KeyringError) || e.code === 'invalid_account_id' || e.code === 'keyring_busy') throw e;
      throw this.unavailable(accountId, e.message.replace(/^accounts\/[^:]*: /, ''), e);
    }
    if (keys || this.tombstoneExists(accountId)) return keys; // shred writes the tombstone before unlinking
    throw this.unavailable(accountId, 'file missing and no tombstone (only a tombstone means deleted)');
  }

  private unavailable(accountId: string, reason: string, cause?: unknown): KeyringError {
    const file = this.accountPath(accountId);
    return new KeyringError('account_key_unavailable', `accounts/${accountId}.json: ${reason}`, { cause, file, reason });
  }

  /**
   * Adds a key version with a fresh data key and MAC key. By default the account key pair
   * is carried over, so the write key in deployed SDK configs keeps working and batches
   * sealed to it can still be opened; `rotateKeyPair` issues a new pair as well.
   * `destroyOld` removes every older version from the entry (the "wipe": data and
   * pseudonyms written under old versions become unreadable). Note that with the pair
   * carried over, raw batches still sealed to the write key remain openable.
   */
  rotateDataKeys(accountId: string, { destroyOld = false, rotateKeyPair = false }: RotateDataKeysOptions = {}): {
    keys: AccountKeys;
    destroyedVersions: number[];
  } {
    checkAccountId(accountId);
    return this.locked(() => {
      if (this.tombstoneExists(accountId)) throw tombstonedError(accountId);
      const read = this.readAccount(accountId)?.value;
      if (!read) throw new KeyringError('account_not_found', `account ${accountId} has no keys`);
      const cached = this.accounts.get(accountId)?.value;
      const old = cached ? keepHeld(read, cached) : read;
      const last = old[old.length - 1]!;
      const pair = rotateKeyPair ? keyPair() : { publicKey: last.publicKey.slice(), secretKey: last.secretKey.slice() };
      const keys = newAccountVersion(last.version + 1, this.now(), pair);
      this.writeAccount(accountId, destroyOld ? [keys] : [...old, keys], false);
      // The destroyed versions, every copy this process holds: zeroed, imported keys dropped.
      if (destroyOld) destroyVersions(old, []);
      if (cached) destroyVersions(cached, destroyOld ? [] : old);
      return { keys, destroyedVersions: destroyOld ? old.map((k) => k.version) : [] };
    });
  }

  /**
   * Adopts an existing account key pair (moving an account between deployments, and the
   * published test vectors, whose keys are fixed). Data and MAC keys are fresh and random.
   */
  importAccount(accountId: string, pair: KeyPair): AccountKeys {
    checkAccountId(accountId);
    return this.locked(() => {
      if (this.tombstoneExists(accountId)) throw tombstonedError(accountId);
      const keys = newAccountVersion(1, this.now(), { publicKey: pair.publicKey.slice(), secretKey: pair.secretKey.slice() });
      if (!this.writeAccount(accountId, [keys], true)) throw new KeyringError('account_exists', `account ${accountId} already has keys`);
      return keys;
    });
  }

  /** Adopts a transport key pair as a previous key accepted until `acceptUntil` (a migration's old key, test vectors). */
  importTransportKey(keyId: string, pair: KeyPair, acceptUntil: number): TransportKey {
    if (!/^[0-9a-f]{16}$/.test(keyId)) throw new KeyringError('invalid_argument', 'key id must be 16 lowercase hex characters');
    return this.locked(() => {
      const keys = this.readTransport().value.filter((k) => k.keyId !== keyId);
      const key: TransportKey = { keyId, publicKey: pair.publicKey.slice(), secretKey: pair.secretKey.slice(), createdAt: this.now(), acceptUntil };
      this.writeTransport([...keys, key]);
      return key;
    });
  }

  /** Accounts that have keys (tombstoned ones excluded), sorted. */
  listAccounts(): string[] {
    this.assertFull();
    return readdirSync(this.accountsDir)
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .map((n) => n.slice(0, -5))
      .filter((id) => ACCOUNT_ID_PATTERN.test(id) && !this.tombstoneExists(id))
      .sort();
  }

  // ---------------------------------------------------------------- deletion

  isTombstoned(accountId: string): boolean {
    checkAccountId(accountId);
    return this.tombstoneExists(accountId);
  }

  tombstone(accountId: string): Tombstone | undefined {
    checkAccountId(accountId);
    let text: string;
    try {
      text = readFileSync(this.tombstonePath(accountId), 'utf8');
    } catch (e) {
      if (errno(e) === 'ENOENT') return undefined;
      throw e;
    }
    this.tombstoned.add(accountId);
    let tombstonedAt = 0;
    try {
      tombstonedAt = numField(JSON.parse(text) as Json, 'tombstonedAt', 'tombstone');
    } catch {
      // an unreadable tombstone still counts: its existence is the tombstone
    }
    return { accountId, tombstonedAt };
  }

  listTombstones(): Tombstone[] {
    return readdirSync(this.tombstonesDir)
      .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
      .map((n) => n.slice(0, -5))
      .filter((id) => ACCOUNT_ID_PATTERN.test(id))
      .sort()
      .map((id) => this.tombstone(id))
      .filter((t): t is Tombstone => t !== undefined);
  }

  /**
   * Crypto-shreds an account: the tombstone is made durable first, then the key file is
   * unlinked (directory fsynced), then caches are dropped. Idempotent.
   */
  shred(accountId: string): ShredReport {
    checkAccountId(accountId);
    return this.locked(() => {
      const destroyed: string[] = [];
      const wasCached = this.accounts.has(accountId);
      let tombstonedAt = this.tombstone(accountId)?.tombstonedAt;
      if (tombstonedAt === undefined) {
        tombstonedAt = this.now();
        this.writeTombstone(accountId, tombstonedAt);
      }
      let versions: number[] = [];
      try {
        const entry = this.readAccount(accountId)?.value ?? [];
        versions = entry.map((k) => k.version);
        destroyVersions(entry, []);
      } catch {
        // an unreadable entry is destroyed all the same
      }
      if (unlinkDurably(this.accountPath(accountId))) {
        destroyed.push(`accounts/${accountId}.json`, ...versions.map((v) => `keys v${v}`));
      }
      this.destroyCached(accountId);
      if (wasCached) destroyed.push('in-memory key cache (buffers zeroed)');
      return { accountId, tombstonedAt, destroyed };
    });
  }

  // ---------------------------------------------------------------- master key rotation

  /** Master key versions that wrap some file now. */
  masterKeyVersionsInUse(): number[] {
    const versions = new Set<number>();
    const files = [this.transportPath, ...readdirSync(this.accountsDir).filter((n) => n.endsWith('.json') && !n.startsWith('.')).map((n) => join(this.accountsDir, n))];
    for (const path of files) {
      const file = readWithId(path);
      if (!file) continue;
      try {
        const v = (JSON.parse(file.text) as Json).masterKeyVersion;
        if (typeof v === 'number') versions.add(v);
      } catch {
        // corrupt file: reported when it is read
      }
    }
    return [...versions].sort((a, b) => a - b);
  }

  /** Re-wraps every entry under the current master key version. */
  rewrapAll(): { masterKeyVersion: number; rewrapped: number; versionsInUse: number[] } {
    return this.locked(() => {
      const current = this.master.current().version;
      let rewrapped = 0;
      const transport = this.readTransport();
      if (transport.masterKeyVersion !== current) {
        this.writeTransport(transport.value);
        rewrapped++;
      }
      for (const id of this.liveAccountFiles()) {
        const entry = this.readAccount(id);
        if (entry && entry.masterKeyVersion !== current) {
          this.writeAccount(id, entry.value, false);
          rewrapped++;
        }
      }
      return { masterKeyVersion: current, rewrapped, versionsInUse: this.masterKeyVersionsInUse() };
    });
  }

  // ---------------------------------------------------------------- backup

  /** One blob, sealed under the current master key: transport keys, accounts, tombstones. */
  backup(): Uint8Array {
    return this.locked(() => {
      const accounts: Record<string, unknown> = {};
      for (const id of this.liveAccountFiles()) {
        const entry = this.readAccount(id);
        if (entry) accounts[id] = entry.value.map(accountToJson);
      }
      const body = {
        createdAt: this.now(),
        transport: this.readTransport().value.map(transportToJson),
        accounts,
        tombstones: this.listTombstones(),
      };
      return utf8(this.wrap('backup', 'keyring', body).text);
    });
  }

  /**
   * Restores what is missing: never overwrites a live entry, never resurrects a
   * tombstoned account (tombstones already here, those in the backup, and `tombstones`
   * from another source such as the accounts table all win). Transport keys missing here
   * are added as previous keys (accepted for the default overlap window at most).
   */
  restoreBackup(bytes: Uint8Array, { tombstones = [] }: { tombstones?: Iterable<string> } = {}): RestoreReport {
    let body: Json;
    try {
      body = this.unwrap('backup', 'keyring', fromUtf8(bytes), 'keyring backup').body as Json;
      if (typeof body !== 'object' || body === null) throw corrupt('keyring backup', 'bad body');
    } catch (e) {
      if (e instanceof KeyringError && (e.code === 'unwrap_failed' || e.code === 'master_key_missing')) throw e;
      throw new KeyringError('backup_invalid', 'not a keyring backup', { cause: e });
    }
    const where = 'keyring backup';
    const backupTransport = parseTransportKeys(body.transport, where);
    const backupAccounts = new Map<string, AccountKeys[]>();
    for (const [id, v] of Object.entries((body.accounts ?? {}) as Json)) {
      if (!ACCOUNT_ID_PATTERN.test(id)) throw new KeyringError('backup_invalid', 'bad account id in backup');
      backupAccounts.set(id, parseAccountVersions(v, where));
    }
    const backupTombstones = list(body.tombstones, where).map((j) => ({
      accountId: String(j.accountId),
      tombstonedAt: numField(j, 'tombstonedAt', where),
    }));
    const extra = [...tombstones].map((accountId) => ({ accountId, tombstonedAt: this.now() }));
    for (const t of [...backupTombstones, ...extra]) checkAccountId(t.accountId);

    return this.locked(() => {
      const report: RestoreReport = { restored: [], skipped: [], tombstonesApplied: [], transportKeysAdded: 0 };
      for (const t of [...backupTombstones, ...extra]) {
        if (!this.tombstoneExists(t.accountId) && this.writeTombstone(t.accountId, t.tombstonedAt)) {
          report.tombstonesApplied.push(t.accountId);
        }
        unlinkDurably(this.accountPath(t.accountId)); // a tombstone from elsewhere may be newer than this keyring
        this.destroyCached(t.accountId);
      }
      for (const [id, versions] of backupAccounts) {
        if (this.tombstoneExists(id)) report.skipped.push({ accountId: id, reason: 'tombstoned' });
        else if (statId(this.accountPath(id)) || !this.writeAccount(id, versions, true)) report.skipped.push({ accountId: id, reason: 'exists' });
        else report.restored.push(id);
      }
      const t = this.now();
      let live: TransportKey[] | undefined;
      if (statId(this.transportPath)) {
        try {
          live = this.readTransport().value;
        } catch (e) {
          // Damaged (the backup just opened, so the master key is right): set aside, replaced below.
          if (!(e instanceof KeyringError) || !['corrupt_entry', 'unwrap_failed', 'entry_mismatch'].includes(e.code)) throw e;
          renameSync(this.transportPath, `${this.transportPath}.damaged-${t}`);
        }
      }
      if (!live) {
        // transport.json was lost or damaged: the backup's keys come back as they were (current stays current).
        this.writeTransport(backupTransport);
        report.transportKeysAdded = backupTransport.length;
        return report;
      }
      const added = backupTransport
        .filter((k) => !live.some((l) => l.keyId === k.keyId))
        .map((k) => ({ ...k, acceptUntil: Math.min(k.acceptUntil ?? Infinity, t + DEFAULT_TRANSPORT_OVERLAP_MS) }))
        .filter((k) => k.acceptUntil > t);
      if (added.length > 0) this.writeTransport([...live, ...added]);
      report.transportKeysAdded = added.length;
      return report;
    });
  }

  // ---------------------------------------------------------------- internals

  private locked<T>(fn: () => T): T {
    this.assertFull();
    const lock = acquireLock(this.lockPath);
    this.held = lock;
    try {
      return fn();
    } finally {
      this.held = undefined;
      lock.release();
    }
  }

  /** Before each write under the lock: stop if the lock expired and someone else took it. */
  private fence(): void {
    this.held?.assertHeld();
  }

  /** Ids of the account files on disk, finishing any shred a crash interrupted (call under the lock). */
  private liveAccountFiles(): string[] {
    const ids: string[] = [];
    for (const name of readdirSync(this.accountsDir)) {
      const id = name.slice(0, -5);
      if (!name.endsWith('.json') || name.startsWith('.') || !ACCOUNT_ID_PATTERN.test(id)) continue;
      if (this.tombstoneExists(id)) unlinkDurably(this.accountPath(id));
      else ids.push(id);
    }
    return ids;
  }

  /** Forgets an account's cached keys and zeroes them (its X25519 imports dropped too). */
  private destroyCached(accountId: string): void {
    const cached = this.accounts.get(accountId);
    this.accounts.delete(accountId);
    if (cached) destroyVersions(cached.value, []);
  }

  private fresh(c: Cached<unknown>, t: number): boolean {
    return t >= c.checkedAt && t - c.checkedAt < this.ttl;
  }

  /**
   * The stamp of `tombstones/` and `accounts/` as of at most `ttl` ago (stat'ed again after that):
   * a number that changes whenever either directory's identity (inode, mtime, size) does, or
   * undefined while it cannot be trusted (a directory missing, or changed within SETTLED_MS of
   * when it was stat'ed). An entry checked on its own under a stamp stays valid while the stamp
   * is the same: its files are checked after the directories were, so whatever changed them
   * since changed a directory too.
   */
  private directories(t: number): number | undefined {
    const d = this.dirs;
    if (t < d.at || t - d.at >= this.ttl) {
      const wall = Date.now(); // (file times are the wall clock's, whatever `now` is)
      const tombstones = statId(this.tombstonesDir);
      const accounts = statId(this.accountsDir);
      const settled = !!tombstones && !!accounts && wall - Math.max(tombstones.mtimeMs, accounts.mtimeMs) >= SETTLED_MS;
      const same = !!(tombstones && accounts && d.tombstones && d.accounts && sameFile(d.tombstones, tombstones) && sameFile(d.accounts, accounts));
      this.dirs = { at: t, tombstones, accounts, settled, stamp: same && settled === d.settled ? d.stamp : d.stamp + 1 };
    }
    return this.dirs.settled ? this.dirs.stamp : undefined;
  }

  private accountPath(accountId: string): string {
    return join(this.accountsDir, `${accountId}.json`);
  }

  private tombstonePath(accountId: string): string {
    return join(this.tombstonesDir, `${accountId}.json`);
  }

  private tombstoneExists(accountId: string): boolean {
    if (this.tombstoned.has(accountId)) return true;
    if (!statId(this.tombstonePath(accountId))) return false;
    this.tombstoned.add(accountId);
    this.destroyCached(accountId);
    return true;
  }

  /** Durable and exclusive; false when a tombstone already existed. */
  private writeTombstone(accountId: string, tombstonedAt: number): boolean {
    const text = JSON.stringify({ format: FORMAT, accountId, tombstonedAt }) + '\n';
    this.fence();
    const written = atomicWrite(this.tombstonePath(accountId), text, true) !== undefined;
    this.tombstoned.add(accountId);
    this.destroyCached(accountId);
    return written;
  }

  private wrap(kind: EntryKind, id: string, body: unknown): { text: string; version: number } {
    const { version, key } = this.master.current();
    const plaintext = utf8(JSON.stringify({ kind, id, body }));
    const sealed = secretSeal(key, plaintext);
    plaintext.fill(0);
    const text = JSON.stringify({ format: FORMAT, kind, id, masterKeyVersion: version, sealed: toBase64(sealed) }) + '\n';
    return { text, version };
  }

  private unwrap(kind: EntryKind, id: string, text: string, where: string): { body: unknown; masterKeyVersion: number } {
    let outer: Json;
    try {
      outer = JSON.parse(text) as Json;
    } catch {
      throw corrupt(where, text.trim() === '' ? 'empty file' : 'not JSON (truncated or garbled)');
    }
    if (typeof outer !== 'object' || outer === null || outer.format !== FORMAT) throw corrupt(where, 'unknown format');
    if (outer.kind !== kind || outer.id !== id) {
      throw new KeyringError('entry_mismatch', `${where}: file belongs to another entry`);
    }
    const version = numField(outer, 'masterKeyVersion', where);
    const key = this.master.get(version);
    if (!key) throw new KeyringError('master_key_missing', `${where}: wrapped under master key v${version}, which is not available`);
    const sealed = typeof outer.sealed === 'string' ? fromBase64(outer.sealed) : null;
    if (!sealed) throw corrupt(where, 'bad sealed field');
    const opened = secretOpen(key, sealed);
    if (!opened) throw new KeyringError('unwrap_failed', `${where}: cannot unwrap (wrong master key or altered file)`);
    let inner: Json;
    try {
      inner = JSON.parse(fromUtf8(opened)) as Json;
    } catch {
      throw corrupt(where, 'bad plaintext');
    } finally {
      opened.fill(0);
    }
    // the identity bound inside the ciphertext must match where the file was found
    if (typeof inner !== 'object' || inner === null || inner.kind !== kind || inner.id !== id) {
      throw new KeyringError('entry_mismatch', `${where}: sealed entry belongs to another entry`);
    }
    return { body: inner.body, masterKeyVersion: version };
  }

  private readTransport(): Cached<TransportKey[]> {
    const file = readWithId(this.transportPath);
    if (!file) throw corrupt('transport.json', 'missing');
    const { body, masterKeyVersion } = this.unwrap('transport', 'collector', file.text, 'transport.json');
    const value = parseTransportKeys((body as Json | null)?.keys, 'transport.json');
    return { value, file: file.id, checkedAt: this.now(), masterKeyVersion };
  }

  private writeTransport(keys: TransportKey[], exclusive = false): void {
    const { text, version } = this.wrap('transport', 'collector', { keys: keys.map(transportToJson) });
    this.fence();
    const file = atomicWrite(this.transportPath, text, exclusive);
    if (file) this.transport = { value: keys, file, checkedAt: this.now(), masterKeyVersion: version };
  }

  private transportKeys(): TransportKey[] {
    const t = this.now();
    const cached = this.transport;
    if (cached && this.fresh(cached, t)) return cached.value;
    const id = statId(this.transportPath);
    if (cached && id && sameFile(cached.file, id)) {
      cached.checkedAt = t;
      return cached.value;
    }
    this.transport = this.readTransport();
    return this.transport.value;
  }

  private readAccount(accountId: string): Cached<AccountKeys[]> | undefined {
    this.assertFull();
    const file = readWithId(this.accountPath(accountId));
    if (!file) return undefined;
    const where = `accounts/${accountId}.json`;
    const { body, masterKeyVersion } = this.unwrap('account', accountId, file.text, where);
    const value = parseAccountVersions((body as Json | null)?.versions, where);
    return { value, file: file.id, checkedAt: this.now(), masterKeyVersion };
  }

  /** false when `exclusive` and the file exists. A tombstone that raced with the write wins. */
  private writeAccount(accountId: string, versions: AccountKeys[], exclusive: boolean): boolean {
    const path = this.accountPath(accountId);
    const { text, version } = this.wrap('account', accountId, { versions: versions.map(accountToJson) });
    this.fence();
    const file = atomicWrite(path, text, exclusive);
    if (!file) return false;
    if (this.tombstoneExists(accountId)) {
      unlinkDurably(path);
      throw tombstonedError(accountId);
    }
    this.accounts.set(accountId, { value: versions, file, checkedAt: this.now(), masterKeyVersion: version });
    return true;
  }
}

/** Zeroes the key versions of `versions` that `kept` does not hold (the same objects, or by version number). */
function destroyVersions(versions: AccountKeys[], kept: AccountKeys[]): void {
  for (const k of versions) {
    if (kept.some((x) => x === k || x.version === k.version)) continue;
    destroyKeys(k.secretKey, k.dataKey, k.macKey);
  }
}

/**
 * `fresh` (just read from the file) with each version this process already holds replaced by
 * the held object (the fresh copy zeroed): one buffer per key in memory, so destroying a
 * version later zeroes every copy handed out.
 */
function keepHeld(fresh: AccountKeys[], held: AccountKeys[]): AccountKeys[] {
  return fresh.map((k) => {
    const h = held.find((x) => x.version === k.version && equalBytes(x.secretKey, k.secretKey) && equalBytes(x.dataKey, k.dataKey) && equalBytes(x.macKey, k.macKey));
    if (!h) return k;
    destroyKeys(k.secretKey, k.dataKey, k.macKey);
    return h;
  });
}

/** Account entries (`*.json`) in `dir` this process may open for reading; none when the directory is absent or unreadable. Reads no entry. */
function readableEntries(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'EACCES') return [];
    throw e;
  }
  return names.filter((n) => {
    try {
      accessSync(join(dir, n), constants.R_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function tombstonedError(accountId: string): KeyringError {
  return new KeyringError('account_tombstoned', `account ${accountId} was deleted; its id is never reused`);
}

/**
 * Master key rotation: new KEK version, every entry re-wrapped under it, then (unless
 * `destroyOld: false`) every version no file uses any more is destroyed, which makes all
 * earlier keyring backups unreadable. Take a fresh backup afterwards.
 */
export function rotateMasterKey(
  keyring: Keyring,
  master: ManagedMasterKeys,
  { destroyOld = true }: { destroyOld?: boolean } = {},
): { version: number; rewrapped: number; destroyed: number[] } {
  const version = master.rotate();
  const { rewrapped, versionsInUse } = keyring.rewrapAll();
  const destroyed: number[] = [];
  if (destroyOld) {
    for (const v of master.versions()) {
      if (v !== version && !versionsInUse.includes(v) && master.destroy(v)) destroyed.push(v);
    }
  }
  return { version, rewrapped, destroyed };
}
