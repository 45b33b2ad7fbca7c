/**
 * GET /openapi.json of a real collector: a valid OpenAPI 3.1 document (checked by
 * @apidevtools/swagger-parser) that lists every route the app registers, with request schemas
 * generated from the zod schemas that validate those requests.
 */
import SwaggerParser from '@apidevtools/swagger-parser';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { createAccountBody } from '../src/app.js';
import { querySchema } from '../src/query/index.js';
import { ADMIN_TOKEN, startTestCollector, type TestCollector } from './support/collector.js';

let c: TestCollector;
let doc: any;
beforeAll(async () => {
  c = await startTestCollector();
  const res = await fetch(`${c.url}/openapi.json`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('application/json');
  doc = await res.json();
}, 60_000);
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
    .map((r) => ({ method: r.method.toLowerCase(), path: r.path.replace(/:(\w+)/g, '{$1}').replace(/^\/cipherstat\.[^/]+\.min\.js$/, '/cipherstat.{hash}.min.js') }))
    .filter(({ method, path }) => !doc.paths[path]?.[method])
    .map(({ method, path }) => `${method} ${path}`);
  expect(missing).toEqual([]);
  // and nothing described that the app does not serve
  const served = new Set(routes.map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}').replace(/^\/cipherstat\.[^/]+\.min\.js$/, '/cipherstat.{hash}.min.js')}`));
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
    ['/v1/accounts', ADMIN_TOKEN, { retentionDays: 0 }, 'POST'],
    ['/v1/accounts/{id}', ADMIN_TOKEN, { allowedOrigins: ['not an origin'] }, 'PATCH'],
  ] as const) {
    expect(bodyOf(path, method.toLowerCase())(body), `${path} ${JSON.stringify(body)}`).toBe(false);
    expect((await call(path.replace('{id}', accountId), token, body, method)).status).toBe(400);
  }
});
