/**
 * Bad input: every kind gets a 4xx with a stable code (where the HTTP parser itself does not
 * answer first), nothing is stored, and the service keeps serving.
 */
import { connect } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LIMITS, toBase64, wrapOuter, encodeHeader, seal, fromBase64 } from '@cipherstat/protocol';
import { createAccount, envelope, points, post, startTestCollector, ADMIN_TOKEN, type TestAccount, type TestCollector } from './support/collector.js';

let c: TestCollector;
let account: TestAccount;
let host: string;
let port: number;

beforeAll(async () => {
  c = await startTestCollector({ config: { bodyTimeoutMs: 800 } });
  account = await createAccount(c);
  const u = new URL(c.url);
  host = u.hostname;
  port = Number(u.port);
});
afterAll(async () => c?.stop());
afterEach(async () => {
  const r = await fetch(`${c.url}/healthz`);
  expect(r.status).toBe(200);
});

async function expectError(res: Response, status: number, code: string) {
  const text = await res.text();
  expect(res.status, text).toBe(status);
  expect(JSON.parse(text).error.code).toBe(code);
}

/** Sends raw bytes on a socket; returns whatever the server answers before closing. */
function raw(chunks: (string | Buffer)[], opts: { delayMs?: number; end?: boolean } = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, host);
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    s.setTimeout(5000, () => s.destroy());
    (async () => {
      for (const ch of chunks) {
        if (s.destroyed) break;
        s.write(ch);
        if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
      }
      if (opts.end !== false) s.end();
    })();
  });
}
const statusOf = (response: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0);
const codeOf = (response: string) => /"code":"([a-z_]+)"/.exec(response)?.[1];

const good = () => envelope(account, points(3)).bytes;
const keys = () => ({ collectorKeyId: account.collectorKey.keyId, collectorPublicKey: fromBase64(account.collectorKey.publicKey)! });

describe('POST /v1/batches refuses', () => {
  it('1 an empty body', async () => expectError(await post(c.url, new Uint8Array(0)), 400, 'envelope_empty'));
  it('2 random bytes', async () => expectError(await post(c.url, crypto.getRandomValues(new Uint8Array(500))), 400, 'not_an_envelope'));
  it('3 a truncated envelope', async () => expectError(await post(c.url, good().slice(0, 60)), 400, 'envelope_truncated'));
  it('4 a wrong content type', async () => expectError(await post(c.url, good(), { 'content-type': 'application/json' }), 415, 'unsupported_media_type'));
  it('5 no content type', async () => {
    const res = await fetch(`${c.url}/v1/batches`, { method: 'POST', body: new Blob([good() as Uint8Array<ArrayBuffer>]) });
    await expectError(res, 415, 'unsupported_media_type');
  });
  it('6 a declared body over 1 MiB, before reading it', async () => {
    const res = await raw([`POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${LIMITS.maxEnvelopeBytes + 1}\r\n\r\n`], { end: false });
    expect(statusOf(res)).toBe(413);
    expect(codeOf(res)).toBe('envelope_too_large');
  });
  it('7 a chunked body that grows over 1 MiB', async () => {
    const big = new Uint8Array(LIMITS.maxEnvelopeBytes + 10);
    big.set(good());
    const stream = new ReadableStream({ start(ctl) { for (let i = 0; i < big.length; i += 65536) ctl.enqueue(big.subarray(i, i + 65536)); ctl.close(); } });
    const res = await fetch(`${c.url}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: stream, duplex: 'half' } as RequestInit);
    await expectError(res, 413, 'envelope_too_large');
  });
  it('8 an oversize text form', async () => expectError(await post(c.url, 'A'.repeat(Math.ceil(LIMITS.maxEnvelopeBytes / 3) * 4 + 8)), 413, 'envelope_too_large'));
  it('9 an unknown collector key id', async () => {
    const e = good();
    e.set([1, 2, 3, 4, 5, 6, 7, 8], 4);
    await expectError(await post(c.url, e), 400, 'unknown_key_id');
  });
  it('10 a tampered outer layer', async () => {
    const e = good();
    e[80]! ^= 1;
    await expectError(await post(c.url, e), 400, 'outer_auth_failed');
  });
  it('11 a low-order ephemeral key', async () => {
    const e = good();
    e.fill(0, 12, 44);
    await expectError(await post(c.url, e), 400, 'low_order_key');
  });
  it('12 an unsupported version', async () => {
    const e = good();
    e[2] = 9;
    await expectError(await post(c.url, e), 400, 'unsupported_version');
  });
  it('13 malformed base64', async () => expectError(await post(c.url, '@@@not base64@@@'), 400, 'invalid_base64'));
  it('14 base64 with whitespace inside', async () => {
    const b = toBase64(good());
    await expectError(await post(c.url, `${b.slice(0, 20)} \n ${b.slice(20)}`), 400, 'invalid_base64');
  });
  it('15 invalid UTF-8 as text/plain', async () => expectError(await post(c.url, new Uint8Array([0xff, 0xfe, 0xfd]), { 'content-type': 'text/plain' }), 400, 'invalid_base64'));
  it('16 an unknown account (counted service-wide: there is no account to count it for)', async () => {
    const counted = async () => Number(/^cipherstat_batch_rejects_total\{code="unknown_account"\} (\d+)$/m.exec(await (await fetch(`${c.url}/metrics`)).text())?.[1] ?? 0);
    const before = await counted();
    await expectError(await post(c.url, envelope({ ...account, accountId: 'acct_unknown_00000000' }, points(1)).bytes), 401, 'unknown_account');
    expect(await counted()).toBe(before + 1);
  });
  it('17 a header that is not JSON', async () => {
    const inner = seal(new Uint8Array(10), fromBase64(account.writeKey)!);
    await expectError(await post(c.url, wrapOuter(new TextEncoder().encode('{nope'), inner, keys())), 400, 'invalid_header');
  });
  it('18 a bad batch id', async () => {
    const inner = seal(new Uint8Array(10), fromBase64(account.writeKey)!);
    const h = encodeHeader({ accountId: account.accountId, batchId: 'XYZ', createdAt: Date.now(), sdk: 't', count: 1 });
    await expectError(await post(c.url, wrapOuter(h, inner, keys())), 400, 'invalid_batch_id');
  });
  it('19 a batch from 60 days ago', async () => expectError(await post(c.url, envelope(account, points(1), { createdAt: Date.now() - 60 * 86_400_000 }).bytes), 400, 'timestamp_out_of_range'));
  it('20 too many points', async () => {
    const inner = seal(new Uint8Array(10), fromBase64(account.writeKey)!);
    const h = encodeHeader({ accountId: account.accountId, batchId: 'ab'.repeat(16), createdAt: Date.now(), sdk: 't', count: 5000 });
    await expectError(await post(c.url, wrapOuter(h, inner, keys())), 400, 'too_many_points');
  });
  it('21 a slow body (trickled past the deadline)', async () => {
    const e = Buffer.from(good());
    const head = `POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${e.length}\r\n\r\n`;
    const res = await raw([head, e.subarray(0, 10), e.subarray(10, 20), e.subarray(20, 30)], { delayMs: 500, end: false });
    expect(statusOf(res)).toBe(408);
    expect(codeOf(res)).toBe('body_timeout');
  });
  it('22 headers lying about length (shorter than the body)', async () => {
    const e = Buffer.from(good());
    const res = await raw([`POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 50\r\nConnection: close\r\n\r\n`, e]);
    // The first 50 bytes are a truncated envelope (400 envelope_truncated); the rest is not
    // HTTP, and Node's parser may answer 400 on the connection first. Either way: 400.
    expect(statusOf(res)).toBe(400);
    expect([undefined, 'envelope_truncated']).toContain(codeOf(res));
  });
  it('23 headers lying about length (longer than the body)', async () => {
    const e = Buffer.from(good());
    const res = await raw([`POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: ${e.length + 100}\r\n\r\n`, e], { end: false });
    expect(statusOf(res)).toBe(408);
    expect(codeOf(res)).toBe('body_timeout');
  });
  it('24 a non-numeric Content-Length (refused by the HTTP parser)', async () => {
    const res = await raw([`POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: abc\r\n\r\n`]);
    expect(statusOf(res)).toBe(400);
  });
  it('25 a tampered inner layer: accepted by ingest (it cannot open it), then refused and counted by the process role', async () => {
    const inner = seal(new TextEncoder().encode('x'.repeat(40)), fromBase64(account.writeKey)!);
    inner[40]! ^= 1;
    const h = encodeHeader({ accountId: account.accountId, batchId: 'cd'.repeat(16), createdAt: Date.now(), sdk: 't', count: 2 });
    const res = await post(c.url, wrapOuter(h, inner, keys()));
    expect(res.status).toBe(202);
    await c.services.processor!.drain();
    expect((await c.services.store.rejects(account.accountId)).inner_auth_failed).toBe(1); // one per batch, whatever count it claims
  });
  it('26 a replayed batch is acknowledged as a duplicate and stored once', async () => {
    const e = good();
    expect((await post(c.url, e)).status).toBe(202);
    const again = await post(c.url, e);
    expect(again.status).toBe(202);
    expect((await again.json()).duplicate).toBe(true);
  });
});

describe('other routes refuse', () => {
  it('27 an unknown route', async () => expectError(await fetch(`${c.url}/v1/nothing`), 404, 'not_found'));
  it('28 GET on the batches route', async () => expectError(await fetch(`${c.url}/v1/batches`), 404, 'not_found'));
  it('29 admin JSON that is not JSON', async () => {
    const res = await fetch(`${c.url}/v1/accounts`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{"allowedOrigins":' });
    await expectError(res, 400, 'invalid_json');
  });
  it('30 admin JSON with an unknown field', async () => expectError(await c.admin('POST', '/v1/accounts', { retention: 3 }), 400, 'invalid_request'));
  it('31 a malformed Authorization header', async () => expectError(await fetch(`${c.url}/v1/accounts`, { headers: { authorization: 'Basic abc' } }), 401, 'unauthorized'));
  it('32 a wrong admin token', async () => expectError(await fetch(`${c.url}/v1/accounts`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } }), 401, 'unauthorized'));
});

it('stored nothing from any refused request', async () => {
  const rows = await c.services.store.countAccountRows(account.accountId);
  // 25 (tampered inner) and 26 (replay) were accepted; everything else was refused.
  expect(rows.batches).toBe(2);
});
