/**
 * GET /openapi.json of a real collector: a valid OpenAPI 3.1 document (checked by
 * @apidevtools/swagger-parser) that lists every route the app registers, with request schemas
 * generated from the zod schemas that validate those requests, and response schemas (from the
 * zod schemas next to the routes) that the collector's recorded answers validate against.
 */
import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { createAccountBody } from '../src/accounts/routes.js';
import { querySchema } from '../src/query/index.js';
import { randomBytes, toBase64 } from '@cipherstat/protocol';
import { ADMIN_TOKEN, createAccount, envelope, points, post, startTestCollector, type TestCollector } from './support/collector.js';

let c: TestCollector;
let doc: any;
beforeAll(async () => {
  c = await startTestCollector();
  const res = await fetch(`${c.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('application/json');
  doc = await res.json();
});
afterAll(async () => c?.stop());

it('is valid OpenAPI 3.1 (swagger-parser)', async () => {
  expect(doc.openapi).toBe('3.1.0');
  await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeDefined();
});

it('lists every route the app registers, with its method', () => {
  const app = createApp(c.services);
  const routes = app.routes.filter((r) => r.method !== 'ALL');
  expect(routes.length).toBeGreaterThan(30);
  const missing = routes
    .map((r) => ({ method: r.method.toLowerCase(), path: r.path.replace(/:(\w+)/g, '{$1}').replace(/^\/cipherstat(-storefront)?\.[^/]+\.min\.js$/, '/cipherstat$1.{hash}.min.js') }))
    .filter(({ method, path }) => !doc.paths[path]?.[method])
    .map(({ method, path }) => `${method} ${path}`);
  expect(missing).toEqual([]);
  // and nothing described that the app does not serve
  const served = new Set(routes.map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}').replace(/^\/cipherstat(-storefront)?\.[^/]+\.min\.js$/, '/cipherstat$1.{hash}.min.js')}`));
  const described = Object.entries(doc.paths).flatMap(([path, ops]: [string, any]) => Object.keys(ops).map((m) => `${m} ${path}`));
  expect(described.filter((d) => !served.has(d))).toEqual([]);
});

it('request bodies are the zod schemas that validate them', () => {
  const { $schema: _q, ...query } = querySchema.toJSONSchema({ io: 'input' }) as any;
  expect(doc.paths['/v1/query'].post.requestBody.content['application/json'].schema).toEqual(query);
  expect(query.required).toEqual(expect.arrayContaining(['metric', 'aggregation', 'from', 'to', 'interval']));
  const { $schema: _a, ...account } = createAccountBody.toJSONSchema({ io: 'input' }) as any;
  expect(doc.paths['/v1/accounts'].post.requestBody.content['application/json'].schema).toEqual(account);
  expect(doc.paths['/v1/accounts'].post.security).toEqual([{ adminToken: [] }]);
  const range = doc.paths['/prometheus/api/v1/query_range'];
  expect(range.get.parameters.filter((p: any) => p.required).map((p: any) => p.name).sort()).toEqual(['end', 'query', 'start', 'step']);
  expect(range.post.requestBody.content['application/x-www-form-urlencoded'].schema.required.sort()).toEqual(['end', 'query', 'start', 'step']);
});

it('recorded requests validate against the document, and what it refuses the collector refuses', async () => {
  const ajv = new Ajv2020({ strict: false });
  const bodyOf = (path: string, method = 'post') => ajv.compile(doc.paths[path][method].requestBody.content['application/json'].schema);
  const call = (path: string, token: string, body: unknown, method = 'POST') =>
    fetch(`${c.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  const create = { name: 'shop', allowedOrigins: ['https://shop.example'], retentionDays: 30 };
  expect(bodyOf('/v1/accounts')(create)).toBe(true);
  const created = await call('/v1/accounts', ADMIN_TOKEN, create);
  expect(created.status).toBe(201);
  const { accountId, readToken } = (await created.json()) as { accountId: string; readToken: string };

  const patch = { retentionDays: 60 };
  expect(bodyOf('/v1/accounts/{id}', 'patch')(patch)).toBe(true);
  expect((await call(`/v1/accounts/${accountId}`, ADMIN_TOKEN, patch, 'PATCH')).status).toBe(200);

  // The README's /v1/query example (its timezone, group and filter) is valid and answered.
  const q = { metric: 'revenue', aggregation: 'sum', interval: 'day', from: '2026-03-23T00:00:00+01:00', to: '2026-03-30T00:00:00+02:00', timezone: 'Europe/Berlin', groupBy: ['country'], filter: { channel: 'web' } };
  expect(bodyOf('/v1/query')(q)).toBe(true);
  expect([200, 404]).toContain((await call('/v1/query', readToken, q)).status); // 404 unknown_metric: nothing recorded yet

  // Refused by the schema and by the collector alike.
  for (const [path, token, body, method] of [
    ['/v1/query', readToken, { ...q, extra: 1 }, 'POST'],
    ['/v1/query', readToken, { ...q, aggregation: 'p42' }, 'POST'],
    ['/v1/query', readToken, { ...q, format: 'csv' }, 'POST'],
    ['/v1/accounts', ADMIN_TOKEN, { retentionDays: 0 }, 'POST'],
    ['/v1/accounts/{id}', ADMIN_TOKEN, { allowedOrigins: ['not an origin'] }, 'PATCH'],
  ] as const) {
    expect(bodyOf(path, method.toLowerCase())(body), `${path} ${JSON.stringify(body)}`).toBe(false);
    expect((await call(path.replace('{id}', accountId), token, body, method)).status).toBe(400);
  }
});

it('every JSON route has a response schema, and recorded answers of every route validate against it', async () => {
  const ajv = new Ajv2020({ strict: false });
  const checked = new Set<string>();
  /** The answer validated against the document's schema for its path, method and status (errors: `default`). */
  const record = async (path: string, method: string, res: Response) => {
    const op = doc.paths[path][method];
    const body = await res.json();
    const response = op.responses[String(res.status)] ?? op.responses.default;
    const ref = /^#\/components\/schemas\/(\w+)$/.exec(response.content['application/json'].schema.$ref ?? '');
    const validate = ajv.compile(ref ? doc.components.schemas[ref[1]!] : response.content['application/json'].schema);
    expect(validate(body), `${method} ${path} ${res.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body).slice(0, 500)}`).toBe(true);
    if (res.status < 300) checked.add(`${method} ${path}`);
    return body;
  };
  for (const [path, ops] of Object.entries(doc.paths) as [string, any][]) {
    for (const [method, op] of Object.entries(ops) as [string, any][]) {
      const ok = Object.keys(op.responses).find((k) => k !== 'default')!;
      const content = op.responses[ok].content;
      if (content['application/json']) expect(content['application/json'].schema, `${method} ${path}`).not.toEqual({ type: 'object' });
    }
  }
  const admin = (method: string, path: string, body?: unknown) => c.admin(method, path, body);
  const a = await createAccount(c);
  const other = await createAccount(c);
  const read2 = () => ({ authorization: `Bearer ${other.readToken}` });
  const read = { authorization: `Bearer ${a.readToken}` };

  await record('/healthz', 'get', await fetch(`${c.url}/healthz`));
  await record('/readyz', 'get', await fetch(`${c.url}/readyz`));
  await record('/openapi.json', 'get', await fetch(`${c.url}/openapi.json`));
  await record('/v1/collector-key', 'get', await fetch(`${c.url}/v1/collector-key`));
  const now = Date.now();
  const pts = points(4, (i) => ({ name: i % 2 ? 'orders' : 'page.load_ms', kind: i % 2 ? 'counter' : 'histogram', value: 10 + i, time: now - 60_000, tags: { country: 'DE' } }));
  const sent = envelope(a, pts);
  await record('/v1/batches', 'post', await post(c.url, sent.bytes));
  await record('/v1/batches', 'post', await post(c.url, sent.bytes)); // duplicate: true
  await record('/v1/batches', 'post', await post(c.url, new Uint8Array([1, 2, 3]))); // 400 not_an_envelope
  expect((await post(c.url, envelope(other, pts).bytes)).status).toBe(202);
  await c.services.processor!.drain();
  await record('/v1/admin-proof', 'post', await fetch(`${c.url}/v1/admin-proof`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ challenge: toBase64(randomBytes(32)) }) }));
  await record('/v1/accounts', 'post', await admin('POST', '/v1/accounts', { name: 'described' }));
  await record('/v1/accounts', 'get', await admin('GET', '/v1/accounts'));
  await record('/v1/accounts/{id}', 'get', await admin('GET', `/v1/accounts/${a.accountId}`));
  await record('/v1/accounts/{id}', 'patch', await admin('PATCH', `/v1/accounts/${a.accountId}`, { name: 'shop' }));
  await record('/v1/accounts/{id}/verify', 'get', await admin('GET', `/v1/accounts/${a.accountId}/verify`));
  await record('/v1/metrics', 'get', await fetch(`${c.url}/v1/metrics`, { headers: read }));
  const q = { metric: 'page.load_ms', aggregation: 'p95', interval: 'hour', from: now - 7_200_000, to: now, groupBy: ['country'] };
  await record('/v1/query', 'post', await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { ...read, 'content-type': 'application/json' }, body: JSON.stringify(q) }));
  await record('/v1/query', 'post', await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { ...read, 'content-type': 'application/json' }, body: JSON.stringify({ ...q, metric: 'nope' }) })); // 404
  const columns = await record('/v1/query', 'post', await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { ...read, 'content-type': 'application/json' }, body: JSON.stringify({ ...q, format: 'columns' }) }));
  expect(Object.keys(columns)).toEqual(['buckets', 'series', 'meta']);
  expect((await record('/v1/query', 'post', await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { ...read, 'content-type': 'application/json' }, body: JSON.stringify({ ...q, format: 'csv' }) }))).error.code).toBe('unknown_format');

  const prom = async (route: string, params: Record<string, string>, method: 'get' | 'post') => {
    const form = new URLSearchParams(params);
    const path = `/prometheus/api/v1/${route}`;
    const url = `${c.url}${path.replace('{name}', '__name__')}${method === 'get' ? `?${form}` : ''}`;
    const res = await fetch(url, method === 'get' ? { headers: read } : { method: 'POST', headers: { ...read, 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() });
    return record(path, method, res);
  };
  const s = Math.floor(now / 3_600_000) * 3600 - 3600;
  for (const method of ['get', 'post'] as const) {
    expect((await prom('query_range', { query: 'sum by (country) (sum_over_time(orders[1h]))', start: String(s - 3600), end: String(s + 3600), step: '1h' }, method)).data.resultType).toBe('matrix');
    expect((await prom('query', { query: 'max_over_time(orders[1h])', time: String(s + 3600) }, method)).data.resultType).toBe('vector');
    expect((await prom('query', { query: '1+1' }, method)).data.resultType).toBe('scalar');
    expect((await prom('query', { query: 'topk(1, orders)' }, method)).errorType).toBe('bad_data'); // default: the Prometheus envelope
    await prom('labels', {}, method);
    await prom('label/{name}/values', {}, method);
    await prom('series', { 'match[]': 'orders' }, method);
    await prom('metadata', {}, method);
    await prom('status/buildinfo', {}, method);
  }

  await record('/v1/accounts/{id}/read-token', 'post', await admin('POST', `/v1/accounts/${a.accountId}/read-token`));
  await record('/v1/accounts/{id}', 'delete', await admin('DELETE', `/v1/accounts/${a.accountId}`));
  await record('/v1/accounts/{id}/restore', 'post', await admin('POST', `/v1/accounts/${a.accountId}/restore`));
  await record('/v1/accounts/{id}/wipe', 'post', await admin('POST', `/v1/accounts/${a.accountId}/wipe`));
  await record('/v1/accounts/{id}', 'delete', await admin('DELETE', `/v1/accounts/${a.accountId}?now=true`));
  await record('/v1/accounts/{id}', 'get', await admin('GET', `/v1/accounts/${a.accountId}`)); // shredded: purge progress

  // every JSON route of the document answered at least once with a success
  const json = Object.entries(doc.paths).flatMap(([path, ops]: [string, any]) =>
    Object.entries(ops)
      .filter(([, op]: [string, any]) => Object.entries(op.responses).some(([k, r]: [string, any]) => k !== 'default' && r.content['application/json']))
      .map(([m]) => `${m} ${path}`),
  );
  expect(json.filter((r) => !checked.has(r))).toEqual([]);
  // the schemas name every property: an answer with one more, or a wrong value, does not validate
  const schemaOf = (path: string, method: string) => ajv.compile(doc.paths[path][method].responses['200'].content['application/json'].schema);
  const answer = await (await fetch(`${c.url}/v1/query`, { method: 'POST', headers: { ...read2(), 'content-type': 'application/json' }, body: JSON.stringify(q) })).json();
  expect(schemaOf('/v1/query', 'post')(answer)).toBe(true);
  expect(schemaOf('/v1/query', 'post')({ ...answer, extra: 1 })).toBe(false);
  // either form, never a mix of the two
  expect(schemaOf('/v1/query', 'post')({ ...answer, buckets: [] })).toBe(false);
  expect(schemaOf('/v1/query', 'post')({ buckets: [], series: answer.series, meta: answer.meta })).toBe(answer.series.length === 0);
  expect(schemaOf('/healthz', 'get')({ status: 'fine' })).toBe(false);
});
