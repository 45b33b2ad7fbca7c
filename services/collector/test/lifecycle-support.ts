/** Shared by the lifecycle-*.test.ts files: ciphertext snapshots, key inventories, waiting. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openSeal, toBase64, type KeyPair } from '@cipherstat/protocol';
import { nodeX25519 } from '@cipherstat/protocol/node';
import type { Keyring } from '../src/keyring/index.js';
import type { Store } from '../src/storage/types.js';
import { openRollup, opensDict } from '../src/at-rest/records.js';
import { decodeAggregate } from '../src/rollup/index.js';
import type { TestCollector } from './support/collector.js';
import { connectionOf } from '../src/storage/index.js';

export interface Snapshot {
  accountId: string;
  rollups: { level: 0 | 1; bucket: number; metric: string; series: string; tagKeys: string[]; tagValues: string[]; keyVersion: number; agg: Uint8Array; part: string; supersedes: string[] }[];
  dictionary: { kind: 0 | 1 | 2; pseudonym: string; ciphertext: Uint8Array }[];
  batches: Uint8Array[];
}

const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));

/** Every ciphertext stored for an account: what anyone holding a copy of storage has. */
export async function snapshot(store: Store, accountId: string): Promise<Snapshot> {
  const q = <T>(sql: string) => connectionOf(store).query<T>(sql, { a: accountId });
  const rollups = await q<{ level: number; bucket: string; metric: string; series: string; tk: string[]; tv: string[]; v: number; agg: string; part: string; sup: string[] }>(
    `SELECT level, toUnixTimestamp64Milli(bucket) AS bucket, toString(metric) AS metric, toString(series) AS series,
            arrayMap(x -> toString(x), tag_keys) AS tk, arrayMap(x -> toString(x), tag_values) AS tv, key_version AS v, base64Encode(agg) AS agg, part, supersedes AS sup FROM rollups WHERE account_id = {a:String}`,
  );
  const dictionary = await q<{ kind: number; p: string; c: string }>(
    'SELECT kind, toString(pseudonym) AS p, base64Encode(ciphertext) AS c FROM dictionary WHERE account_id = {a:String}',
  );
  const batches = await q<{ c: string }>('SELECT base64Encode(sealed) AS c FROM batches WHERE account_id = {a:String}');
  return {
    accountId,
    rollups: rollups.map((r) => ({
      level: r.level as 0 | 1, bucket: Number(r.bucket), metric: r.metric, series: r.series, tagKeys: r.tk, tagValues: r.tv, keyVersion: Number(r.v), agg: b64(r.agg), part: r.part, supersedes: r.sup,
    })),
    dictionary: dictionary.map((r) => ({ kind: Number(r.kind) as 0 | 1 | 2, pseudonym: r.p, ciphertext: b64(r.c) })),
    batches: batches.map((r) => b64(r.c)),
  };
}

export interface KeyInventory {
  secretKeys: Uint8Array[];
  pairs: KeyPair[];
}

/** Every key a keyring holds: all versions of all accounts, and the transport keys. */
export function inventory(keyring: Keyring): KeyInventory {
  const secretKeys: Uint8Array[] = [];
  const pairs: KeyPair[] = [];
  for (const id of keyring.listAccounts()) {
    for (const k of keyring.accountKeys(id) ?? []) {
      secretKeys.push(k.dataKey, k.macKey);
      pairs.push({ publicKey: k.publicKey, secretKey: k.secretKey });
    }
  }
  for (const t of keyring.acceptedTransportKeys()) pairs.push({ publicKey: t.publicKey, secretKey: t.secretKey });
  return { secretKeys, pairs };
}

/** How many ciphertexts of the snapshot any key opens under the row's identity (authenticated: never a false positive). */
export function openable(s: Snapshot, keys: KeyInventory): { rollups: number; dictionary: number; batches: number } {
  const id = (r: Snapshot['rollups'][number]) => ({ accountId: s.accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series, tagKeys: r.tagKeys, tagValues: r.tagValues, keyVersion: r.keyVersion, part: r.part });
  return {
    rollups: s.rollups.filter((r) => keys.secretKeys.some((k) => openRollup(k, id(r), r.agg) !== null)).length,
    dictionary: s.dictionary.filter((d) => keys.secretKeys.some((k) => opensDict(k, s.accountId, d.kind, d.pseudonym, d.ciphertext))).length,
    batches: s.batches.filter((ct) => keys.pairs.some((p) => openSeal(ct, p, nodeX25519).ok)).length,
  };
}

/** Sum of point counts in the minute rollups an account's own data key opens. */
export function countPoints(s: Snapshot, accountId: string, dataKey: Uint8Array): number {
  // Like the query engine: a row a merged row of its group supersedes (compaction) is counted there.
  const group = (r: Snapshot['rollups'][number]) => `${r.level}|${r.bucket}|${r.metric}|${r.series}`;
  const superseded = new Set(s.rollups.flatMap((r) => r.supersedes.map((p) => `${group(r)}|${p}`)));
  let n = 0;
  for (const r of s.rollups) {
    if (r.level !== 0 || superseded.has(`${group(r)}|${r.part}`)) continue;
    const plain = openRollup(dataKey, { accountId, level: r.level, bucket: r.bucket, metric: r.metric, series: r.series, tagKeys: r.tagKeys, tagValues: r.tagValues, keyVersion: r.keyVersion, part: r.part }, r.agg);
    if (plain) n += decodeAggregate(plain).count;
  }
  return n;
}

/** Every file under `dir` (recursively) with its bytes, not descending into the directories in `skip`. */
export function files(dir: string, skip: readonly string[] = []): { path: string; bytes: Buffer }[] {
  const out: { path: string; bytes: Buffer }[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (!skip.includes(p)) out.push(...files(p, skip));
    } else if (e.isFile()) out.push({ path: p, bytes: readFileSync(p) });
  }
  return out;
}

/** Byte strings by which a key could show up in a file: raw, base64, hex. */
export function keyNeedles(keys: Uint8Array[]): Buffer[] {
  return keys.flatMap((k) => [Buffer.from(k), Buffer.from(toBase64(k)), Buffer.from(Buffer.from(k).toString('hex'))]);
}

/**
 * Waits for a condition that must become true (never an assertion on how fast). The bound is
 * sized for a loaded machine, like the suite's timeouts: background work (a purge's ALTER …
 * DELETE rewriting parts, a processing tick) takes many times longer at load 30 than quiet —
 * `npm run test:stress` failed lifecycle-shred's purge waits at the former 15 s.
 */
export async function until<T>(fn: () => Promise<T | undefined | false>, ms = 120_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function rows(c: TestCollector, accountId: string, final = true): Promise<Record<string, number>> {
  if (final) return c.services.store.countAccountRows(accountId);
  const r = await connectionOf(c.services.store).query<{ t: string; n: string }>(
    ['batches', 'processed', 'rollups', 'dictionary']
      .map((t) => `SELECT '${t}' AS t, count() AS n FROM ${t} WHERE account_id = {a:String}`)
      .join(' UNION ALL '),
    { a: accountId },
  );
  return Object.fromEntries(r.map((x) => [x.t, Number(x.n)]));
}

/** The value of a Prometheus sample, e.g. metric('cipherstat_batch_rejects_total{code="account_deleted"}'). */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '));
  return line ? Number(line.slice(sample.length + 1)) : 0;
}
