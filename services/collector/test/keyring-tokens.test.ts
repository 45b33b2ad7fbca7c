import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { KeyringError, hashToken, loadAdminToken, newToken, tokenKind, tokenMatches } from '../src/keyring/index.js';
import { tempDirs } from './support/temp-dirs.js';

const tempDir = tempDirs('cs-token-', 'each');

function captureLog() {
  const lines: string[] = [];
  const push = (obj: object, msg: string) => void lines.push(JSON.stringify(obj) + ' ' + msg);
  return { lines, log: { info: push, warn: push } };
}

describe('tokens', () => {
  it('are 256-bit random base64url with a kind prefix', () => {
    const read = newToken('read');
    const admin = newToken('admin');
    expect(read).toMatch(/^csr_[A-Za-z0-9_-]{43}$/);
    expect(admin).toMatch(/^csa_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(read.slice(4), 'base64url').length).toBe(32);
    expect(tokenKind(read)).toBe('read');
    expect(tokenKind(admin)).toBe('admin');
    expect(tokenKind('csr_short')).toBeUndefined();
    const many = new Set(Array.from({ length: 1000 }, () => newToken('read')));
    expect(many.size).toBe(1000);
  });

  it('hash to hex SHA-256 and match in constant time', () => {
    expect(hashToken('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    const token = newToken('read');
    const hash = hashToken(token);
    expect(hash).toBe(createHash('sha256').update(token).digest('hex'));
    expect(tokenMatches(token, hash)).toBe(true);
    expect(tokenMatches(token, hash.toUpperCase())).toBe(true);
    expect(tokenMatches(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A'), hash)).toBe(false);
    expect(tokenMatches(newToken('read'), hash)).toBe(false);
    expect(tokenMatches(token, 'zz')).toBe(false);
    expect(tokenMatches(token, hash.slice(1))).toBe(false);
    expect(tokenMatches(token, token)).toBe(false);
    expect(tokenMatches('', hashToken(''))).toBe(true);
  });
});

describe('loadAdminToken', () => {
  it('generates admin.token with mode 0600, logs only its location, and reuses it', () => {
    const dataDir = tempDir();
    const { log, lines } = captureLog();
    const first = loadAdminToken({ dataDir, log });
    const path = join(dataDir, 'admin.token');
    expect(first).toEqual({ hash: expect.stringMatching(/^[0-9a-f]{64}$/), path, generated: true });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const token = readFileSync(path, 'utf8').trim();
    expect(tokenKind(token)).toBe('admin');
    expect(tokenMatches(token, first.hash)).toBe(true);
    expect(lines.join('\n')).toContain(path);
    expect(lines.join('\n')).not.toContain(token);
    expect(lines.join('\n')).not.toContain(token.slice(4));

    const second = loadAdminToken({ dataDir, log });
    expect(second).toEqual({ hash: first.hash, path, generated: false });
  });

  it('prefers CIPHERSTAT_ADMIN_TOKEN and refuses short ones', () => {
    const dataDir = tempDir();
    const token = newToken('admin');
    const { log, lines } = captureLog();
    const loaded = loadAdminToken({ dataDir, adminToken: token, log });
    expect(loaded).toEqual({ hash: hashToken(token), generated: false });
    expect(lines.join('\n')).not.toContain(token);
    expect(() => loadAdminToken({ dataDir, adminToken: 'secret', log })).toThrow(KeyringError);
  });
});
