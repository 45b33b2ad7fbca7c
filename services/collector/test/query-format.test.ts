/**
 * POST /v1/query's answer forms over real HTTP (README "POST /v1/query", "Answer forms"): the
 * `columns` form holds every cell of the points form — same buckets, same values and nulls —
 * for every aggregation, interval, time zone and groupBy; the default stays the points form,
 * byte for byte; the result cache answers either form; an unknown form is 400 unknown_format.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAccount, postAll, startTestCollector, type TestAccount, type TestCollector } from './support/collector.js';
import { generatePoints, queryServer } from './query-support.js';
import { QUERY_AGGREGATIONS } from '../src/query/request.js';
import { queryResultColumnsJson, queryResultJson, type QueryResult } from '../src/query/engine.js';

const NOW = Date.UTC(2026, 3, 1, 12); // the data spans Berlin's spring-forward (2026-03-29)
const FROM = Date.UTC(2026, 2, 26);
const TO = Date.UTC(2026, 3, 1);
const offset = NOW - Date.now();
const now = () => Date.now() + offset;

let c: TestCollector;
let q: Awaited<ReturnType<typeof queryServer>>;
let a: TestAccount;
const points = generatePoints(1606, 3000, FROM, TO);

beforeAll(async () => {
  c = await startTestCollector({ now });
  q = await queryServer(c);
  a = await createAccount(c);
  await postAll(c, a, points, now);
  await c.services.processor!.drain();
});

afterAll(async () => {
  await q?.close();
  await c?.stop();
});

/** POST /v1/query: status, the answer's text, and its parse. */
async function post(body: unknown): Promise<{ status: number; text: string; json: any }> {
  const res = await fetch(`${q.url}/v1/query`, { method: 'POST', headers: { authorization: `Bearer ${a.readToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, text, json: JSON.parse(text) };
}

interface Columns {
  buckets: number[];
  series: { tags: Record<string, string>; values: (number | null)[] }[];
  meta: QueryResult['meta'];
}

/** Every cell of `points` is in `columns`: the same buckets, series (tags, order) and values; the same meta but `cached`. */
function expectSameCells(points: QueryResult, columns: Columns, where: string): void {
  expect(Object.keys(columns), where).toEqual(['buckets', 'series', 'meta']);
  expect({ ...columns.meta, cached: null }, where).toEqual({ ...points.meta, cached: null });
  expect(columns.series.map((s) => s.tags), where).toEqual(points.series.map((s) => s.tags));
  for (const [j, s] of points.series.entries()) {
    expect(s.points.map(([t]) => t), where).toEqual(columns.buckets);
    expect(columns.series[j]!.values, where).toEqual(s.points.map(([, v]) => v));
  }
}

const RANGES = {
  minute: [Date.UTC(2026, 2, 29, 0, 20), Date.UTC(2026, 2, 29, 3, 10)], // around Berlin's spring-forward
  hour: [FROM, TO],
  day: [FROM, TO],
  week: [FROM, TO],
  month: [FROM, TO],
} as const;
const SHAPES = [
  { metric: 'orders' },
  { metric: 'orders', groupBy: ['country'] },
  { metric: 'page.load', groupBy: ['page', 'country'], filter: { country: ['DE', 'IN'] } },
  { metric: 'temperature', groupBy: ['site'] },
];

describe('POST /v1/query answer forms', () => {
  for (const timezone of ['UTC', 'Europe/Berlin', 'Asia/Kolkata', 'Asia/Kathmandu']) {
    for (const interval of ['minute', 'hour', 'day', 'week', 'month'] as const) {
      it(`columns hold every cell of points: ${interval} in ${timezone}, every aggregation and groupBy; either form from the cache`, async () => {
        const [from, to] = RANGES[interval];
        for (const aggregation of QUERY_AGGREGATIONS) {
          for (const [i, shape] of SHAPES.entries()) {
            const body = { ...shape, aggregation, interval, timezone, from, to };
            const where = JSON.stringify(body);
            // one form computes the answer (alternating which), the other comes from the cache
            const [first, second] = i % 2 ? (['columns', 'points'] as const) : (['points', 'columns'] as const);
            // (again if compaction's pass invalidated the account's answers in between)
            let one: Awaited<ReturnType<typeof post>>;
            let two: Awaited<ReturnType<typeof post>>;
            for (let attempt = 0; ; attempt++) {
              one = await post({ ...body, format: first });
              expect(one.status, `${where} ${one.text.slice(0, 300)}`).toBe(200);
              two = await post({ ...body, format: second });
              if (two.json.meta.cached || attempt === 4) break;
            }
            expect(two.json.meta.cached, where).toBe(true);
            const byForm = { [first]: one, [second]: two } as Record<'points' | 'columns', typeof one>;
            const pts = byForm.points.json as QueryResult;
            expectSameCells(pts, byForm.columns.json as Columns, where);
            expect(byForm.columns.text, where).toBe(queryResultColumnsJson({ ...pts, meta: { ...pts.meta, cached: byForm.columns.json.meta.cached } }));
            // the default is the points form, byte for byte (as JSON.stringify writes it)
            const plain = await post(body);
            expect(plain.text, where).toBe(JSON.stringify(plain.json));
            expect(plain.text, where).toBe(queryResultJson({ ...pts, meta: { ...pts.meta, cached: plain.json.meta.cached } }));
            if (aggregation === 'sum' && shape.metric === 'orders') expect(byForm.columns.json.series[0].values.some((v: number) => v > 0), where).toBe(true);
          }
        }
      });
    }
  }

  it('lists every bucket when no group has data (no series), as the ungrouped answer names them', async () => {
    for (const [interval, timezone] of [['day', 'Europe/Berlin'], ['hour', 'Asia/Kathmandu'], ['month', 'UTC'], ['week', 'Asia/Kolkata']] as const) {
      const body = { metric: 'orders', aggregation: 'sum', interval, timezone, from: Date.UTC(2025, 9, 20), to: Date.UTC(2025, 10, 3) };
      const grouped = await post({ ...body, groupBy: ['country'], format: 'columns' });
      expect(grouped.status).toBe(200);
      expect(grouped.json.series).toEqual([]);
      const ungrouped = (await post(body)).json as QueryResult;
      expect(ungrouped.series[0]!.points.every(([, v]) => v === 0)).toBe(true);
      expect(grouped.json.buckets, `${interval} ${timezone}`).toEqual(ungrouped.series[0]!.points.map(([t]) => t));
    }
  });

  it('an unknown form is 400 unknown_format, before the query runs', async () => {
    const body = { metric: 'orders', aggregation: 'sum', interval: 'day', from: FROM, to: TO };
    for (const format of ['csv', 'Columns', '', null, 1, ['columns'], { columns: true }]) {
      const r = await post({ ...body, format });
      expect([r.status, r.json.error?.code], JSON.stringify(format)).toEqual([400, 'unknown_format']);
      expect(r.json.error.message).toContain('"points" or "columns"');
    }
    // checked first: an unknown metric with an unknown form is the form's 400, not a 404
    expect((await post({ ...body, metric: 'never.recorded', format: 'csv' })).json.error.code).toBe('unknown_format');
  });
});

describe('the columns writer', () => {
  it('writes the values of answers the engine does not make from rows as the points writer does (escapes, non-finite, -0)', () => {
    const meta: QueryResult['meta'] = { metric: 'm', aggregation: 'sum', interval: 'hour', timezone: 'UTC', from: 0, to: 3 * 3_600_000, level: 'hour', rows: 1, failedRows: 0, tamperedRows: 0, cached: false };
    const r: QueryResult = {
      series: [
        { tags: { 'a"b': 'x\\y\n\u2028é', c: '' }, points: [[0, -0], [3_600_000, Number.NaN], [7_200_000, 0.1 + 0.2]] },
        { tags: {}, points: [[0, null], [3_600_000, Number.POSITIVE_INFINITY], [7_200_000, -1.5e21]] },
      ],
      meta,
    };
    const columns = JSON.parse(queryResultColumnsJson(r)) as Columns;
    expectSameCells(JSON.parse(queryResultJson(r)) as QueryResult, columns, 'writer');
    expect(columns.series[0]!.values).toEqual([0, null, 0.30000000000000004]);
    // a series not aligned with the buckets is an error, never a shifted answer
    expect(() => queryResultColumnsJson({ series: [r.series[0]!, { tags: {}, points: [[0, 1]] }], meta })).toThrow(/1 points for 3 buckets/);
    expect(() => queryResultColumnsJson({ series: [r.series[0]!, { tags: {}, points: [[0, 1], [1, 2], [7_200_000, 3]] }], meta })).toThrow(/bucket start/);
    // no series: the buckets of meta's range
    expect(JSON.parse(queryResultColumnsJson({ series: [], meta })).buckets).toEqual([0, 3_600_000, 7_200_000]);
  });
});
