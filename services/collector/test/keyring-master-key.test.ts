import { readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { Keyring, KeyringError, loadMasterKeys, staticMasterKeys } from '../src/keyring/index.js';
import { tempDirs } from './support/temp-dirs.js';

const tempDir = tempDirs('cs-master-', 'each');

function captureLog() {
  const lines: { level: string; obj: object; msg: string }[] = [];
  return {
    lines,
    log: {
      info: (obj: object, msg: string) => void lines.push({ level: 'info', obj, msg }),
      warn: (obj: object, msg: string) => void lines.push({ level: 'warn', obj, msg }),
    },
  };
}

const mode = (p: string) => statSync(p).mode & 0o777;
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KeyringError);
    return (e as KeyringError).code;
  }
  throw new Error('expected a KeyringError');
};

describe('loadMasterKeys: local generated key', () => {
  it('generates v1 once, mode 0600 in a 0700 directory, with a loud warning that never holds the key', () => {
    const dataDir = tempDir();
    const { log, lines } = captureLog();
    const keys = loadMasterKeys({ dataDir, log });
    expect(keys.source).toBe('local');
    expect(keys.generated).toBe(true);
    const dir = join(dataDir, 'master-keys');
    expect(readdirSync(dir)).toEqual(['v1.key']);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'v1.key'))).toBe(0o600);
    const { version, key } = keys.current();
    expect(version).toBe(1);
    expect(key.length).toBe(32);
    expect(readFileSync(join(dir, 'v1.key'), 'utf8').trim()).toBe(toBase64(key));

    const warning = lines.find((l) => l.level === 'warn')!;
    expect(warning.msg).toContain(dir);
    expect(warning.msg).toMatch(/back it up SEPARATELY/);
    expect(warning.msg).toMatch(/KMS/);
    expect(JSON.stringify(lines)).not.toContain(toBase64(key));

    const again = loadMasterKeys({ dataDir, log: captureLog().log });
    expect(again.generated).toBe(false);
    expect(again.current().key).toEqual(key);
  });

  it('rotates to n+1, keeps old versions for unwrapping, destroys only non-current ones', () => {
    const dataDir = tempDir();
    const keys = loadMasterKeys({ dataDir, log: captureLog().log });
    const v1 = keys.current().key.slice();
    expect(keys.rotate()).toBe(2);
    expect(keys.current().version).toBe(2);
    expect(keys.get(1)).toEqual(v1);
    expect(mode(join(dataDir, 'master-keys', 'v2.key'))).toBe(0o600);
    expect(code(() => keys.destroy(2))).toBe('master_key_in_use');

    // another process (a second provider on the same directory) sees the rotation
    const other = loadMasterKeys({ dataDir, log: captureLog().log });
    expect(other.current().version).toBe(2);

    expect(keys.destroy(1)).toBe(true);
    expect(keys.get(1)).toBeUndefined();
    expect(readdirSync(join(dataDir, 'master-keys'))).toEqual(['v2.key']);
    expect(other.get(1)).toBeUndefined();
    expect(keys.versions()).toEqual([2]);
  });
});

describe('loadMasterKeys: keys created once, versions current only by a recorded rotation', () => {
  it('never generates a key over a keyring that has entries; says what to restore and writes nothing', () => {
    const dataDir = tempDir();
    Keyring.open({ dir: join(dataDir, 'keyring'), master: loadMasterKeys({ dataDir, log: captureLog().log }) });
    rmSync(join(dataDir, 'master-keys', 'v1.key'));
    const { log, lines } = captureLog();
    expect(code(() => loadMasterKeys({ dataDir, log }))).toBe('keyring_incomplete');
    expect(() => loadMasterKeys({ dataDir, log })).toThrow(/Restore .*v1\.key from your master key backup.*Nothing was written/);
    expect(readdirSync(join(dataDir, 'master-keys'))).toEqual([]);
    expect(lines).toEqual([]);
  });

  it('ignores a version file no rotation recorded (never current), and a rotation is recorded before it is used, then resumed', () => {
    const dataDir = tempDir();
    const keys = loadMasterKeys({ dataDir, log: captureLog().log });
    const v1 = keys.current().key.slice();
    writeFileSync(join(dataDir, 'master-keys', 'v2.key'), toBase64(randomBytes(32)) + '\n');
    const { log, lines } = captureLog();
    const again = loadMasterKeys({ dataDir, log });
    expect(again.current()).toEqual({ version: 1, key: v1 });
    expect(again.get(2)).toBeUndefined();
    expect(again.ignoredVersions()).toEqual([2]);
    expect(lines.find((l) => l.msg.startsWith('master key file v2.key is not part of any recorded rotation'))).toBeDefined();
    // a rotation never takes the stray file for its key
    expect(again.rotate()).toBe(3);
    expect(JSON.parse(readFileSync(join(dataDir, 'keyring', 'master-rotation.json'), 'utf8'))).toMatchObject({ masterKeyVersion: 1, pending: { version: 3 } });
    expect(loadMasterKeys({ dataDir, log: captureLog().log }).current().version).toBe(3);
    // interrupted here: rotate() again resumes the same version
    expect(again.rotate()).toBe(3);
    expect(again.ignoredVersions()).toEqual([2]);
  });
});

describe('loadMasterKeys: configured key', () => {
  it('reads CIPHERSTAT_MASTER_KEY as version 1', () => {
    const key = randomBytes(32);
    const keys = loadMasterKeys({ dataDir: tempDir(), masterKey: toBase64(key), log: captureLog().log });
    expect(keys.source).toBe('env');
    expect(keys.current()).toEqual({ version: 1, key });
    expect(code(() => keys.rotate())).toBe('master_key_readonly');
    expect(code(() => keys.destroy(1))).toBe('master_key_readonly');
  });

  it('reads the versioned form; the highest version is current', () => {
    const k1 = randomBytes(32);
    const k3 = randomBytes(32);
    const masterKey = `v3:${toBase64(k3)}, v1:${toBase64(k1)}`;
    const keys = loadMasterKeys({ dataDir: tempDir(), masterKey, log: captureLog().log });
    expect(keys.current()).toEqual({ version: 3, key: k3 });
    expect(keys.get(1)).toEqual(k1);
    expect(keys.get(2)).toBeUndefined();
    expect(keys.versions()).toEqual([1, 3]);
  });

  it('reads CIPHERSTAT_MASTER_KEY_FILE and does not touch the data dir', () => {
    const dataDir = tempDir();
    const key = randomBytes(32);
    const file = join(tempDir(), 'kek');
    writeFileSync(file, toBase64(key) + '\n', { mode: 0o600 });
    const keys = loadMasterKeys({ dataDir, masterKeyFile: file, log: captureLog().log });
    expect(keys.source).toBe('file');
    expect(keys.current().key).toEqual(key);
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('refuses bad keys without echoing them, and ambiguous configuration', () => {
    const short = toBase64(randomBytes(16));
    let err: KeyringError | undefined;
    try {
      loadMasterKeys({ dataDir: tempDir(), masterKey: short, log: captureLog().log });
    } catch (e) {
      err = e as KeyringError;
    }
    expect(err?.code).toBe('master_key_invalid');
    expect(err?.message).not.toContain(short);
    expect(code(() => loadMasterKeys({ dataDir: tempDir(), masterKey: 'not base64!', log: captureLog().log }))).toBe('master_key_invalid');
    const k = toBase64(randomBytes(32));
    expect(code(() => loadMasterKeys({ dataDir: tempDir(), masterKey: `v1:${k},v1:${k}`, log: captureLog().log }))).toBe('master_key_invalid');
    expect(
      code(() => loadMasterKeys({ dataDir: tempDir(), masterKey: k, masterKeyFile: '/x', log: captureLog().log })),
    ).toBe('master_key_config');
    expect(code(() => loadMasterKeys({ dataDir: tempDir(), masterKeyFile: '/nonexistent/kek', log: captureLog().log }))).toBe('master_key_config');
    expect(code(() => staticMasterKeys({ 1: randomBytes(31) }))).toBe('master_key_invalid');
  });
});
