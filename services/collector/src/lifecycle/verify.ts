/**
 * Proof that a shred worked, from the only place that could break it: the keyring.
 *
 * 1. No key material: no account file, a tombstone, and no keyring file other than the
 *    tombstone even names the account.
 * 2. Nothing opens: every key the keyring still holds (every data key version of every other
 *    account, every account key pair, every transport key pair) is tried against a sample of
 *    the account's remaining rollup and dictionary ciphertexts and against its remaining
 *    sealed batches. XChaCha20-Poly1305 records and sealed boxes authenticate, so "opened" is never a guess.
 * 3. What is left: ciphertext rows per table (the purge drives them to zero).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { openSeal, type KeyPair } from '@cipherstat/protocol';
import { rawX25519 } from '../x25519.js';
import { readRotationRecord, type Keyring } from '../keyring/index.js';
import type { AccountState, PurgeTable, Store } from '../storage/types.js';
import { PURGE_TABLES } from '../storage/index.js';
import { opensDict } from '../at-rest/records.js';
import { decryptsUnder } from '../rollup/rows.js';

export interface VerifyOptions {
  /** Rollup and dictionary ciphertexts tried per table (default 1000). */
  sample?: number;
  /** Sealed batches tried (default 2000; each costs one X25519 per key pair). */
  maxBatches?: number;
}

export interface TrialResult {
  /** Rows of this table still held for the account. */
  remaining: number;
  /** Ciphertexts tried against every key. */
  tried: number;
  /** How many any key opened: must be 0. */
  opened: number;
}

export interface VerifyReport {
  accountId: string;
  verifiedAt: string;
  state: AccountState | 'unknown';
  /** True when the account is shredded, no key material for it exists and nothing opened. */
  ok: boolean;
  problems: string[];
  keyring: {
    accountFile: boolean;
    tombstone: { present: boolean; tombstonedAt: string | null };
    filesScanned: number;
    /** Keyring files (other than its tombstone) whose bytes contain the account id. */
    filesMentioningAccount: string[];
  };
  keysTried: { dataKeys: number; keyPairs: number };
  decryption: { rollups: TrialResult; dictionary: TrialResult; batches: TrialResult };
  /** Physical rows per table (before merges), ciphertext tables only. */
  rowsRemaining: Record<PurgeTable, number>;
  purge: 'complete' | 'pending';
}

function walk(dir: string): string[] {
  const files: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) files.push(...walk(p));
    else if (e.isFile()) files.push(p);
  }
  return files;
}

export async function verifyAccount(
  deps: { store: Store; keyring: Keyring; now: () => number },
  accountId: string,
  state: AccountState | undefined,
  opts: VerifyOptions = {},
): Promise<VerifyReport> {
  const { store, keyring } = deps;
  const sample = opts.sample ?? 1000;
  const maxBatches = opts.maxBatches ?? 2000;
  const problems: string[] = [];

  // 1. key material
  const accountFile = (() => {
    try {
      return statSync(join(keyring.dir, 'accounts', `${accountId}.json`)).isFile();
    } catch {
      return false;
    }
  })();
  const tombstone = keyring.tombstone(accountId);
  const own = join('tombstones', `${accountId}.json`);
  const needle = Buffer.from(accountId);
  const files = walk(keyring.dir).filter((f) => !f.endsWith(`${sep}.lock`));
  const mentioning = files
    .map((f) => relative(keyring.dir, f))
    .filter((rel) => rel !== own)
    .filter((rel) => {
      try {
        return readFileSync(join(keyring.dir, rel)).includes(needle);
      } catch {
        return false; // removed meanwhile
      }
    });
  if (state !== 'shredded') problems.push(`account state is ${state ?? 'unknown'}, not shredded`);
  if (accountFile) problems.push('the keyring still holds the account key file');
  if (!tombstone) problems.push('no tombstone: a key could be created again for this id');
  if (mentioning.length) problems.push(`keyring files name the account: ${mentioning.join(', ')}`);
  const rotation = readRotationRecord(keyring.dir)?.pending;
  if (rotation) {
    problems.push(
      `master key rotation to v${rotation.version} (started ${new Date(rotation.startedAt).toISOString()}) has not finished: older master key versions, and keyring backups sealed under them, stay readable until it does`,
    );
  }

  // 2. every key the keyring still holds (an entry that cannot be read is reported, not tried)
  const dataKeys: Uint8Array[] = [];
  const pairs: KeyPair[] = [];
  const accountIds = new Set(keyring.listAccounts());
  if (!keyring.isTombstoned(accountId)) accountIds.add(accountId); // an unshredded account: its own keys must count
  const unreadable: string[] = [];
  for (const id of accountIds) {
    let keys: ReturnType<Keyring['accountKeys']>;
    try {
      keys = keyring.accountKeys(id);
    } catch {
      unreadable.push(id); // a damaged entry: its keys cannot be tried (nor used by anyone without repairing it)
      continue;
    }
    for (const k of keys ?? []) {
      dataKeys.push(k.dataKey, k.macKey);
      pairs.push({ publicKey: k.publicKey, secretKey: k.secretKey });
    }
  }
  for (const t of keyring.acceptedTransportKeys()) pairs.push({ publicKey: t.publicKey, secretKey: t.secretKey });
  if (unreadable.length) problems.push(`${unreadable.length} keyring entr${unreadable.length === 1 ? 'y' : 'ies'} cannot be read, so their keys were not tried: run \`cipherstat keyring check\``);

  const counts = (await store.purgeRowCounts([accountId])).get(accountId)!;
  // Each ciphertext is tried under its row's own identity (the associated data it was sealed with).
  const sample_ = await store.ciphertextSample(accountId, { rows: sample, batches: maxBatches });
  const rollupOpens = ({ agg, ...id }: (typeof sample_.rollups)[number]) => dataKeys.some((k) => decryptsUnder(k, id, agg));
  const dictOpens = (r: (typeof sample_.dictionary)[number]) => dataKeys.some((k) => opensDict(k, accountId, r.kind, r.pseudonym, r.ciphertext));
  const trySealed = (cts: Uint8Array[]) => cts.filter((ct) => pairs.some((p) => openSeal(ct, p, rawX25519).ok)).length;
  const decryption = {
    rollups: { remaining: counts.rollups, tried: sample_.rollups.length, opened: sample_.rollups.filter(rollupOpens).length },
    dictionary: { remaining: counts.dictionary, tried: sample_.dictionary.length, opened: sample_.dictionary.filter(dictOpens).length },
    batches: { remaining: counts.batches, tried: sample_.batches.length, opened: trySealed(sample_.batches) },
  };
  for (const [table, r] of Object.entries(decryption)) {
    if (r.opened) problems.push(`${r.opened} of ${r.tried} ${table} ciphertexts opened with a key the keyring holds`);
  }

  const pending = PURGE_TABLES.some((t) => counts[t] > 0);
  return {
    accountId,
    verifiedAt: new Date(deps.now()).toISOString(),
    state: state ?? 'unknown',
    ok: problems.length === 0,
    problems,
    keyring: {
      accountFile,
      tombstone: { present: tombstone !== undefined, tombstonedAt: tombstone ? new Date(tombstone.tombstonedAt).toISOString() : null },
      filesScanned: files.length,
      filesMentioningAccount: mentioning,
    },
    keysTried: { dataKeys: dataKeys.length, keyPairs: pairs.length },
    decryption,
    rowsRemaining: counts,
    purge: pending ? 'pending' : 'complete',
  };
}
