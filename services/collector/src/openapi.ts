/**
 * OpenAPI 3.1 description of the collector's HTTP routes, served at GET /openapi.json. Request
 * bodies and parameters are the JSON Schemas of the same zod schemas that validate the
 * requests (z.toJSONSchema, draft 2020-12 as OpenAPI 3.1 uses), so the description cannot
 * drift from what is accepted. Every route the app registers is listed here (a test checks it).
 */
import { z } from 'zod';
import { adminProofBody, createAccountBody } from './app.js';
import { settingsBody } from './lifecycle/routes.js';
import { querySchema } from './query/request.js';
import { PROMETHEUS_PARAMS } from './query/prometheus/routes.js';

type Auth = 'admin' | 'read' | 'none';
interface Route {
  method: 'get' | 'post' | 'patch' | 'delete';
  path: string;
  summary: string;
  auth: Auth;
  /** JSON request body */
  json?: z.ZodType;
  /** other request body media types (schema as JSON Schema) */
  body?: Record<string, object>;
  /** query parameters (an object schema) */
  query?: z.ZodObject;
  /** success status → description */
  ok: [number, string];
  /** response media type when not JSON */
  produces?: string;
}

const schema = (s: z.ZodType): Record<string, unknown> => {
  const { $schema: _, ...rest } = z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};

/** A function, not a constant: app.ts imports this module and this one app.ts's schemas (read at request time). */
const routes = (): Route[] => [
  { method: 'get', path: '/healthz', summary: 'liveness', auth: 'none', ok: [200, '{ status: "ok" }'] },
  { method: 'get', path: '/readyz', summary: 'readiness: storage answers and the schema is migrated (503 otherwise)', auth: 'none', ok: [200, 'ready'] },
  { method: 'get', path: '/metrics', summary: 'Prometheus text exposition of service health (no tenant labels)', auth: 'none', ok: [200, 'metrics'], produces: 'text/plain' },
  { method: 'get', path: '/openapi.json', summary: 'this description', auth: 'none', ok: [200, 'OpenAPI 3.1'] },
  { method: 'get', path: '/v1/collector-key', summary: 'the current transport key', auth: 'none', ok: [200, '{ keyId, publicKey }'] },
  { method: 'get', path: '/cipherstat.min.js', summary: "the Library's script build (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat-storefront.min.js', summary: "the Library's storefront script build: the core plus autocapture, Web Vitals and commerce helpers (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat-fallback.min.js', summary: "the script build's fallback chunk (tweetnacl), fetched only where WebCrypto lacks X25519 or is missing (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat.{hash}.min.js', summary: "the Library's script build under its content-named path (immutable, for SRI)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  {
    method: 'post', path: '/v1/batches', summary: 'an encrypted batch envelope (binary, or its base64 as text/plain for sendBeacon); 202 once durable', auth: 'none',
    body: { 'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream' }, 'text/plain': { type: 'string', contentEncoding: 'base64' } },
    ok: [202, '{ batchId, duplicate }'],
  },
  { method: 'post', path: '/v1/admin-proof', summary: "proof that the server holds the admin token's hash", auth: 'none', json: adminProofBody, ok: [200, '{ proof }'] },
  { method: 'post', path: '/v1/accounts', summary: 'create an account', auth: 'admin', json: createAccountBody, ok: [201, '{ accountId, writeKey, readToken, collectorKey, script }'] },
  { method: 'get', path: '/v1/accounts', summary: 'all accounts', auth: 'admin', ok: [200, '{ accounts }'] },
  { method: 'get', path: '/v1/accounts/{id}', summary: 'one account: state, settings, reject counts, rows held', auth: 'admin', ok: [200, 'the account'] },
  { method: 'patch', path: '/v1/accounts/{id}', summary: "change an account's settings", auth: 'admin', json: settingsBody, ok: [200, 'the account'] },
  { method: 'delete', path: '/v1/accounts/{id}', summary: 'deactivate (grace period) or, with ?now, shred an account', auth: 'admin', ok: [200, 'lifecycle state'] },
  { method: 'post', path: '/v1/accounts/{id}/restore', summary: 'restore a deactivated account', auth: 'admin', ok: [200, 'lifecycle state'] },
  { method: 'post', path: '/v1/accounts/{id}/wipe', summary: "destroy an account's data, keep the account", auth: 'admin', ok: [200, 'lifecycle state'] },
  { method: 'post', path: '/v1/accounts/{id}/read-token', summary: 'rotate the read token', auth: 'admin', ok: [200, '{ readToken }'] },
  { method: 'get', path: '/v1/accounts/{id}/verify', summary: "verify an account's stored data", auth: 'admin', ok: [200, 'verification report'] },
  { method: 'get', path: '/v1/metrics', summary: "the account's metric names, tag keys, volume, rejects and processed batches by envelope version", auth: 'read', ok: [200, 'the listing'] },
  { method: 'post', path: '/v1/query', summary: 'aggregated series', auth: 'read', json: querySchema, ok: [200, '{ series, meta }'] },
  { method: 'get', path: '/', summary: 'the dashboard', auth: 'none', ok: [200, 'HTML'], produces: 'text/html' },
  { method: 'get', path: '/index.html', summary: 'the dashboard', auth: 'none', ok: [200, 'HTML'], produces: 'text/html' },
  { method: 'get', path: '/assets/{name}', summary: "the dashboard's static files", auth: 'none', ok: [200, 'a file'], produces: 'application/octet-stream' },
  ...Object.entries(PROMETHEUS_PARAMS).flatMap(([path, params]): Route[] =>
    (['get', 'post'] as const).map((method) => ({
      method,
      path: `/prometheus/api/v1/${path}`,
      summary: `Prometheus API: ${path} (README, section Grafana)`,
      auth: 'read',
      ...(method === 'get' ? { query: params } : { body: { 'application/x-www-form-urlencoded': schema(params) } }),
      ok: [200, '{ status: "success", data }'],
    })),
  ),
];

const errorSchema = {
  type: 'object',
  properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } }, required: ['code', 'message'] } },
  required: ['error'],
};
const promErrorSchema = {
  type: 'object',
  properties: { status: { const: 'error' }, errorType: { type: 'string' }, error: { type: 'string' } },
  required: ['status', 'errorType', 'error'],
};

/** The OpenAPI 3.1 document. */
export function openApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes()) {
    const parameters: object[] = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    if (r.query) {
      const js = schema(r.query) as { properties?: Record<string, object>; required?: string[] };
      for (const [name, s] of Object.entries(js.properties ?? {})) parameters.push({ name, in: 'query', required: js.required?.includes(name) ?? false, schema: s });
    }
    const content = r.json ? { 'application/json': { schema: schema(r.json) } } : r.body ? Object.fromEntries(Object.entries(r.body).map(([t, s]) => [t, { schema: s }])) : undefined;
    const prom = r.path.startsWith('/prometheus/');
    const op: Record<string, unknown> = {
      summary: r.summary,
      operationId: `${r.method}${r.path.replace(/[^A-Za-z0-9]+(.)?/g, (_, ch: string | undefined) => (ch ?? '').toUpperCase())}`,
      ...(parameters.length ? { parameters } : {}),
      ...(content ? { requestBody: { required: r.method !== 'get', content } } : {}),
      ...(r.auth === 'none' ? { security: [] } : { security: r.auth === 'admin' ? [{ adminToken: [] }] : prom ? [{ readToken: [] }, { readTokenBasic: [] }] : [{ readToken: [] }] }),
      responses: {
        [String(r.ok[0])]: { description: r.ok[1], ...(r.produces ? { content: { [r.produces]: { schema: { type: 'string' } } } } : { content: { 'application/json': { schema: { type: 'object' } } } }) },
        default: { description: prom ? 'a Prometheus error envelope' : 'an error with a stable code', content: { 'application/json': { schema: { $ref: prom ? '#/components/schemas/PrometheusError' : '#/components/schemas/Error' } } } },
      },
    };
    (paths[r.path] ??= {})[r.method] = op;
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Cipherstat collector', version, description: 'End-to-end encrypted metrics: ingest, accounts, query, lifecycle and a Prometheus-compatible query API. See README.md.' },
    paths,
    components: {
      schemas: { Error: errorSchema, PrometheusError: promErrorSchema },
      securitySchemes: {
        adminToken: { type: 'http', scheme: 'bearer', description: 'the admin token (csa_…)' },
        readToken: { type: 'http', scheme: 'bearer', description: "an account's read token (csr_…)" },
        readTokenBasic: { type: 'http', scheme: 'basic', description: 'the read token as password (any user), for Prometheus clients' },
      },
    },
  };
}
