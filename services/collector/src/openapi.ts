/**
 * OpenAPI 3.1 description of the collector's HTTP routes, served at GET /openapi.json. Request
 * bodies and parameters are the JSON Schemas of the same zod schemas that validate the
 * requests (z.toJSONSchema, draft 2020-12 as OpenAPI 3.1 uses), so the description cannot
 * drift from what is accepted. JSON responses are the zod schemas declared next to their
 * routes (output form: no property beyond those listed), and recorded answers of a real
 * collector validate against them (a test). Every route the app registers is listed here (a
 * test checks it).
 */
import { z } from 'zod';
import { APP_RESPONSES, adminProofBody, createAccountBody } from './accounts/routes.js';
import { LIFECYCLE_RESPONSES, settingsBody } from './lifecycle/routes.js';
import { querySchema } from './query/request.js';
import { QUERY_RESPONSES } from './query/routes.js';
import { PROMETHEUS_PARAMS, PROMETHEUS_RESPONSES } from './query/prometheus/routes.js';

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
  /** the JSON success response, from the zod schema next to the route */
  response?: z.ZodType;
  /** response media type when not JSON */
  produces?: string;
}

const schema = (s: z.ZodType, io: 'input' | 'output' = 'input'): Record<string, unknown> => {
  const { $schema: _, ...rest } = z.toJSONSchema(s, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
};
const openApiResponse = z.looseObject({ openapi: z.literal('3.1.0'), info: z.looseObject({ title: z.string(), version: z.string() }), paths: z.record(z.string(), z.record(z.string(), z.unknown())), components: z.looseObject({}) });

/** A function, not a constant: app.ts imports this module and this one app.ts's schemas (read at request time). */
const routes = (): Route[] => [
  { method: 'get', path: '/healthz', summary: 'liveness', auth: 'none', ok: [200, '{ status: "ok" }'], response: APP_RESPONSES.health },
  { method: 'get', path: '/readyz', summary: 'readiness: storage answers and the schema is migrated (503 otherwise)', auth: 'none', ok: [200, 'ready'], response: APP_RESPONSES.ready },
  { method: 'get', path: '/metrics', summary: 'Prometheus text exposition of service health (no tenant labels)', auth: 'none', ok: [200, 'metrics'], produces: 'text/plain' },
  { method: 'get', path: '/openapi.json', summary: 'this description', auth: 'none', ok: [200, 'OpenAPI 3.1'], response: openApiResponse },
  { method: 'get', path: '/v1/collector-key', summary: 'the current transport key', auth: 'none', ok: [200, '{ keyId, publicKey }'], response: APP_RESPONSES.collectorKey },
  { method: 'get', path: '/cipherstat.min.js', summary: "the Library's script build (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat-storefront.min.js', summary: "the Library's storefront script build: the core plus autocapture, Web Vitals and commerce helpers (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat-fallback.min.js', summary: "the script build's fallback chunk (tweetnacl), fetched only where WebCrypto lacks X25519 or is missing (5 min cache)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat.{hash}.min.js', summary: "the Library's script build under its content-named path (immutable, for SRI)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  { method: 'get', path: '/cipherstat-storefront.{hash}.min.js', summary: "the storefront script build under its content-named path (immutable, for SRI; `accounts create` prints its tag)", auth: 'none', ok: [200, 'JavaScript'], produces: 'text/javascript' },
  {
    method: 'post', path: '/v1/batches', summary: 'an encrypted batch envelope (binary, or its base64 as text/plain for sendBeacon); 202 once durable', auth: 'none',
    body: { 'application/octet-stream': { type: 'string', contentMediaType: 'application/octet-stream' }, 'text/plain': { type: 'string', contentEncoding: 'base64' } },
    ok: [202, '{ batchId, duplicate }'],
    response: APP_RESPONSES.batch,
  },
  { method: 'post', path: '/v1/admin-proof', summary: "proof that the server holds the admin token's hash", auth: 'none', json: adminProofBody, ok: [200, '{ proof }'], response: APP_RESPONSES.adminProof },
  { method: 'post', path: '/v1/accounts', summary: 'create an account', auth: 'admin', json: createAccountBody, ok: [201, '{ accountId, writeKey, readToken, collectorKey, script }'], response: APP_RESPONSES.created },
  { method: 'get', path: '/v1/accounts', summary: 'all accounts', auth: 'admin', ok: [200, '{ accounts }'], response: APP_RESPONSES.accounts },
  { method: 'get', path: '/v1/accounts/{id}', summary: 'one account: state, settings, reject counts, rows held', auth: 'admin', ok: [200, 'the account'], response: APP_RESPONSES.account },
  { method: 'patch', path: '/v1/accounts/{id}', summary: "change an account's settings", auth: 'admin', json: settingsBody, ok: [200, 'the account'], response: LIFECYCLE_RESPONSES.restore },
  { method: 'delete', path: '/v1/accounts/{id}', summary: 'deactivate (grace period) or, with ?now, shred an account', auth: 'admin', ok: [200, 'lifecycle state'], response: LIFECYCLE_RESPONSES.delete },
  { method: 'post', path: '/v1/accounts/{id}/restore', summary: 'restore a deactivated account', auth: 'admin', ok: [200, 'the account'], response: LIFECYCLE_RESPONSES.restore },
  { method: 'post', path: '/v1/accounts/{id}/wipe', summary: "destroy an account's data, keep the account", auth: 'admin', ok: [200, 'the wipe report'], response: LIFECYCLE_RESPONSES.wipe },
  { method: 'post', path: '/v1/accounts/{id}/read-token', summary: 'rotate the read token', auth: 'admin', ok: [200, '{ accountId, readToken }'], response: LIFECYCLE_RESPONSES.readToken },
  { method: 'get', path: '/v1/accounts/{id}/verify', summary: "verify an account's stored data", auth: 'admin', ok: [200, 'verification report'], response: LIFECYCLE_RESPONSES.verify },
  { method: 'get', path: '/v1/metrics', summary: "the account's metric names, tag keys, volume, rejects and processed batches by envelope version", auth: 'read', ok: [200, 'the listing'], response: QUERY_RESPONSES.metrics },
  { method: 'post', path: '/v1/query', summary: 'aggregated series (`format`: the points form, or columns: every bucket start once and each series its values)', auth: 'read', json: querySchema, ok: [200, '{ series, meta }, or with "format": "columns" { buckets, series, meta }'], response: QUERY_RESPONSES.query },
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
      response: PROMETHEUS_RESPONSES[path as keyof typeof PROMETHEUS_RESPONSES],
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
    if (!r.produces && !r.response) throw new Error(`openapi: ${r.method} ${r.path} has no response schema`);
    const prom = r.path.startsWith('/prometheus/');
    const op: Record<string, unknown> = {
      summary: r.summary,
      operationId: `${r.method}${r.path.replace(/[^A-Za-z0-9]+(.)?/g, (_, ch: string | undefined) => (ch ?? '').toUpperCase())}`,
      ...(parameters.length ? { parameters } : {}),
      ...(content ? { requestBody: { required: r.method !== 'get', content } } : {}),
      ...(r.auth === 'none' ? { security: [] } : { security: r.auth === 'admin' ? [{ adminToken: [] }] : prom ? [{ readToken: [] }, { readTokenBasic: [] }] : [{ readToken: [] }] }),
      responses: {
        [String(r.ok[0])]: { description: r.ok[1], content: r.produces ? { [r.produces]: { schema: { type: 'string' } } } : { 'application/json': { schema: schema(r.response!, 'output') } } },
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
