import { describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, bootstrapSql, migrations, renderMigrations } from '../src/storage/schema.js';
import { escapeBytes, strArray, str, time, tsv, u64, uint } from '../src/storage/tsv.js';
import { encodeRollups, stampWrittenAt } from '../src/storage/rollups.js';
import { LEVEL } from '../src/rollup/levels.js';
import type { RollupRow } from '../src/storage/types.js';

describe('schema', () => {
  it('numbers migrations strictly increasing from 1', () => {
    expect(migrations.map((m) => m.version)).toEqual(migrations.map((_, i) => i + 1));
    expect(SCHEMA_VERSION).toBe(migrations.length);
  });

  it('renders plain engines without a cluster', () => {
    const rendered = renderMigrations({ database: 'cs' });
    const sql = [...Object.values(bootstrapSql({ database: 'cs' })), ...rendered.filter((m) => !m.rerun).flatMap((m) => m.statements)];
    for (const s of sql) {
      expect(s).not.toMatch(/ON CLUSTER|Replicated/);
      // every statement can run twice (an INSERT only where its table holds no such row yet)
      expect(s).toMatch(/IF NOT EXISTS| DELETE WHERE |^INSERT INTO [\s\S]+\nWHERE \(SELECT count\(\) FROM [\s\S]+\) = 0$|^ALTER TABLE cs\.\w+ (MODIFY COLUMN \w+ [\w(), ']+ CODEC\([\w(), ]+\)(, |$))+|^ALTER TABLE cs\.accounts (MATERIALIZE COLUMN changed_at SETTINGS mutations_sync = 2|MODIFY COLUMN changed_at [\w(), ']+ DEFAULT now64\(3\))$/);
    }
    expect(sql.join('\n')).toMatch(/CREATE TABLE IF NOT EXISTS cs\.batches \(/);
    // a migration that swaps tables: the copy starts over until the swap, then only the old table is dropped (conformance: "migration 15")
    const m15 = rendered.find((m) => m.version === 15)!;
    expect(m15.statements.map((s) => s.split('\n')[0])).toEqual([
      'CREATE TABLE cs.rollups_v15 (', // the claim: no IF NOT EXISTS
      'INSERT INTO cs.rollups_v15 (account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, supersedes, agg, written_at, expires_at, epoch) SELECT account_id, level, bucket, metric, series, tag_keys, tag_values, key_version, part, supersedes, agg, written_at, expires_at, epoch FROM cs.rollups',
      'EXCHANGE TABLES cs.rollups AND cs.rollups_v15',
      'DROP TABLE IF EXISTS cs.rollups_v15 SYNC',
    ]);
    expect(m15.rerun!.done).toContain("database = 'cs' AND name = 'rollups' AND engine_full LIKE '%index_granularity_bytes = 262144%'");
    expect(m15.rerun!.finish).toEqual(['DROP TABLE IF EXISTS cs.rollups_v15 SYNC']);
    expect(rendered.filter((m) => m.rerun).map((m) => m.version)).toEqual([15]);
  });

  it('renders ON CLUSTER and Replicated* engines for a cluster, without running them', () => {
    const opts = { database: 'cs', cluster: 'c1' };
    const sql = [...Object.values(bootstrapSql(opts)), ...renderMigrations(opts).flatMap((m) => m.statements)];
    expect(sql[0]).toBe('CREATE DATABASE IF NOT EXISTS cs ON CLUSTER c1');
    for (const s of sql.slice(1)) {
      if (s.startsWith('INSERT INTO')) {
        expect(s).toMatch(/^INSERT INTO cs\.\w+ \(/); // (an insert reaches every replica by replication)
        continue;
      }
      if (s.startsWith('DROP TABLE') || s.startsWith('EXCHANGE TABLES')) {
        expect(s).toMatch(/^(DROP TABLE IF EXISTS cs\.rollups_v15 ON CLUSTER c1 SYNC|EXCHANGE TABLES cs\.rollups AND cs\.rollups_v15 ON CLUSTER c1)$/);
        continue;
      }
      if (s.startsWith('ALTER TABLE')) {
        expect(s).toMatch(/^ALTER TABLE cs\.\w+ ON CLUSTER c1 (ADD COLUMN IF NOT EXISTS|DELETE WHERE|MODIFY COLUMN|MATERIALIZE COLUMN) /);
        continue;
      }
      expect(s).toMatch(/^CREATE TABLE (IF NOT EXISTS cs\.\w+|cs\.rollups_v15) ON CLUSTER c1 \(/);
      expect(s).toMatch(/ENGINE = Replicated(Replacing|Summing)?MergeTree\('\/clickhouse\/tables\/\{shard\}\/\{database\}\/\w+', '\{replica\}'/);
    }
    const all = sql.join('\n');
    expect(all).toContain("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/accounts', '{replica}', version)");
    expect(all).toContain("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/batches', '{replica}')");
    expect(all).toContain("ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/rollups', '{replica}')");
    expect(all).toContain("ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/rollups_v15', '{replica}')");
    expect(renderMigrations(opts).find((m) => m.version === 15)!.rerun!.finish).toEqual(['DROP TABLE IF EXISTS cs.rollups_v15 ON CLUSTER c1 SYNC']);
    expect(all).toContain("ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{database}/rejects', '{replica}', count)");
    expect(all).toContain("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/dictionary', '{replica}', key_version)");
  });

  it('refuses database and cluster names that are not plain identifiers', () => {
    expect(() => bootstrapSql({ database: 'cs; DROP TABLE x' })).toThrow(/invalid database/);
    expect(() => renderMigrations({ database: 'cs', cluster: "c1' --" })).toThrow(/invalid cluster/);
  });
});

describe('TSV encoding', () => {
  it('escapes only backslash, TAB, LF and CR', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const out = escapeBytes(all);
    expect(out.length).toBe(260);
    expect(out.subarray(9, 11).toString()).toBe('\\t');
    expect(escapeBytes(Uint8Array.of(1, 2))).toEqual(Buffer.from([1, 2]));
  });

  it('writes times, UInt64 and string arrays in ClickHouse text form', () => {
    expect(time(Date.UTC(2026, 0, 2, 3, 4, 5, 6))).toBe('2026-01-02 03:04:05.006');
    expect(time(-1)).toBe('1969-12-31 23:59:59.999');
    expect(() => time(Number.NaN)).toThrow(/invalid time/);
    expect(u64('18446744073709551615')).toBe('18446744073709551615');
    for (const bad of ['18446744073709551616', '-1', '01', '1e3', '', ' 1']) expect(() => u64(bad)).toThrow(/invalid UInt64/);
    expect(strArray(["it's", 'a\\b', 'x\ty']).toString()).toBe("['it\\'s','a\\\\b','x\\ty']");
  });

  it('an insert payload is each field\'s bytes (strings as UTF-8), TAB between fields, LF after each row, however large', async () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    const texts = ['', 'plain', 'tab\there', 'back\\slash', 'line\nbreak\r', 'Grüße ✓ 😀', 'lone \ud800 surrogate'];
    // Enough rows (and long fields) that the payload outgrows its first buffer several times.
    const rows = Array.from({ length: 3000 }, (_, i) => ({ t: texts[i % texts.length]! + i, b: all.subarray(i % 256), n: i * 7919 }));
    const fields = (r: (typeof rows)[number]) => [str(r.t), uint(r.n), escapeBytes(r.b), u64(String(r.n)), time(r.n)];
    const expected = Buffer.concat(
      rows.flatMap((r) => {
        const f = fields(r).map((v) => (typeof v === 'string' ? Buffer.from(v, 'utf8') : v));
        return [...f.flatMap((v, j) => (j ? [Buffer.from('\t'), v] : [v])), Buffer.from('\n')];
      }),
    );
    expect((await tsv(rows, fields)).equals(expected)).toBe(true);
    expect((await tsv(rows.slice(0, 1), fields)).equals(expected.subarray(0, expected.indexOf(0x0a, expected.indexOf(0xff)) + 1))).toBe(true);
    // a string with something to escape goes through escapeBytes; without, as itself
    expect(str('a\tb')).toEqual(Buffer.from('a\\tb'));
    expect(str('ab')).toBe('ab');
    expect(u64('9999999999999999999')).toBe('9999999999999999999'); // 19 digits always fit
    expect(u64('10000000000000000000')).toBe('10000000000000000000');
  });

  it('builds an insert payload in slices, giving the event loop a turn every sliceRows rows (counted), the same bytes', async () => {
    const rows = Array.from({ length: 2500 }, (_, i) => ({ a: `row\t${i}`, n: i }));
    const fields = (r: { a: string; n: number }) => [str(r.a), uint(r.n)];
    let turns = 0;
    const sliced = await tsv(rows, fields, 1000, () => turns++);
    expect(turns).toBe(2); // after rows 1000 and 2000
    const whole = await tsv(rows, fields, Infinity, () => turns++);
    expect(turns).toBe(2);
    expect(sliced.equals(whole)).toBe(true);
    expect(sliced.toString().split('\n')[1]).toBe('row\\t1\t1');
  });

  it('encodes rollup rows off the main thread and restamps written_at in place: the bytes of rows written at that time', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i); // every byte, escapes included
    const rows = (writtenAt: number): RollupRow[] =>
      Array.from({ length: 700 }, (_, i) => ({
        accountId: `acct_${i % 3}`, level: [LEVEL.minute, LEVEL.quarter, LEVEL.hour][i % 3]!, bucket: 1_700_000_000_000 + i * 60_000,
        metric: String(i * 7919), series: '18446744073709551615', tagKeys: i % 2 ? [] : ['1', String(i)], tagValues: i % 2 ? [] : ['2', String(i + 1)],
        keyVersion: 1 + (i % 2), part: 'p1', agg: all.subarray(i % 256), writtenAt, expiresAt: 1_800_000_000_000 + i,
      }));
    for (const at of [Date.UTC(1900, 0, 1), 1_764_900_000_123, Date.UTC(2299, 11, 31, 23, 59, 59, 999)]) {
      const direct = encodeRollups(rows(at));
      const stamped = stampWrittenAt(encodeRollups(rows(1_700_000_000_000)), at);
      expect(Buffer.from(stamped.body).equals(Buffer.from(direct.body))).toBe(true);
      expect([...stamped.rowEnds]).toEqual([...direct.rowEnds]);
      expect(stamped.rowEnds.at(-1)).toBe(stamped.body.length);
      const last = Buffer.from(stamped.body).subarray(stamped.rowEnds[0]! - 24, stamped.rowEnds[0]!).toString('latin1');
      expect(last).toBe(`${time(at)}\n`);
    }
    expect(encodeRollups([]).body.length).toBe(0);
  });
});
