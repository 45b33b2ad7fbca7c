/**
 * GET /openapi.json of a real collector: a valid OpenAPI 3.1 document (checked by
 * @apidevtools/swagger-parser) that lists every route the app registers, with request schemas
 * generated from the zod schemas that validate those requests.
 */
import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createApp } from '../src/app.js';
import { createAccountBody } from '../src/app.js';
import { querySchema } from '../src/query/index.js';
import { startTestCollector, type TestCollector } from './support/collector.js';

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
