import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { equalBytes, publicKeyOf, randomBytes, toBase64, toHex } from '@cipherstat/protocol';
import {
  Keyring,
  KeyringError,
  loadMasterKeys,
  rotateMasterKey,
  staticMasterKeys,
  type AccountKeys,
} from '../src/keyring/index.js';
import { tempDirs } from './support/temp-dirs.js';

const tempDir = tempDirs('cs-keyring-', 'each');

const A = 'acct_alpha_0001';
const B = 'acct_bravo_0002';
const C = 'acct_charlie_03';
const master = (key = randomBytes(32)) => staticMasterKeys({ 1: key });
const silent = { info: () => {}, warn: () => {} };

function clock(start = 1_700_000_000_000) {
  const c = { t: start, now: () => c.t };
  return c;
}

/** A keyring with accounts A and B, and a second instance on it (`query`, caching for `ttl` ms) with an injected clock. */
function twoInstances(ttl: number) {
  const dir = tempDir();
  const kek = master();
  const c = clock();
  const query = Keyring.open({ dir, master: kek, now: c.now, cacheTtlMs: ttl });
  const admin = Keyring.open({ dir, master: kek, now: c.now });
  admin.createAccount(A);
  admin.createAccount(B);
  return { dir, c, query, admin };
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KeyringError);
    return (e as KeyringError).code;
  }
  throw new Error('expected a KeyringError');
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

const forms = (bytes: Uint8Array): string[] => [
  toBase64(bytes),
  Buffer.from(bytes).toString('base64url'),
  toHex(bytes),
  toHex(bytes).toUpperCase(),
];

describe('Keyring storage', () => {
  it('creates a transport key on first open and round-trips wrapped entries across instances', () => {
    const dir = tempDir();
    const kek = master();
    const k1 = Keyring.open({ dir, master: kek });
    const transport = k1.currentTransportKey();
    expect(transport.keyId).toMatch(/^[0-9a-f]{16}$/);
    expect(equalBytes(publicKeyOf(transport.secretKey), transport.publicKey)).toBe(true);
    const created = k1.createAccount(A);
    expect(created.version).toBe(1);

    const k2 = Keyring.open({ dir, master: kek });
    expect(k2.currentTransportKey()).toEqual(transport);
    expect(k2.accountKeys(A)).toEqual([created]);
    expect(k2.listAccounts()).toEqual([A]);
    expect(k2.accountKeys(B)).toBeUndefined();

    const file = JSON.parse(readFileSync(join(dir, 'accounts', `${A}.json`), 'utf8'));
    expect(file).toMatchObject({ format: 1, kind: 'account', id: A, masterKeyVersion: 1 });
  });

  it('uses mode 0600 for every file and 0700 for every directory', () => {
    const dir = tempDir();
    const k = Keyring.open({ dir, master: master() });
    k.createAccount(A);
    k.createAccount(B);
    k.shred(B);
    k.rotateTransportKey();
    const files = filesUnder(dir);
    expect(files.map((f) => f.slice(dir.length + 1)).sort()).toEqual([`accounts/${A}.json`, `tombstones/${B}.json`, 'transport.json']);
    for (const f of files) expect(statSync(f).mode & 0o777).toBe(0o600);
    for (const d of [dir, join(dir, 'accounts'), join(dir, 'tombstones')]) expect(statSync(d).mode & 0o777).toBe(0o700);
  });

  it('fails cleanly under a wrong or missing master key', () => {
    const dir = tempDir();
    Keyring.open({ dir, master: master() }).createAccount(A);
    // refused as an incomplete keyring, saying which key is wrong or missing (the cause keeps the precise code)
    const refusal = (m: Parameters<typeof Keyring.open>[0]['master']) => {
      try {
        Keyring.open({ dir, master: m });
      } catch (e) {
        return { code: (e as KeyringError).code, cause: ((e as KeyringError).cause as KeyringError).code, message: (e as Error).message };
      }
      throw new Error('opened');
    };
    expect(refusal(master())).toMatchObject({ code: 'keyring_incomplete', cause: 'unwrap_failed', message: expect.stringContaining('is not the one this keyring was written with') });
    expect(refusal(staticMasterKeys({ 2: randomBytes(32) }))).toMatchObject({ code: 'keyring_incomplete', cause: 'master_key_missing', message: expect.stringContaining('master key v1, which is not available') });
  });

  it('detects an account file swapped for another account (bound id)', () => {
    const dir = tempDir();
    const kek = master();
    const k = Keyring.open({ dir, master: kek });
    k.createAccount(A);
    k.createAccount(B);
    const pathA = join(dir, 'accounts', `${A}.json`);
    const pathB = join(dir, 'accounts', `${B}.json`);

    copyFileSync(pathB, pathA);
    const fresh = () => Keyring.open({ dir, master: kek, cacheTtlMs: 0 });
    expect(code(() => fresh().accountKeys(A))).toBe('entry_mismatch');

    // the header rewritten too: the id sealed inside still gives it away
    const forged = JSON.parse(readFileSync(pathB, 'utf8'));
    forged.id = A;
    writeFileSync(pathA, JSON.stringify(forged));
    expect(code(() => fresh().accountKeys(A))).toBe('entry_mismatch');

    // an altered ciphertext
    const altered = JSON.parse(readFileSync(pathB, 'utf8'));
    const sealed = Buffer.from(altered.sealed, 'base64');
    sealed[sealed.length - 1]! ^= 1;
    altered.sealed = sealed.toString('base64');
    writeFileSync(pathB, JSON.stringify(altered));
    expect(code(() => fresh().accountKeys(B))).toBe('unwrap_failed');
  });

  it('refuses duplicate and malformed account ids', () => {
    const k = Keyring.open({ dir: tempDir(), master: master() });
    k.createAccount(A);
    expect(code(() => k.createAccount(A))).toBe('account_exists');
    expect(code(() => k.createAccount('../../etc'))).toBe('invalid_account_id');
    expect(code(() => k.accountKeys('short'))).toBe('invalid_account_id');
  });

  it('draws every key independently: no two keys share bytes, none is derived from another', () => {
    const k = Keyring.open({ dir: tempDir(), master: master() });
    const accounts: AccountKeys[] = [k.createAccount(A), k.createAccount(B), k.createAccount(C)];
    accounts.push(k.rotateDataKeys(A, { rotateKeyPair: true }).keys);
    k.rotateTransportKey();
    const keys: Uint8Array[] = [];
    for (const a of accounts) keys.push(a.publicKey, a.secretKey, a.dataKey, a.macKey);
    for (const t of k.acceptedTransportKeys()) keys.push(t.publicKey, t.secretKey);
    for (let i = 0; i < keys.length; i++) {
      expect(keys[i]!.length).toBe(32);
      for (let j = i + 1; j < keys.length; j++) expect(equalBytes(keys[i]!, keys[j]!)).toBe(false);
    }
    for (const a of accounts) {
      for (const secret of [a.dataKey, a.macKey]) expect(equalBytes(publicKeyOf(secret), a.publicKey)).toBe(false);
    }
  });

  it('canary: no file of the keyring holds raw secret bytes in any encoding', () => {
    const dir = tempDir();
    const kekBytes = randomBytes(32);
    const k = Keyring.open({ dir, master: master(kekBytes) });
    const secrets: Uint8Array[] = [kekBytes];
    for (const id of [A, B, C]) {
      const a = k.createAccount(id);
      secrets.push(a.secretKey, a.dataKey, a.macKey);
    }
    secrets.push(k.rotateDataKeys(A).keys.dataKey);
    secrets.push(k.rotateTransportKey({ overlapMs: 1000 }).secretKey);
    for (const t of k.acceptedTransportKeys()) secrets.push(t.secretKey);
    k.shred(C);
    const files = filesUnder(dir);
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const f of files) {
      const raw = readFileSync(f);
      const text = raw.toString('latin1');
      for (const s of secrets) {
        expect(raw.indexOf(Buffer.from(s))).toBe(-1);
        for (const form of forms(s)) expect(text.includes(form)).toBe(false);
      }
    }
  });

  it('writes atomically: no temp file lingers, and crash leftovers are ignored and swept on open', () => {
    const dir = tempDir();
    const kek = master();
    const k = Keyring.open({ dir, master: kek });
    k.createAccount(A);
    k.rotateDataKeys(A);
    k.rotateTransportKey();
    k.createAccount(B);
    k.shred(B);
    expect(filesUnder(dir).filter((f) => f.endsWith('.tmp') || f.endsWith('.lock'))).toEqual([]);

    // a crash between write and rename leaves a partial temp file next to the entry
    const partial = join(dir, 'accounts', `.${C}.json.12345.abcdef.tmp`);
    writeFileSync(partial, '{"format":1,"kind":"acc', { mode: 0o600 });
    const k2 = Keyring.open({ dir, master: kek });
    expect(filesUnder(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(k2.listAccounts()).toEqual([A]);
    expect(k2.accountKeys(A)!.map((v) => v.version)).toEqual([1, 2]);
  });

  it('takes over a lock left by a dead process', () => {
    const dir = tempDir();
    const k = Keyring.open({ dir, master: master() });
    const dead = spawnSync(process.execPath, ['-e', '']).pid;
    writeFileSync(join(dir, '.lock'), `${dead} 00\n`);
    expect(k.createAccount(A).version).toBe(1);
  });
});

describe('transport keys', () => {
  it('rotates with an overlap window during which the previous key is still accepted', () => {
    const c = clock();
    const k = Keyring.open({ dir: tempDir(), master: master(), now: c.now });
    const first = k.currentTransportKey();
    c.t += 1000;
    const second = k.rotateTransportKey({ overlapMs: 60_000 });
    expect(k.currentTransportKey().keyId).toBe(second.keyId);
    expect(k.acceptedTransportKeys().map((t) => t.keyId)).toEqual([second.keyId, first.keyId]);
    expect(k.transportKey(first.keyId)?.secretKey).toEqual(first.secretKey);
    expect(k.transportKey(second.keyId)).toBeDefined();
    expect(k.transportKey('0000000000000000')).toBeUndefined();

    c.t += 59_999;
    expect(k.transportKey(first.keyId)).toBeDefined();
    c.t += 1;
    expect(k.transportKey(first.keyId)).toBeUndefined();
    expect(k.acceptedTransportKeys().map((t) => t.keyId)).toEqual([second.keyId]);

    // expired keys are destroyed at the next rotation; the default overlap is 7 days
    const third = k.rotateTransportKey();
    expect(k.acceptedTransportKeys().map((t) => t.keyId)).toEqual([third.keyId, second.keyId]);
    expect(k.acceptedTransportKeys()[1]!.acceptUntil).toBe(c.t + 7 * 24 * 3600 * 1000);
  });

  it('a rotation by another process is seen within the cache window', () => {
    const dir = tempDir();
    const kek = master();
    const c = clock();
    const server = Keyring.open({ dir, master: kek, now: c.now, cacheTtlMs: 100 });
    const cli = Keyring.open({ dir, master: kek, now: c.now });
    const next = cli.rotateTransportKey({ overlapMs: 10_000 });
    c.t += 100;
    expect(server.currentTransportKey().keyId).toBe(next.keyId);
    expect(server.acceptedTransportKeys()).toHaveLength(2);
  });
});

describe('account key versions', () => {
  it('rotates data and MAC keys, keeping the write key unless asked', () => {
    const kek = master();
    const k = Keyring.open({ dir: tempDir(), master: kek });
    const v1 = k.createAccount(A);
    const { keys: v2, destroyedVersions } = k.rotateDataKeys(A);
    expect(destroyedVersions).toEqual([]);
    expect(v2.version).toBe(2);
    expect(v2.publicKey).toEqual(v1.publicKey);
    expect(v2.secretKey).toEqual(v1.secretKey);
    expect(equalBytes(v2.dataKey, v1.dataKey)).toBe(false);
    expect(equalBytes(v2.macKey, v1.macKey)).toBe(false);
    expect(k.accountKeys(A)).toEqual([v1, v2]);

    const { keys: v3, destroyedVersions: gone } = k.rotateDataKeys(A, { destroyOld: true, rotateKeyPair: true });
    expect(gone).toEqual([1, 2]);
    // The destroyed versions this process handed out are zeroed.
    for (const v of [v1, v2]) for (const b of [v.secretKey, v.dataKey, v.macKey]) expect(b.every((x) => x === 0)).toBe(true);
    expect(equalBytes(v3.publicKey, v1.publicKey)).toBe(false);
    expect(k.accountKeys(A)).toEqual([v3]);
    expect(Keyring.open({ dir: k.dir, master: kek }).accountKeys(A)).toEqual([v3]);

    expect(code(() => k.rotateDataKeys(B))).toBe('account_not_found');
  });
});

describe('shred and tombstones', () => {
  it('tombstones first, removes the entry, and never lets the id get keys again', () => {
    const dir = tempDir();
    const kek = master();
    const c = clock();
    const k = Keyring.open({ dir, master: kek, now: c.now });
    k.createAccount(A);
    k.rotateDataKeys(A);
    const held = k.accountKeys(A)!;
    expect(held).toHaveLength(2);

    const report = k.shred(A);
    expect(report).toEqual({
      accountId: A,
      tombstonedAt: c.t,
      destroyed: [`accounts/${A}.json`, 'keys v1', 'keys v2', 'in-memory key cache (buffers zeroed)'],
    });
    // The buffers this process had handed out are zeroed, not only forgotten.
    for (const v of held) for (const b of [v.secretKey, v.dataKey, v.macKey]) expect(b.every((x) => x === 0)).toBe(true);
    expect(readdirSync(join(dir, 'accounts'))).toEqual([]);
    expect(JSON.parse(readFileSync(join(dir, 'tombstones', `${A}.json`), 'utf8'))).toEqual({ format: 1, accountId: A, tombstonedAt: c.t });
    expect(k.isTombstoned(A)).toBe(true);
    expect(k.accountKeys(A)).toBeUndefined();
    expect(k.listAccounts()).toEqual([]);
    expect(k.listTombstones()).toEqual([{ accountId: A, tombstonedAt: c.t }]);
    expect(code(() => k.createAccount(A))).toBe('account_tombstoned');
    expect(code(() => k.rotateDataKeys(A))).toBe('account_tombstoned');

    // idempotent
    c.t += 5;
    expect(k.shred(A)).toEqual({ accountId: A, tombstonedAt: c.t - 5, destroyed: [] });

    // sticky for any other instance on the same directory
    const other = Keyring.open({ dir, master: kek });
    expect(other.isTombstoned(A)).toBe(true);
    expect(code(() => other.createAccount(A))).toBe('account_tombstoned');
    expect(other.isTombstoned(B)).toBe(false);
  });

  it('a shred by another instance is honoured within the cache window', () => {
    const { c, query, admin } = twoInstances(200);
    expect(query.accountKeys(A)).toHaveLength(1);
    expect(query.accountKeys(B)).toHaveLength(1);

    admin.shred(A);
    // isTombstoned is never cached negatively: immediate
    expect(query.isTombstoned(A)).toBe(true);
    expect(query.accountKeys(A)).toBeUndefined();
    // creating the id again from the first instance is refused too
    expect(code(() => query.createAccount(A))).toBe('account_tombstoned');

    // without an isTombstoned call, cached keys live at most cacheTtlMs
    admin.shred(B);
    c.t += 199;
    expect(query.accountKeys(B)).toHaveLength(1);
    c.t += 1;
    expect(query.accountKeys(B)).toBeUndefined();
  });

  it('check() keeps what it unwrapped in the cache: the first accountKeys() reads no file; a shred and a rotation by another instance are still seen after the window', () => {
    const { c, query, admin } = twoInstances(200);
    expect(query.check().problems).toEqual([]);
    const misses = query.stats.miss;
    expect(query.accountKeys(A)).toHaveLength(1);
    expect(query.accountKeys(B)).toHaveLength(1);
    expect(query.stats.miss).toBe(misses);

    admin.shred(A);
    admin.rotateDataKeys(B);
    c.t += 200;
    expect(query.accountKeys(A)).toBeUndefined();
    expect(query.accountKeys(B)).toHaveLength(2);
  });

  it('with the real clock and the default window (250 ms)', async () => {
    const dir = tempDir();
    const kek = master();
    const query = Keyring.open({ dir, master: kek });
    const admin = Keyring.open({ dir, master: kek });
    admin.createAccount(A);
    expect(query.accountKeys(A)).toHaveLength(1);
    admin.shred(A);
    await new Promise((r) => setTimeout(r, 260));
    expect(query.accountKeys(A)).toBeUndefined();
  });

  it('a key rotation by another instance is picked up after the window', () => {
    const dir = tempDir();
    const kek = master();
    const c = clock();
    const query = Keyring.open({ dir, master: kek, now: c.now, cacheTtlMs: 100 });
    const admin = Keyring.open({ dir, master: kek, now: c.now });
    admin.createAccount(A);
    expect(query.accountKeys(A)).toHaveLength(1);
    const { keys } = admin.rotateDataKeys(A);
    c.t += 100;
    expect(query.accountKeys(A)!.at(-1)).toEqual(keys);
  });

  describe('re-checks by directory (one pair of stats per window for the whole keyring, not per account)', () => {
    /** Both directories' times set to `at` (whole seconds: set again, they are exactly the same). */
    const touchDirs = (dir: string, at: number) => {
      for (const d of ['tombstones', 'accounts']) utimesSync(join(dir, d), at, at);
    };
    const secondsAgo = (s: number) => Math.floor(Date.now() / 1000) - s;
    const hourAgo = secondsAgo(3600); // one value for every call: set twice, the directories look exactly the same
    /** Both directories as a keyring left them an hour ago: their stamp is settled (trusted). */
    const settle = (dir: string) => touchDirs(dir, hourAgo);
    const setup = () => twoInstances(100);

    it('settled directories: a shred, a rotation and a wipe by another instance are each seen within the window', () => {
      const { dir, c, query, admin } = setup();
      settle(dir);
      expect(query.accountKeys(A)).toHaveLength(1);
      expect(query.accountKeys(B)).toHaveLength(1);
      for (let i = 0; i < 3; i++) {
        c.t += 100; // past the window: the directories' stamp vouches for both entries
        expect(query.accountKeys(A)).toHaveLength(1);
        expect(query.accountKeys(B)).toHaveLength(1);
      }
      const { keys } = admin.rotateDataKeys(A);
      c.t += 100;
      expect(query.accountKeys(A)!.at(-1)).toEqual(keys);
      settle(dir);
      c.t += 100;
      expect(query.accountKeys(A)).toHaveLength(2);
      expect(query.accountKeys(B)).toHaveLength(1);
      admin.shred(B);
      c.t += 99;
      expect(query.accountKeys(B)).toHaveLength(1); // within the window: cached
      c.t += 1;
      expect(query.accountKeys(B)).toBeUndefined();
      settle(dir);
      const wiped = admin.rotateDataKeys(A, { destroyOld: true, rotateKeyPair: true });
      c.t += 100;
      expect(query.accountKeys(A)).toEqual([wiped.keys]);
    });

    it('a change in the same clock tick as the directory stamp is still seen: a stamp younger than its settling time is not trusted', () => {
      const { dir, c, query, admin } = setup();
      // Directories written "just now" (an hour ahead: never settled while this test runs, however slowly).
      const recent = secondsAgo(-3600); // (set twice below: the same value both times)
      touchDirs(dir, recent);
      expect(query.accountKeys(B)).toHaveLength(1);
      c.t += 100;
      expect(query.accountKeys(B)).toHaveLength(1);
      const before = ['tombstones', 'accounts'].map((d) => statSync(join(dir, d)).mtimeMs);
      admin.shred(B);
      // As if the shred fell in the same tick of the file clock: both directories look as they did.
      touchDirs(dir, recent);
      expect(['tombstones', 'accounts'].map((d) => statSync(join(dir, d)).mtimeMs)).toEqual(before);
      c.t += 100;
      expect(query.accountKeys(B)).toBeUndefined(); // the entry checked its own files
    });

    it('what it relies on: a change that leaves both directories as they were (no keyring makes one) is not seen while they are settled', () => {
      const { dir, c, query, admin } = setup();
      settle(dir);
      expect(query.accountKeys(A)).toHaveLength(1);
      admin.shred(A);
      settle(dir); // both directories back to exactly what they showed
      c.t += 100;
      expect(query.accountKeys(A)).toHaveLength(1); // no stat of its own: the directories vouched for it
      // ... until anything touches a directory (here: an account created elsewhere)
      admin.createAccount(C);
      c.t += 100;
      expect(query.accountKeys(A)).toBeUndefined();
    });
  });

  it('a tombstone left without the unlink (crash mid-shred) still hides the keys', () => {
    const dir = tempDir();
    const kek = master();
    const k = Keyring.open({ dir, master: kek });
    k.createAccount(A);
    writeFileSync(join(dir, 'tombstones', `${A}.json`), JSON.stringify({ format: 1, accountId: A, tombstonedAt: 1 }));
    const other = Keyring.open({ dir, master: kek });
    expect(other.accountKeys(A)).toBeUndefined();
    expect(other.shred(A).destroyed).toEqual([`accounts/${A}.json`, 'keys v1']);
  });

  it('a master key rotation finishes an interrupted shred instead of keeping the old KEK alive', () => {
    const dataDir = tempDir();
    const kek = loadMasterKeys({ dataDir, log: silent });
    const dir = join(dataDir, 'keyring');
    const k = Keyring.open({ dir, master: kek });
    k.createAccount(A);
    writeFileSync(join(dir, 'tombstones', `${A}.json`), JSON.stringify({ format: 1, accountId: A, tombstonedAt: 1 }));
    expect(rotateMasterKey(k, kek)).toEqual({ version: 2, rewrapped: 1, destroyed: [1] });
    expect(readdirSync(join(dir, 'accounts'))).toEqual([]);
  });
});

describe('master key rotation and backups', () => {
  it('re-wraps every entry under the new version and destroys the old one', () => {
    const dataDir = tempDir();
    const kek = loadMasterKeys({ dataDir, log: silent });
    const dir = join(dataDir, 'keyring');
    const k = Keyring.open({ dir, master: kek, cacheTtlMs: 0 });
    const a = k.createAccount(A);
    k.createAccount(B);
    k.shred(B);
    const transport = k.currentTransportKey();
    const oldBackup = k.backup();

    expect(rotateMasterKey(k, kek)).toEqual({ version: 2, rewrapped: 2, destroyed: [1] });
    expect(k.masterKeyVersionsInUse()).toEqual([2]);
    expect(readdirSync(join(dataDir, 'master-keys'))).toEqual(['v2.key']);
    const reopened = Keyring.open({ dir, master: loadMasterKeys({ dataDir, log: silent }) });
    expect(reopened.accountKeys(A)).toEqual([a]);
    expect(reopened.currentTransportKey()).toEqual(transport);
    // a backup from before the rotation is now noise
    expect(code(() => reopened.restoreBackup(oldBackup))).toBe('master_key_missing');
  });

  it('restores missing entries but never a tombstoned account', () => {
    const dir = tempDir();
    const kek = master();
    const k = Keyring.open({ dir, master: kek });
    const a = k.createAccount(A);
    const b = k.createAccount(B);
    const c = k.createAccount(C);
    const backup = k.backup();
    const text = Buffer.from(backup).toString('latin1');
    for (const s of [a.secretKey, a.dataKey, a.macKey, b.dataKey]) {
      expect(Buffer.from(backup).indexOf(Buffer.from(s))).toBe(-1);
      for (const f of forms(s)) expect(text.includes(f)).toBe(false);
    }

    k.shred(A); // newer than the backup
    rmSync(join(dir, 'accounts', `${B}.json`)); // lost
    const report = k.restoreBackup(backup);
    expect(report.restored).toEqual([B]);
    expect(report.skipped).toEqual([
      { accountId: A, reason: 'tombstoned' },
      { accountId: C, reason: 'exists' },
    ]);
    expect(k.accountKeys(A)).toBeUndefined();
    expect(k.accountKeys(B)).toEqual([b]);
    expect(k.accountKeys(C)).toEqual([c]);

    // into an empty keyring, with tombstones known from elsewhere (e.g. the accounts table)
    const fresh = Keyring.open({ dir: tempDir(), master: kek });
    const r2 = fresh.restoreBackup(backup, { tombstones: [C] });
    expect(r2.restored).toEqual([A, B]);
    expect(r2.tombstonesApplied).toEqual([C]);
    expect(r2.transportKeysAdded).toBe(1);
    expect(fresh.accountKeys(C)).toBeUndefined();
    expect(fresh.transportKey(k.currentTransportKey().keyId)).toBeDefined();

    expect(code(() => fresh.restoreBackup(new Uint8Array([1, 2, 3])))).toBe('backup_invalid');
    expect(code(() => Keyring.open({ dir: tempDir(), master: master() }).restoreBackup(backup))).toBe('unwrap_failed');
  });
});
