/**
 * The query merge's per-row shortcuts (src/query/merge.ts, src/at-rest/records.ts) against
 * plaintext references: a row's group is cached per (key version, series) with its tag arrays
 * checked, so rows of one series pseudonym carrying other tag arrays still land in their own
 * group (and outside a filter still fail); opened plaintexts are views into a shared pool, so
 * every payload kept must still hold its own bytes after thousands more rows were opened.
 */
import { describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { openRollup, sealRollup } from '../src/at-rest/records.js';
import { mergeRows, type MergePlan } from '../src/query/merge.js';
import { addPoint, emptyAggregate, encodeAggregate, finalize } from '../src/rollup/index.js';
import type { StoredRow } from '../src/rollup/rows.js';

const HOUR = 3_600_000;
const day0 = Date.UTC(2026, 10, 2);
const key = randomBytes(32);
const accountId = 'acct_merge';
const metric = '42';
const sealed = (b: number, s: string, k: string, t: string, part: string, values: number[]): StoredRow => {
  const a = emptyAggregate();
  for (const v of values) addPoint(a, v, b);
  const id = { accountId, level: 1 as const, bucket: b, metric, series: s, tagKeys: k.split(','), tagValues: t.split(','), keyVersion: 1, part };
  return { l: 1, b, v: 1, s, a: sealRollup(key, id, encodeAggregate(a)), k, t, m: metric, p: part, u: [] };
};
const plan = (filters: MergePlan['versions'][number]['filters'] = []): MergePlan => ({
  accountId,
  level: 1,
  starts: [day0, day0 + HOUR, day0 + 2 * HOUR],
  end: day0 + 3 * HOUR,
  aggregation: 'sum',
  maxRows: 1000,
  maxGroups: 1000,
  versions: [{ version: 1, dataKey: key, metric, groupKeys: ['7'], filters }],
});
const sums = (rows: StoredRow[], p: MergePlan) => {
  const m = mergeRows(p, rows);
  const out: Record<string, (number | null)[]> = {};
  for (const g of m.groups.values()) out[g.values.join('|')] = Array.from(g.aggs, (a) => (a ? finalize(a, 'sum') : null));
  return { out, failed: m.failed, tampered: m.tampered };
};

describe('query merge', () => {
  // One series pseudonym 's1' written with two different tag arrays (a writer would never; the
  // identity covers both, so both open): each row is grouped by its own arrays.
  const rows = [
    sealed(day0, 's1', '7,8', '100,200', 'a', [1, 2]),
    sealed(day0 + HOUR, 's1', '7,8', '101,200', 'b', [10]),
    sealed(day0 + HOUR, 's1', '7,8', '100,200', 'c', [5]),
    sealed(day0 + 2 * HOUR, 's2', '7', '101', 'd', [7]),
    sealed(day0 + 2 * HOUR, 's1', '7,8', '101,200', 'e', [20]),
    sealed(day0, 's3', '8', '200', 'f', [4]), // no country: group '0'
  ];
  const reference = { '100': [3, 5, null], '101': [null, 10, 27], '0': [4, null, null] };

  it('groups every row by its own tag arrays, in any order (plaintext reference)', () => {
    for (const order of [rows, [...rows].reverse(), [rows[1]!, rows[0]!, ...rows.slice(2)]]) {
      const r = sums(order, plan());
      expect(r.out).toEqual(reference);
      expect(r.failed).toBe(0);
      expect(r.tampered).toBe(0);
    }
  });

  it('a filter keeps rows by their own tag arrays; the others fail', () => {
    for (const order of [rows, [...rows].reverse()]) {
      const r = sums(order, plan([{ accepted: ['101'] }]));
      expect(r.out).toEqual({ '101': reference['101'] });
      expect(r.failed).toBe(3); // storage returned rows outside the filter (a, c, f)
    }
  });

  it('payloads opened earlier keep their bytes while thousands more rows are opened', () => {
    const id = { accountId, level: 1 as const, bucket: day0, metric, series: 's', tagKeys: ['7'], tagValues: ['1'], keyVersion: 1, part: 'p' };
    const plains = Array.from({ length: 3000 }, (_, i) => randomBytes([1, 64, 100, 1000, 4095, 4096, 5000][i % 7]!));
    const kept = plains.map((p) => openRollup(key, id, sealRollup(key, id, p))!);
    plains.forEach((p, i) => expect(Buffer.from(kept[i]!).equals(Buffer.from(p)), `row ${i}`).toBe(true));
    // a copy is a copy, not a view into the pool
    const copy = kept[1]!.slice();
    copy.fill(0);
    expect(Buffer.from(kept[1]!).equals(Buffer.from(plains[1]!))).toBe(true);
  });
});
