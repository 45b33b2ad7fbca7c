/**
 * The engine against a real chDB store with rollups written like the processor writes them
 * (several partial rows per bucket, two key versions), checked against a plaintext reference.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from '@cipherstat/protocol';
import { connectionOf, openStore, type RollupSelection, type Store } from '../src/storage/index.js';
import { Keyring, staticMasterKeys } from '../src/keyring/index.js';
import { sealDict, sealRollup } from '../src/at-rest/records.js';
import { addPoint, emptyAggregate, encodeAggregate, encodeDayPack } from '../src/rollup/index.js';
import { CollectorError } from '../src/errors.js';
import { QueryCache, runQuery } from '../src/query/index.js';
import { accountContext } from '../src/query/context.js';
import { mergePlan, queryResultJson, rowSelection, type QueryResult } from '../src/query/engine.js';
import { handleMergeRequest, inlineMergers, mergeOnce, replyTransfer } from '../src/query/mergers.js';
import { mergeRows, unpackValues, type FinishedValues } from '../src/query/merge.js';
import { countRows, readRows } from '../src/rollup/rows.js';
import { parseQuery } from '../src/query/request.js';
import { checkAgainstReference, generatePoints, writeRollups, type GenPoint, type RefQuery } from './query-support.js';

const A = 'acct_aaaaaaaaaaaaaaaaaaaaaaaa';
const B = 'acct_bbbbbbbbbbbbbbbbbbbbbbbb';
const FROM = Date.UTC(2026, 2, 27); // 2026-03-27, two days before Berlin's spring-forward
const MID = Date.UTC(2026, 2, 30, 7, 13);
const TO = Date.UTC(2026, 3, 1);

let dir: string;
let store: Store;
let keyring: Keyring;
let points: GenPoint[];
const cache = new QueryCache({ ttlMs: 60_000 });
const deps = () => ({ store, keyring, cache });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cipherstat-query-'));
  store = await openStore({ dataDir: dir });
  await store.migrate();
  keyring = Keyring.open({ dir: join(dir, 'keyring'), master: staticMasterKeys({ 1: randomBytes(32) }) });
  keyring.createAccount(A);
  keyring.createAccount(B);
  points = generatePoints(42, 6000, FROM, TO);
  // Key rotation halfway: older rows under version 1, newer under version 2 (other MAC key).
  await writeRollups(store, A, keyring.accountKeys(A)![0]!, points.filter((p) => p.time < MID), 3, 1);
  keyring.rotateDataKeys(A);
  await writeRollups(store, A, keyring.accountKeys(A)![1]!, points.filter((p) => p.time >= MID), 2, 2);
  await writeRollups(store, B, keyring.accountKeys(B)![0]!, generatePoints(7, 500, FROM, TO), 1, 3);
});

/** A new account with 300 points (from `seed`) written as rollups of key version 1. */
async function accountWithRows(accountId: string, seed: number) {
  keyring.createAccount(accountId);
  const keys = keyring.accountKeys(accountId)![0]!;
  const sent = generatePoints(seed, 300, FROM, TO);
  await writeRollups(store, accountId, keys, sent, 1, 4);
  return { keys, sent };
}

afterAll(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});


/** The ungrouped sum a merge of `rows` answers, with what it failed or found tampered. */
function mergedSum(plan: Parameters<typeof mergeRows>[0], rows: Parameters<typeof mergeRows>[1]) {
  const { groups, failed, tampered } = mergeRows(plan, rows);
  const g = groups.get('');
  return { value: g ? g.aggs.reduce((n, a) => n + (a?.sum ?? 0), 0) : 0, failed, ...(tampered ? { tampered } : {}) };
}
describe('runQuery', () => {
  const aggregations = ['count', 'sum', 'avg', 'min', 'max', 'p50', 'p90', 'p95', 'p99', 'last'];
  const shapes: Omit<RefQuery, 'aggregation' | 'interval' | 'timezone'>[] = [
    { metric: 'orders' },
    { metric: 'orders', groupBy: ['country'] },
    { metric: 'orders', groupBy: ['country', 'channel'] },
    { metric: 'revenue', filter: { country: 'DE' } },
    { metric: 'page.load', groupBy: ['page'], filter: { country: ['DE', 'IN'] } },
    { metric: 'temperature', groupBy: ['site'] },
  ];
  for (const timezone of ['UTC', 'Europe/Berlin', 'Asia/Kolkata', 'Asia/Kathmandu']) {
    // One test per aggregation: a test is a bounded piece of work (six queries and their
    // references), so on a loaded machine none comes near the timeout (one test of all sixty
    // took 97-180 s under `npm run test:stress`, and failed at 180 s).
    for (const interval of ['hour', 'day'] as const) {
      for (const aggregation of aggregations) {
        it(`matches the reference: ${interval} ${aggregation} in ${timezone}`, async () => {
          for (const shape of shapes) {
            const q: RefQuery = { ...shape, aggregation, interval, timezone };
            const res = await runQuery(deps(), { accountId: A }, { ...q, from: FROM, to: TO });
            expect(res.meta.failedRows).toBe(0);
            checkAgainstReference(q, res, points);
          }
        });
      }
    }
    it(`matches the reference: minute in ${timezone} around the DST change`, async () => {
      const from = Date.UTC(2026, 2, 29, 0, 30);
      const to = Date.UTC(2026, 2, 29, 2, 30);
      for (const aggregation of aggregations) {
        for (const shape of shapes.slice(0, 4)) {
          const q: RefQuery = { ...shape, aggregation, interval: 'minute', timezone };
          const res = await runQuery(deps(), { accountId: A }, { ...q, from: new Date(from).toISOString(), to: new Date(to).toISOString() });
          expect(res.meta.level).toBe('minute');
          checkAgainstReference(q, res, points);
        }
      }
    });
  }

  it('reads a query in statements over consecutive days (hour level) or UTC hours (minute level: an hour\'s minute rows and minute pack), sized from a count of the rows per day or hour first; up to 48 hours first whole', async () => {
    const statements: { from: number; to: number; rows: number; units: number; limit: number }[] = [];
    const counts: { rows: number; after: number }[] = [];
    let unit = 0;
    const counting = Object.create(store, {
      countRollups: {
        value: async (sel: Omit<RollupSelection, 'limit'>, slotMs: number) => {
          const slots = await store.countRollups(sel, slotMs);
          counts.push({ rows: slots.reduce((n, x) => n + x.rows, 0), after: statements.length });
          return slots;
        },
      },
      selectRollups: {
        value: async (sel: RollupSelection) => {
          const bytes = await store.selectRollups(sel);
          // the engine counts each statement's rows with countRows: lengths only, the same count as decoding
          const rows = readRows(bytes);
          expect(countRows(bytes)).toBe(rows.length);
          statements.push({ from: sel.from, to: sel.to, rows: rows.length, units: new Set(rows.map((r) => Math.floor(r.b / unit))).size, limit: sel.limit });
          return bytes;
        },
      },
    }) as Store;
    for (const [interval, from, to, timezone] of [
      ['day', FROM, TO, 'UTC'],
      ['hour', FROM, TO, 'Asia/Kathmandu'], // quarter-hour rows and quarter packs: split at UTC days too
      ['minute', Date.UTC(2026, 2, 29, 0, 30), Date.UTC(2026, 2, 29, 2, 30), 'UTC'], // up to 48 hours: read whole first
    ] as const) {
      const q: RefQuery = { metric: 'page.load', groupBy: ['page'], aggregation: 'p95', interval, timezone };
      unit = interval === 'minute' ? 3_600_000 : 86_400_000;
      const short = interval === 'minute';
      const most = short ? 8 : 700; // days of ~300 rows, hours of more than 8 minute rows
      // by default (20,000 rows a statement) this data is read in one statement (after the count, over 48 hours)
      statements.length = counts.length = 0;
      const whole = await runQuery({ store: counting, keyring }, { accountId: A }, { ...q, from, to });
      checkAgainstReference(q, whole, points);
      expect(statements.map((s) => [s.from, s.to, s.rows])).toEqual([[whole.meta.from, whole.meta.to, whole.meta.rows]]);
      expect(counts).toEqual(short ? [] : [{ rows: whole.meta.rows, after: 0 }]);
      // at most `most` rows a statement: several (a view of the store of its own: nothing known of this selection yet)
      statements.length = counts.length = 0;
      const fresh = Object.create(counting) as Store;
      const res = await runQuery({ store: fresh, keyring, statementRows: most }, { accountId: A }, { ...q, from, to });
      checkAgainstReference(q, res, points);
      expect(res.meta.rows).toBeGreaterThan(2 * most);
      if (short) {
        // the whole range first, `most` + 1 rows at most: more, so dropped, then counted and read in parts
        expect(statements.shift()).toMatchObject({ from: res.meta.from, to: res.meta.to, rows: most + 1, limit: most + 1 });
        expect(counts).toEqual([{ rows: res.meta.rows, after: 1 }]);
      } else expect(counts).toEqual([{ rows: res.meta.rows, after: 0 }]);
      expect(statements.length).toBeGreaterThan(1);
      expect(statements.reduce((n, x) => n + x.rows, 0)).toBe(res.meta.rows);
      // consecutive ranges covering the query's, each starting where the one before ended
      expect(statements[0]!.from).toBe(res.meta.from);
      expect(statements.at(-1)!.to).toBe(res.meta.to);
      statements.slice(1).forEach((s, i) => expect(s.from).toBe(statements[i]!.to));
      // split only at UTC days (hour and quarter levels: a day's rows and packs in one statement) or hours (minute level)
      statements.slice(0, -1).forEach((s) => expect(s.to % unit).toBe(0));
      // each within the bound, unless its rows are of one day (hour) that alone holds more
      for (const s of statements) if (s.units > 1) expect(s.rows).toBeLessThanOrEqual(most);
      // read again: in the ranges of that count, without counting again nor (short) reading whole to drop it
      const ranges = statements.map((s) => [s.from, s.to]);
      statements.length = counts.length = 0;
      const again = await runQuery({ store: fresh, keyring, statementRows: most }, { accountId: A }, { ...q, from, to });
      expect(again).toEqual(res);
      expect(counts).toEqual([]);
      expect(statements.map((s) => [s.from, s.to])).toEqual(ranges);
    }
  });

  /** The store, counting its derivation watermark reads (each answered after `delayMs`). */
  function watchingWatermark(delayMs = 0): { watching: Store; reads: () => number } {
    let reads = 0;
    const watching = Object.create(store, {
      derivedUntil: {
        value: async () => {
          reads++;
          if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
          return store.derivedUntil();
        },
      },
    }) as Store;
    return { watching, reads: () => reads };
  }

  it('queries arriving while the derivation watermark is being read share that read; a later query reads it again', async () => {
    const { watching, reads } = watchingWatermark(50); // the others arrive meanwhile
    const q = { metric: 'orders', aggregation: 'sum', interval: 'hour', from: FROM, to: TO } as const;
    const [one, two, three] = await Promise.all([1, 2, 3].map(() => runQuery({ store: watching, keyring }, { accountId: A }, q)));
    expect(reads()).toBe(1);
    expect(two).toEqual(one);
    expect(three).toEqual(one);
    await runQuery({ store: watching, keyring }, { accountId: A }, q);
    expect(reads()).toBe(2);
  });

  it('with watermarkTtlMs (the query routes), a watermark read also serves the queries after it within that time', async () => {
    const { watching, reads } = watchingWatermark();
    const q = { metric: 'orders', aggregation: 'sum', interval: 'hour', from: FROM, to: TO } as const;
    const one = await runQuery({ store: watching, keyring, watermarkTtlMs: 600_000 }, { accountId: A }, q);
    for (let i = 0; i < 3; i++) expect(await runQuery({ store: watching, keyring, watermarkTtlMs: 600_000 }, { accountId: A }, q)).toEqual(one);
    expect(reads()).toBe(1);
    const other = Object.create(watching) as Store; // another store: its own read
    await runQuery({ store: other, keyring, watermarkTtlMs: 600_000 }, { accountId: A }, q);
    expect(reads()).toBe(2);
  });

  it("identical queries arriving while the first one's read waits for the engine share its answer (other queries of the same rows its read); one arriving once that read runs reads for itself and sees rows written meanwhile", async () => {
    const E = 'acct_eeeeeeeeeeeeeeeeeeeeeeee'; // an account of its own: its rows grow below
    const { keys, sent } = await accountWithRows(E, 21);
    const reads: number[] = [];
    let gate: Promise<unknown> = Promise.resolve();
    let gated = false;
    let onStart = (): void => {};
    const watching = Object.create(store, {
      selectRollups: {
        value: async (sel: RollupSelection, onWait?: (waiting: boolean) => void) => {
          if (gated) await gate; // (telling the engine that it waits when the call is made, as the store does)
          const bytes = await store.selectRollups(sel, (waiting) => {
            onWait?.(waiting);
            if (!waiting) onStart();
          });
          reads.push(countRows(bytes));
          return bytes;
        },
      },
    }) as Store;
    const q: RefQuery = { metric: 'orders', aggregation: 'sum', interval: 'hour', timezone: 'UTC', groupBy: ['country'] };
    // no result cache (deps without one); the watermark read kept, so a query's first statement is its read of rows
    const run = () => runQuery({ store: watching, keyring, watermarkTtlMs: 600_000 }, { accountId: E }, { ...q, from: FROM, to: TO });
    checkAgainstReference(q, await run(), sent);
    reads.length = 0;

    // The engine busy: the three reads wait behind this call (the queries reach the lane within this turn).
    // Another query of the same rows (the same metric and range, not grouped) shares the read too.
    const ungrouped: RefQuery = { ...q, groupBy: [] };
    const busy = connectionOf(store).query('SELECT sleep(0.2)');
    const [one, two, three, total] = await Promise.all([
      run(),
      run(),
      run(),
      runQuery({ store: watching, keyring, watermarkTtlMs: 600_000 }, { accountId: E }, { ...ungrouped, from: FROM, to: TO }),
    ]);
    await busy;
    expect(reads).toEqual([one.meta.rows]); // one read for the four
    checkAgainstReference(q, one, sent);
    expect(two).toEqual(one);
    expect(three).toEqual(one);
    checkAgainstReference(ungrouped, total, sent);

    // Once the first read runs, a query arriving then reads for itself, after rows written meanwhile.
    reads.length = 0;
    const more = generatePoints(22, 200, FROM, TO);
    let later: Promise<Awaited<ReturnType<typeof run>>> | undefined;
    onStart = () => {
      onStart = () => {};
      gate = writeRollups(store, E, keys, more, 3, 5); // the later query's read waits for these rows
      gated = true;
      later = run();
    };
    const first = await run();
    const second = await later!;
    checkAgainstReference(q, first, sent);
    checkAgainstReference(q, second, [...sent, ...more]);
    expect(reads).toEqual([first.meta.rows, second.meta.rows]);
    expect(second.meta.rows).toBeGreaterThan(first.meta.rows);
  });

  it('a range over 48 hours whose last read fitted one statement is read whole again without the count; one that outgrew it is counted again, then read in those ranges without a count', async () => {
    const C = 'acct_dddddddddddddddddddddddd'; // an account of its own: its rows grow below
    const { keys, sent } = await accountWithRows(C, 11);
    const calls: string[] = [];
    const counting = Object.create(store, {
      countRollups: {
        value: async (sel: Omit<RollupSelection, 'limit'>, slotMs: number) => {
          calls.push('count');
          return store.countRollups(sel, slotMs);
        },
      },
      selectRollups: {
        value: async (sel: RollupSelection) => {
          const bytes = await store.selectRollups(sel);
          calls.push(`read ${countRows(bytes)}`);
          return bytes;
        },
      },
    }) as Store;
    const q: RefQuery = { metric: 'orders', aggregation: 'sum', interval: 'day', timezone: 'UTC', groupBy: ['country'] };
    let most = 20_000;
    const run = () => runQuery({ store: counting, keyring, statementRows: most }, { accountId: C }, { ...q, from: FROM, to: TO });
    const first = await run();
    checkAgainstReference(q, first, sent);
    const n = first.meta.rows;
    expect(calls).toEqual(['count', `read ${n}`]);
    most = n + 5;
    calls.length = 0;
    expect(await run()).toEqual(first);
    expect(calls).toEqual([`read ${n}`]); // no count
    // the same selection now holds more than a statement's rows: the whole read is dropped, then counted and read in parts
    const more = generatePoints(12, 900, FROM, TO);
    await writeRollups(store, C, keys, more, 3, 5);
    calls.length = 0;
    const grown = await run();
    checkAgainstReference(q, grown, [...sent, ...more]);
    expect(grown.meta.rows).toBeGreaterThan(2 * most);
    expect(calls.slice(0, 2)).toEqual([`read ${most + 1}`, 'count']);
    expect(calls.length).toBeGreaterThan(3);
    // and from then on it is read in the ranges of that count, neither read whole nor counted again
    const reads = calls.slice(2);
    calls.length = 0;
    checkAgainstReference(q, await run(), [...sent, ...more]);
    expect(calls).toEqual(reads);
  });

  it('follows the time zone: Berlin days around the spring-forward last 24, 23 and 24 hours', async () => {
    const res = await runQuery(deps(), { accountId: A }, { metric: 'orders', aggregation: 'count', interval: 'day', timezone: 'Europe/Berlin', from: '2026-03-28T00:00:00+01:00', to: '2026-03-31T00:00:00+02:00' });
    const starts = res.series[0]!.points.map(([t]) => t);
    expect(starts).toEqual([Date.UTC(2026, 2, 27, 23), Date.UTC(2026, 2, 28, 23), Date.UTC(2026, 2, 29, 22)]);
    expect(res.meta.to).toBe(Date.UTC(2026, 2, 30, 22));
    expect(res.meta.level).toBe('hour');
    const kolkata = await runQuery(deps(), { accountId: A }, { metric: 'orders', aggregation: 'count', interval: 'hour', timezone: 'Asia/Kolkata', from: FROM, to: FROM + 3 * 3_600_000 });
    expect(kolkata.meta.level).toBe('quarter'); // Kolkata hours start at UTC :30: quarter-hour rows
    expect(kolkata.series[0]!.points[0]![0]).toBe(FROM - 30 * 60_000);
    // Kolkata days: quarter-hour rows and quarter packs (one pack per closed day and series)
    const days = await runQuery(deps(), { accountId: A }, { metric: 'orders', aggregation: 'count', interval: 'day', timezone: 'Asia/Kolkata', from: FROM, to: TO });
    expect(days.meta.level).toBe('quarter');
    expect(days.meta.failedRows).toBe(0);
  });

  it('reads rows of every key version and merges groups across versions', async () => {
    const q = { metric: 'orders', aggregation: 'count', interval: 'day', timezone: 'UTC', groupBy: ['country'], from: FROM, to: TO } as const;
    const res = await runQuery(deps(), { accountId: A }, q);
    const total = res.series.reduce((n, s) => n + s.points.reduce((m, [, v]) => m + (v ?? 0), 0), 0);
    expect(total).toBe(points.filter((p) => p.name === 'orders').length);
    expect(res.series.map((s) => s.tags.country)).toEqual(['DE', 'FR', 'IN', 'US']);
  });

  it('gives empty buckets explicitly: 0 for count and sum, null otherwise', async () => {
    const far = { metric: 'orders', interval: 'hour', from: Date.UTC(2026, 0, 1), to: Date.UTC(2026, 0, 1, 3) } as const;
    for (const aggregation of ['count', 'sum']) {
      const res = await runQuery(deps(), { accountId: A }, { ...far, aggregation });
      expect(res.series).toEqual([{ tags: {}, points: [0, 1, 2].map((h) => [Date.UTC(2026, 0, 1, h), 0]) }]);
    }
    const avg = await runQuery(deps(), { accountId: A }, { ...far, aggregation: 'avg' });
    expect(avg.series[0]!.points.every(([, v]) => v === null)).toBe(true);
    const grouped = await runQuery(deps(), { accountId: A }, { ...far, aggregation: 'sum', groupBy: ['country'] });
    expect(grouped.series).toEqual([]);
  });

  it("writes an answer's JSON as JSON.stringify does (the route's faster writer)", async () => {
    const answers: QueryResult[] = [];
    for (const [aggregation, interval, groupBy, timezone] of [
      ['sum', 'hour', ['country'], 'UTC'],
      ['p95', 'minute', ['country', 'page'], 'UTC'],
      ['avg', 'day', [], 'Asia/Kathmandu'],
      ['sum', 'hour', ['country'], 'Asia/Kolkata'],
    ] as const) {
      answers.push(await runQuery(deps(), { accountId: A }, { metric: aggregation === 'sum' ? 'orders' : 'page.load', aggregation, interval, groupBy, timezone, from: FROM, to: MID }));
    }
    expect(answers[1]!.series.some((s) => s.points.some(([, v]) => v === null))).toBe(true);
    answers.push(await runQuery(deps(), { accountId: A }, { metric: 'orders', aggregation: 'sum', groupBy: ['country'], interval: 'hour', from: Date.UTC(2026, 0, 1), to: Date.UTC(2026, 0, 1, 3) }));
    expect(answers.at(-1)!.series).toEqual([]);
    // values and labels the engine does not make from these rows: escapes, non-finite, other times
    const meta = answers[0]!.meta;
    answers.push({
      series: [
        { tags: { 'a"b': 'x\\y\n\u2028é', c: '' }, points: [[0, -0], [1, 1e-7], [2, -1.5e21], [3, Number.NaN], [4, Number.POSITIVE_INFINITY], [5, 0.1 + 0.2]] },
        { tags: {}, points: [[0, null], [9, 2], [2, 3]] },
        { tags: { x: 'y' }, points: [] },
      ],
      meta: { ...meta, cached: true },
    });
    for (const a of answers) expect(queryResultJson(a)).toBe(JSON.stringify(a));
  });

  it('answers an unknown metric like a metric without data', async () => {
    const res = await runQuery(deps(), { accountId: A }, { metric: 'no.such.metric', aggregation: 'count', interval: 'day', from: FROM, to: TO });
    expect(res.series).toHaveLength(1);
    expect(res.series[0]!.points.every(([, v]) => v === 0)).toBe(true);
    expect(res.meta.rows).toBe(0);
  });

  it("never returns another account's data", async () => {
    const mine = await runQuery(deps(), { accountId: B }, { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: TO });
    const total = mine.series[0]!.points.reduce((n, [, v]) => n + (v ?? 0), 0);
    expect(total).toBe(generatePoints(7, 500, FROM, TO).filter((p) => p.name === 'orders').length);
    const none = await runQuery(deps(), { accountId: 'acct_cccccccccccccccccccccccc' }, { metric: 'orders', aggregation: 'count', interval: 'day', from: FROM, to: TO }).catch((e) => e);
    expect(none).toBeInstanceOf(CollectorError);
    expect((none as CollectorError).code).toBe('account_deleted');
  });

  it('rejects bad queries with stable codes', async () => {
    const base = { metric: 'orders', aggregation: 'count', interval: 'hour', from: FROM, to: TO };
    const cases: [unknown, string][] = [
      [null, 'invalid_query'],
      [{ ...base, aggregation: 'median' }, 'invalid_query'],
      [{ ...base, interval: 'year' }, 'invalid_query'],
      [{ ...base, extra: 1 }, 'invalid_query'],
      [{ ...base, metric: 'bad name' }, 'invalid_query'],
      [{ ...base, groupBy: ['country', 'country'] }, 'invalid_query'],
      [{ ...base, groupBy: ['1x'] }, 'invalid_query'],
      [{ ...base, from: '2026-03-27' }, 'invalid_time'],
      [{ ...base, from: '2026-03-27T00:00:00' }, 'invalid_time'],
      [{ ...base, from: 1.5 }, 'invalid_time'],
      [{ ...base, to: FROM }, 'invalid_time_range'],
      [{ ...base, timezone: 'Mars/Olympus' }, 'invalid_time_zone'],
      [{ ...base, interval: 'minute', from: FROM, to: FROM + 8 * 86_400_000 }, 'range_too_large'],
    ];
    for (const [body, code] of cases) {
      const e = await runQuery(deps(), { accountId: A }, body).catch((x) => x);
      expect(e, JSON.stringify(body)).toBeInstanceOf(CollectorError);
      expect([(e as CollectorError).status, (e as CollectorError).code], JSON.stringify(body)).toEqual([400, code]);
    }
  });

  it('counts and leaves out rows that fail to open', async () => {
    const keys = keyring.accountKeys(A)!.at(-1)!;
    const ctx = await accountContext({ store, keyring }, A);
    const metric = ctx.versions.at(-1)!.pseudonyms.metric('orders');
    const bucket = Date.UTC(2025, 11, 1);
    const good = emptyAggregate();
    addPoint(good, 5, bucket);
    const row = { accountId: A, level: 1 as const, bucket, metric, series: '1', tagKeys: [], tagValues: [], keyVersion: keys.version, expiresAt: bucket + 400 * 86_400_000, writtenAt: Date.now() };
    // sealed for another bucket: moved ciphertext; then one sealed under account B's key
    const moved = sealRollup(keys.dataKey, { ...row, bucket: bucket + 3_600_000, part: 'x1' }, encodeAggregate(good));
    const foreign = sealRollup(keyring.accountKeys(B)![0]!.dataKey, { ...row, part: 'x2' }, encodeAggregate(good));
    const ok = sealRollup(keys.dataKey, { ...row, part: 'x3' }, encodeAggregate(good));
    await store.insertRollups([
      { ...row, part: 'x1', agg: moved },
      { ...row, part: 'x2', agg: foreign },
      { ...row, part: 'x3', agg: ok },
    ] as never);
    const res = await runQuery({ store, keyring }, { accountId: A }, { metric: 'orders', aggregation: 'sum', interval: 'hour', from: bucket, to: bucket + 3_600_000 });
    expect(res.meta.rows).toBe(3);
    expect(res.meta.failedRows).toBe(2);
    expect(res.series[0]!.points).toEqual([[bucket, 5]]);
  });

  it('a row whose tag pseudonyms storage rewrote fails to open: no number moves to another group', async () => {
    const C = 'acct_cccccccccccccccccccccccc';
    keyring.createAccount(C);
    const keys = keyring.accountKeys(C)!.at(-1)!;
    const ps = (await accountContext({ store, keyring }, C)).versions.at(-1)!.pseudonyms;
    const bucket = Date.UTC(2025, 11, 2, 10);
    const metric = ps.metric('revenue');
    const [de, fr] = [ps.tagValue('country', 'DE'), ps.tagValue('country', 'FR')];
    const base = { accountId: C, level: 1 as const, bucket, metric, tagKeys: [ps.tagKey('country')], keyVersion: keys.version, expiresAt: bucket + 400 * 86_400_000, writtenAt: Date.now() };
    const sealed = (row: typeof base & { series: string; tagValues: string[] }, value: number, part: string) => {
      const agg = emptyAggregate();
      addPoint(agg, value, bucket);
      return sealRollup(keys.dataKey, { ...row, part }, encodeAggregate(agg));
    };
    const deRow = { ...base, series: ps.series([['country', 'DE']]), tagValues: [de] };
    const frRow = { ...base, series: ps.series([['country', 'FR']]), tagValues: [fr] };
    await store.insertRollups([
      { ...deRow, tagValues: [fr], part: 'r1', agg: sealed(deRow, 1000, 'r1') }, // DE's numbers relabelled FR in storage
      { ...frRow, part: 'r2', agg: sealed(frRow, 7, 'r2') },
    ]);
    await store.insertDictionary(
      [[de, 'DE'], [fr, 'FR']].map(([p, text]) => ({
        accountId: C, kind: 2 as const, pseudonym: p!, keyVersion: keys.version, firstSeen: bucket,
        ciphertext: sealDict(keys.dataKey, C, 2, p!, { text: text!, extra: 'country' }),
      })),
    );
    const q = { metric: 'revenue', aggregation: 'sum', interval: 'hour', from: bucket, to: bucket + 3_600_000 };
    const grouped = await runQuery({ store, keyring }, { accountId: C }, { ...q, groupBy: ['country'] });
    expect(grouped.series).toEqual([{ tags: { country: 'FR' }, points: [[bucket, 7]] }]);
    expect(grouped.meta).toMatchObject({ rows: 2, failedRows: 1 });
    const filtered = await runQuery({ store, keyring }, { accountId: C }, { ...q, filter: { country: 'FR' } });
    expect(filtered.series[0]!.points).toEqual([[bucket, 7]]);
    expect(filtered.meta.failedRows).toBe(1);
    const all = await runQuery({ store, keyring }, { accountId: C }, q);
    expect(all.series[0]!.points).toEqual([[bucket, 7]]);
    expect(all.meta.failedRows).toBe(1);
  });

  it('counts a day pack once, only its hours inside the range, and the hour rows beside it (late data)', async () => {
    const keys = keyring.accountKeys(A)!.at(-1)!;
    const ctx = await accountContext({ store, keyring }, A);
    const day = Date.UTC(2025, 10, 3);
    const H = 3_600_000;
    const q = parseQuery({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: day, to: day + 12 * H });
    const metric = ctx.versions.at(-1)!.pseudonyms.metric('orders');
    const id = { accountId: A, metric, series: '77', tagKeys: [] as string[], tagValues: [] as string[], keyVersion: keys.version };
    const agg = (v: number, t: number) => encodeAggregate(addPoint(emptyAggregate(), v, t));
    const hourRow = { l: 1, b: day + H, v: keys.version, s: '77', k: '', t: '', p: 'h1', a: sealRollup(keys.dataKey, { ...id, level: 1, bucket: day + H, part: 'h1' }, agg(5, day + H)) };
    // hours 1 and 20 packed; the query covers hours 0–11 only
    const pack = encodeDayPack([{ hour: 1, bytes: agg(7, day + H) }, { hour: 20, bytes: agg(100, day + 20 * H) }]);
    const dayRow = { l: 2, b: day, v: keys.version, s: '77', k: '', t: '', p: 'd1', a: sealRollup(keys.dataKey, { ...id, level: 2, bucket: day, part: 'd1' }, pack) };
    const metricOf = new Map([[keys.version, metric]]);
    const sum = (rows: Parameters<typeof mergeRows>[1]) => mergedSum(mergePlan(ctx, q, metricOf), rows);
    expect(sum([hourRow])).toEqual({ value: 5, failed: 0 });
    expect(sum([dayRow])).toEqual({ value: 7, failed: 0 });
    expect(sum([hourRow, dayRow])).toEqual({ value: 12, failed: 0 }); // an hour row beside its pack is other data
    // a copy of the pack is read once (and counted as tampered); a second pack of the same
    // (day, series, key version) that does not replace the first is not what compaction leaves
    expect(sum([dayRow, dayRow])).toEqual({ value: 7, failed: 0, tampered: 1 });
    const other = { ...dayRow, p: 'd2', a: sealRollup(keys.dataKey, { ...id, level: 2, bucket: day, part: 'd2' }, pack) };
    expect(sum([dayRow, other])).toEqual({ value: 7, failed: 1 });
    // a day pack sealed as an hour row, or moved to another day, does not open
    expect(sum([hourRow, { ...dayRow, b: day + 86_400_000 }])).toEqual({ value: 5, failed: 1 });
    expect(sum([{ ...hourRow, l: 2, b: day }, hourRow])).toEqual({ value: 5, failed: 1 });

    // A repack (record format 4) seals what it replaces: the older pack and the hour row. Rows it
    // names are left out whatever the stored lists say, in any order; while its stored list names
    // them too (compaction between insert and deletes) silently, else (they came back) counted.
    const repack = encodeDayPack([{ hour: 1, bytes: agg(12, day + H) }, { hour: 20, bytes: agg(100, day + 20 * H) }]);
    const entries = ['d1', '1/h1'];
    const newer = { ...dayRow, p: 'c:d:2', a: sealRollup(keys.dataKey, { ...id, level: 2, bucket: day, part: 'c:d:2' }, repack, entries) };
    expect(newer.a[0]).toBe(4); // record format 4: the list sealed in binary
    expect(sum([newer])).toEqual({ value: 12, failed: 0 });
    expect(sum([hourRow, dayRow, { ...newer, u: entries }])).toEqual({ value: 12, failed: 0 });
    expect(sum([dayRow, hourRow, newer])).toEqual({ value: 12, failed: 0, tampered: 2 }); // replayed after their deletion
    // storage listing a row the pack does not seal (or listing on a row compaction did not write) hides nothing
    expect(sum([{ ...dayRow, u: ['1/h1'] }, hourRow])).toEqual({ value: 12, failed: 0, tampered: 1 });
    expect(sum([{ ...newer, u: [...entries, '1/h9'] }, { ...hourRow, p: 'h9', a: sealRollup(keys.dataKey, { ...id, level: 1, bucket: day + H, part: 'h9' }, agg(3, day + H)) }]))
      .toEqual({ value: 15, failed: 0, tampered: 1 });
    // a sealed list on a row that is no compaction's does not open as one (its part is bound), and
    // a row sealing a list (format 4) under a tick part is not what compaction writes
    const tickWithList = { ...hourRow, p: 'h2', a: sealRollup(keys.dataKey, { ...id, level: 1, bucket: day + H, part: 'h2' }, agg(1, day + H), ['h1']) };
    expect(sum([tickWithList, hourRow])).toEqual({ value: 5, failed: 1 });
  });

  it('counts a quarter pack once, only its quarter hours inside the range, and the quarter-hour rows beside it (late data)', async () => {
    const keys = keyring.accountKeys(A)!.at(-1)!;
    const ctx = await accountContext({ store, keyring }, A);
    const day = Date.UTC(2025, 10, 4);
    const Q = 900_000;
    // Kathmandu (UTC+5:45) hours 05:45–17:45 local: UTC 00:00–12:00 of `day`, read from quarter hours
    const q = parseQuery({ metric: 'orders', aggregation: 'sum', interval: 'hour', timezone: 'Asia/Kathmandu', from: day, to: day + 12 * 4 * Q }, { quarterSince: 0 });
    expect(q.level).toBe(3);
    const metric = ctx.versions.at(-1)!.pseudonyms.metric('orders');
    const id = { accountId: A, metric, series: '78', tagKeys: [] as string[], tagValues: [] as string[], keyVersion: keys.version };
    const agg = (v: number, t: number) => encodeAggregate(addPoint(emptyAggregate(), v, t));
    const quarterRow = { l: 3, b: day + 5 * Q, v: keys.version, s: '78', k: '', t: '', p: 'q5', a: sealRollup(keys.dataKey, { ...id, level: 3, bucket: day + 5 * Q, part: 'q5' }, agg(5, day + 5 * Q)) };
    // quarter hours 5 and 90 packed (90: 22:30 UTC, outside the range)
    const pack = encodeDayPack([{ hour: 5, bytes: agg(7, day + 5 * Q) }, { hour: 90, bytes: agg(100, day + 90 * Q) }], 96);
    const packRow = { l: 4, b: day, v: keys.version, s: '78', k: '', t: '', p: 'd1', a: sealRollup(keys.dataKey, { ...id, level: 4, bucket: day, part: 'd1' }, pack) };
    const metricOf = new Map([[keys.version, metric]]);
    const sum = (rows: Parameters<typeof mergeRows>[1]) => mergedSum(mergePlan(ctx, q, metricOf), rows);
    expect(sum([quarterRow])).toEqual({ value: 5, failed: 0 });
    expect(sum([packRow])).toEqual({ value: 7, failed: 0 });
    expect(sum([quarterRow, packRow])).toEqual({ value: 12, failed: 0 });
    expect(sum([packRow, packRow])).toEqual({ value: 7, failed: 0, tampered: 1 });
    const other = { ...packRow, p: 'd2', a: sealRollup(keys.dataKey, { ...id, level: 4, bucket: day, part: 'd2' }, pack) };
    expect(sum([packRow, other])).toEqual({ value: 7, failed: 1 });
    // an hour pack relabelled a quarter pack (or back), or a quarter pack moved to another day, does not open
    expect(sum([{ ...packRow, l: 2 }, quarterRow])).toEqual({ value: 5, failed: 1 });
    expect(sum([{ ...packRow, b: day + 86_400_000 }, quarterRow])).toEqual({ value: 5, failed: 1 });
    // a slot past 95 is a malformed pack
    expect(() => encodeDayPack([{ hour: 96, bytes: agg(1, day) }], 96)).toThrow(/slot out of range/);
    // A repack seals the older pack and the quarter-hour row (`<quarter>/<part>`): left out in any order.
    const repack = encodeDayPack([{ hour: 5, bytes: agg(12, day + 5 * Q) }, { hour: 90, bytes: agg(100, day + 90 * Q) }], 96);
    const entries = ['d1', '5/q5'];
    const newer = { ...packRow, p: 'c:d:2', a: sealRollup(keys.dataKey, { ...id, level: 4, bucket: day, part: 'c:d:2' }, repack, entries) };
    expect(sum([newer])).toEqual({ value: 12, failed: 0 });
    expect(sum([quarterRow, packRow, { ...newer, u: entries }])).toEqual({ value: 12, failed: 0 });
    expect(sum([packRow, quarterRow, newer])).toEqual({ value: 12, failed: 0, tampered: 2 }); // replayed after their deletion
  });

  it('counts a minute pack once, only its minutes inside the range, and the minute rows beside it (late data); its layout', async () => {
    // the layout (rollup/pack.ts): u8 version 1, then per slot u8 minute, varint length, the aggregate's bytes
    expect(Buffer.from(encodeDayPack([{ hour: 59, bytes: Uint8Array.of(3) }, { hour: 0, bytes: Uint8Array.of(1, 2) }], 60)).toString('hex')).toBe('01000201023b0103');
    expect(() => encodeDayPack([{ hour: 60, bytes: Uint8Array.of(1) }], 60)).toThrow(/slot out of range/);
    const keys = keyring.accountKeys(A)!.at(-1)!;
    const ctx = await accountContext({ store, keyring }, A);
    const hour = Date.UTC(2025, 10, 5, 7);
    const M = 60_000;
    // minutes 07:10–07:40 only
    const q = parseQuery({ metric: 'orders', aggregation: 'sum', interval: 'minute', from: hour + 10 * M, to: hour + 40 * M });
    expect(q.level).toBe(0);
    const metric = ctx.versions.at(-1)!.pseudonyms.metric('orders');
    const id = { accountId: A, metric, series: '79', tagKeys: [] as string[], tagValues: [] as string[], keyVersion: keys.version };
    const agg = (v: number, t: number) => encodeAggregate(addPoint(emptyAggregate(), v, t));
    const minuteRow = { l: 0, b: hour + 12 * M, v: keys.version, s: '79', k: '', t: '', p: 'm12', a: sealRollup(keys.dataKey, { ...id, level: 0, bucket: hour + 12 * M, part: 'm12' }, agg(5, hour + 12 * M)) };
    // minutes 12 and 50 packed (50: outside the range)
    const pack = encodeDayPack([{ hour: 12, bytes: agg(7, hour + 12 * M) }, { hour: 50, bytes: agg(100, hour + 50 * M) }], 60);
    const packRow = { l: 5, b: hour, v: keys.version, s: '79', k: '', t: '', p: 'h1', a: sealRollup(keys.dataKey, { ...id, level: 5, bucket: hour, part: 'h1' }, pack) };
    const metricOf = new Map([[keys.version, metric]]);
    const sum = (rows: Parameters<typeof mergeRows>[1]) => mergedSum(mergePlan(ctx, q, metricOf), rows);
    expect(sum([minuteRow])).toEqual({ value: 5, failed: 0 });
    expect(sum([packRow])).toEqual({ value: 7, failed: 0 });
    expect(sum([minuteRow, packRow])).toEqual({ value: 12, failed: 0 }); // a minute row beside its pack is other data
    expect(sum([packRow, packRow])).toEqual({ value: 7, failed: 0, tampered: 1 });
    const other = { ...packRow, p: 'h2', a: sealRollup(keys.dataKey, { ...id, level: 5, bucket: hour, part: 'h2' }, pack) };
    expect(sum([packRow, other])).toEqual({ value: 7, failed: 1 });
    // a minute pack relabelled a day pack, moved to another hour or off an hour's start, or a minute row relabelled a pack, does not open
    expect(sum([{ ...packRow, l: 2 }, minuteRow])).toEqual({ value: 5, failed: 1 });
    expect(sum([{ ...packRow, b: hour + 3_600_000 }, minuteRow])).toEqual({ value: 5, failed: 1 });
    expect(sum([{ ...packRow, b: hour + M }, minuteRow])).toEqual({ value: 5, failed: 1 });
    expect(sum([{ ...minuteRow, l: 5 }, packRow])).toEqual({ value: 7, failed: 1 });
    // A repack seals the older pack and the minute row (`<minute>/<part>`): left out in any order.
    const repack = encodeDayPack([{ hour: 12, bytes: agg(12, hour + 12 * M) }, { hour: 50, bytes: agg(100, hour + 50 * M) }], 60);
    const entries = ['h1', '12/m12'];
    const newer = { ...packRow, p: 'c:d:2', a: sealRollup(keys.dataKey, { ...id, level: 5, bucket: hour, part: 'c:d:2' }, repack, entries) };
    expect(sum([newer])).toEqual({ value: 12, failed: 0 });
    expect(sum([minuteRow, packRow, { ...newer, u: entries }])).toEqual({ value: 12, failed: 0 });
    expect(sum([packRow, minuteRow, newer])).toEqual({ value: 12, failed: 0, tampered: 2 }); // replayed after their deletion
    // an hour-level plan reads a minute pack only in an hour read from minute data
    const hourly = parseQuery({ metric: 'orders', aggregation: 'sum', interval: 'hour', from: hour, to: hour + 3_600_000 });
    const hourSum = (plan: Partial<Parameters<typeof mergeRows>[0]>) => mergedSum({ ...mergePlan(ctx, hourly, metricOf), ...plan }, [packRow]);
    expect(hourSum({ minuteHours: [hour] })).toEqual({ value: 107, failed: 0 });
    expect(hourSum({ minuteFrom: hour })).toEqual({ value: 107, failed: 0 });
    expect(hourSum({ minuteHours: [hour + 3_600_000] })).toEqual({ value: 0, failed: 1 });
  });

  it("a query worker's merge zeroes the data keys it received once closed, holds the groups until finish or drop, and answers like the inline merge", async () => {
    const ctx = await accountContext({ store, keyring }, A);
    const q = parseQuery({ metric: 'page.load', aggregation: 'p95', interval: 'hour', from: FROM, to: TO, groupBy: ['page'] });
    const { selection, metricOf } = rowSelection(ctx, q);
    const bytes = await store.selectRollups(selection);
    // what the worker receives: its own copies of the keys (postMessage clones them)
    const plan = mergePlan(ctx, q, metricOf);
    const sent = { ...plan, versions: plan.versions.map((v) => ({ ...v, dataKey: v.dataKey.slice() })) };
    const merges = new Map();
    expect(handleMergeRequest(merges, { type: 'part', id: 1, plan: sent, bytes })).toEqual({ id: 1, ok: true, ms: expect.any(Number) }); // ms: its open and merge (Server-Timing open)
    const merged = handleMergeRequest(merges, { type: 'close', id: 1 });
    expect(merged).toMatchObject({ id: 1, ok: true });
    for (const v of sent.versions) expect(v.dataKey.every((b) => b === 0)).toBe(true);
    for (const v of plan.versions) expect(v.dataKey.some((b) => b !== 0)).toBe(true); // the caller's keys are its own
    expect(merges.size).toBe(1);

    const inline = await mergeOnce(inlineMergers, plan, bytes, countRows(bytes));
    const reply = merged as { merged: { rows: number; failed: number; groups: string[][] } };
    expect(reply.merged.rows).toBe(inline.rows);
    expect(reply.merged.rows).toBeGreaterThan(0);
    expect(reply.merged.groups).toEqual(inline.groups);
    const seriesOf = inline.groups.map((_, j) => j);
    const finished = handleMergeRequest(merges, { type: 'finish', id: 1, seriesOf, series: seriesOf.length });
    expect(finished).toMatchObject({ id: 1, ok: true });
    // the values cross back as two flat buffers, moved (not cloned value by value)
    const f = (finished as { finished: FinishedValues }).finished;
    expect(f.values).toBeInstanceOf(Float64Array);
    expect(replyTransfer(finished)).toEqual([f.values.buffer, f.nulls.buffer]);
    expect(unpackValues(f)).toEqual(await inline.finish(seriesOf, seriesOf.length));
    expect(merges.size).toBe(0);

    const again = { ...plan, versions: plan.versions.map((v) => ({ ...v, dataKey: v.dataKey.slice() })) };
    handleMergeRequest(merges, { type: 'part', id: 2, plan: again, bytes });
    expect(merges.size).toBe(1);
    expect(handleMergeRequest(merges, { type: 'drop', id: 2 })).toBeUndefined();
    expect(merges.size).toBe(0);
    for (const v of again.versions) expect(v.dataKey.every((b) => b === 0)).toBe(true);
  });

  it('caches answers per account until invalidated', async () => {
    const c = new QueryCache({ ttlMs: 60_000 });
    const q = { metric: 'revenue', aggregation: 'sum', interval: 'day', from: FROM, to: TO };
    const first = await runQuery({ store, keyring, cache: c }, { accountId: A }, q);
    const second = await runQuery({ store, keyring, cache: c }, { accountId: A }, { ...q, from: FROM + 1000 }); // same whole buckets
    expect(first.meta.cached).toBe(false);
    expect(second.meta.cached).toBe(true);
    expect(second.series).toEqual(first.series);
    expect((await runQuery({ store, keyring, cache: c }, { accountId: B }, q)).meta.cached).toBe(false);
    c.invalidate([A]);
    expect((await runQuery({ store, keyring, cache: c }, { accountId: A }, q)).meta.cached).toBe(false);
    expect((await runQuery({ store, keyring, cache: c }, { accountId: B }, q)).meta.cached).toBe(true);
    c.dropAccount(B);
    expect((await runQuery({ store, keyring, cache: c }, { accountId: B }, q)).meta.cached).toBe(false);
  });

  it('opens, decodes and merges 15k partial rows (speed: npm run bench query)', async () => {
    const keys = keyring.accountKeys(A)!.at(-1)!;
    const ctx = await accountContext({ store, keyring }, A);
    const q = parseQuery({ metric: 'page.load', aggregation: 'p95', interval: 'hour', from: FROM, to: TO, groupBy: ['page'] });
    const metric = ctx.versions.at(-1)!.pseudonyms.metric('page.load');
    const pageKey = ctx.versions.at(-1)!.pseudonyms.tagKey('page');
    const rows: Parameters<typeof mergeRows>[1] = [];
    for (let i = 0; i < 15_000; i++) {
      const bucket = FROM + (i % 120) * 3_600_000;
      const series = String(1000 + (i % 20));
      const agg = emptyAggregate();
      for (let k = 0; k < 4; k++) addPoint(agg, 50 + ((i * 7 + k * 13) % 900), bucket);
      const tagKeys = [pageKey];
      const tagValues = [String(i % 20)];
      const sealed = sealRollup(keys.dataKey, { accountId: A, level: 1, bucket, metric, series, tagKeys, tagValues, keyVersion: keys.version, part: `p${i}` }, encodeAggregate(agg));
      rows.push({ b: bucket, v: keys.version, s: series, a: sealed, k: tagKeys.join(','), t: tagValues.join(','), p: `p${i}` });
    }
    const metricOf = new Map([[keys.version, metric]]);
    const { groups, failed } = mergeRows(mergePlan(ctx, q, metricOf), rows);
    expect(failed).toBe(0);
    expect(groups.size).toBe(20);
    expect(() => mergeRows(mergePlan(ctx, q, metricOf, 5), rows)).toThrow(expect.objectContaining({ status: 400, code: 'too_many_series' }));
  });

  it('hours in :30 and :45 zones read quarter-hour rows (fewer than minute rows, the same answers); a database that held rows before quarter hours existed reads minute rows for older ranges', async () => {
    // A store whose quarter-hour rows start after the data (what migration 7 records for a database
    // that already held rollup rows): the same queries from minute rows.
    const later = Date.now() + 600_000;
    const upgraded = new Proxy(store, { get: (t, k) => (k === 'rollupLevelSince' ? async () => later : Reflect.get(t, k)) });
    const fresh = new QueryCache({ ttlMs: 0 });
    for (const timezone of ['Asia/Kolkata', 'Asia/Kathmandu']) {
      for (const aggregation of ['count', 'sum', 'p95']) {
        const q: RefQuery = { metric: 'page.load', groupBy: ['page'], aggregation, interval: 'hour', timezone };
        const quarter = await runQuery({ store, keyring, cache: fresh }, { accountId: A }, { ...q, from: FROM, to: TO });
        const minute = await runQuery({ store: upgraded, keyring, cache: fresh }, { accountId: A }, { ...q, from: FROM, to: TO });
        expect(quarter.meta.level).toBe('quarter');
        expect(minute.meta.level).toBe('minute');
        expect(quarter.meta.rows).toBeLessThan(minute.meta.rows);
        expect(quarter.meta.failedRows + minute.meta.failedRows).toBe(0);
        checkAgainstReference(q, quarter, points);
        checkAgainstReference(q, minute, points);
        if (aggregation === 'count') expect(quarter.series).toEqual(minute.series); // (float sums may differ in their last digit by merge order)
        // Days: quarter-hour rows; without them, hour rows and minute rows only in the UTC hours holding local midnight
        const d: RefQuery = { ...q, interval: 'day' };
        const dq = await runQuery({ store, keyring, cache: fresh }, { accountId: A }, { ...d, from: FROM, to: TO });
        const dm = await runQuery({ store: upgraded, keyring, cache: fresh }, { accountId: A }, { ...d, from: FROM, to: TO });
        expect([dq.meta.level, dm.meta.level]).toEqual(['quarter', 'hour+minute']);
        expect(dq.meta.failedRows + dm.meta.failedRows).toBe(0);
        checkAgainstReference(d, dq, points);
        checkAgainstReference(d, dm, points);
      }
    }
    // Minute buckets stay on minute rows in every zone.
    const minutes = await runQuery(deps(), { accountId: A }, { metric: 'orders', aggregation: 'count', interval: 'minute', timezone: 'Asia/Kathmandu', from: MID, to: MID + 3_600_000 });
    expect(minutes.meta.level).toBe('minute');
  });

  it('migration 7: a new database has quarter-hour rows for everything; one that already held rollup rows, from 10 minutes after it ran', async () => {
    expect(await store.rollupLevelSince(3)).toBe(0); // migrated when the rollups table was empty
    expect(await store.rollupLevelSince(1)).toBe(Infinity); // no record: never
    // Replay migration 7 on this database, which holds rows now (and the ones after it: migrate()
    // applies the versions above the highest one recorded, so they must run twice without harm).
    await connectionOf(store).exec(`ALTER TABLE schema_migrations DELETE WHERE version >= 7 SETTINGS mutations_sync = 2`);
    await connectionOf(store).exec('TRUNCATE TABLE rollup_levels');
    const before = Date.now();
    await store.migrate(); // migration 7 runs again (those after it are recorded: they stay)
    const since = await store.rollupLevelSince(3);
    expect(since).toBeGreaterThanOrEqual(before + 600_000 - 1000); // now64 of the engine, to the millisecond
    expect(since).toBeLessThanOrEqual(Date.now() + 600_000 + 1000);
    // Running it again (an interrupted migration) keeps the first record.
    await connectionOf(store).exec(`ALTER TABLE schema_migrations DELETE WHERE version >= 7 SETTINGS mutations_sync = 2`);
    await store.migrate();
    expect(await store.rollupLevelSince(3)).toBe(since);
  });
});
